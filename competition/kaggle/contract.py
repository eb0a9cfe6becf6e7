"""The contract between the two sides of `train --on kaggle`: what the kernel leaves in its output
(job.py writes it, inside the kernel) and what the user's machine checks before it trusts it (home.py).
Keras-free, and part of every pushed script like the rest of the package."""

from __future__ import annotations

import dataclasses
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

from competition import storage
from competition.errors import UserError

ARCHIVE = "kaggle-mnist-run.zip"
RECEIPT = "kaggle-mnist-run.json"
# Kaggle ends a session after 12 hours (GPU sessions may be given less; KAGGLE_MNIST_SESSION_SECONDS sets
# a shorter limit: environ.session_seconds()). A kernel stops training this long before its end, keeps
# what it finished and the half-trained member's backup as output, and a new kernel continues from there.
STOP_MARGIN_SECONDS = 1200.0  # the epoch in flight, the predictions, packing the output


@dataclass(frozen=True)
class Receipt:
    """Beside the archive in a kernel's output: which run it holds and its checksum, written after the
    archive is complete, so an archive with a matching receipt is whole."""

    run_id: str
    sha256: str  # of the archive
    members: list[str] | None  # the share of the run this kernel trained (None: all of it)
    finished: bool  # False: stopped before the session's end; a new kernel continues from this output
    done: list[str]  # the members finished in the archive

    def save(self, path: Path) -> None:
        storage.write_json(path, dataclasses.asdict(self))

    @classmethod
    def load(cls, path: Path) -> Receipt:
        """Raises FileNotFoundError when there is none, ValueError when it is not a receipt."""
        try:
            values = json.loads(Path(path).read_text(encoding="utf-8"))
        except UnicodeDecodeError as exc:
            raise ValueError(str(exc)) from None
        if not isinstance(values, dict):
            raise ValueError("not a JSON object")
        if not isinstance(values.get("run_id"), str) or not isinstance(values.get("sha256"), str):
            raise ValueError("no run_id or sha256")
        members, done = values.get("members"), values.get("done", [])
        if not (members is None or isinstance(members, list)) or not isinstance(done, list):
            raise ValueError("members and done must be lists")
        return cls(values["run_id"], values["sha256"], members, bool(values.get("finished", True)), done)


def extract(archive: Path, run_id: str, target: Path, what: str) -> None:
    """The run folder `run_id` from an output archive into `target`; an archive holding anything else
    (a path outside that folder, a `..`) is refused whole, before anything is written."""
    with zipfile.ZipFile(archive) as zf:
        names = zf.namelist()
        if any(not n.startswith(f"{run_id}/") or ".." in Path(n).parts for n in names):
            raise UserError(f"{what} holds files outside its run folder: refusing it")
        zf.extractall(target)
