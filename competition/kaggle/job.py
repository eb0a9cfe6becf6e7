"""What runs INSIDE a Kaggle kernel that `kaggle-mnist train --on kaggle` pushed (kernels.py, on the
user's machine, builds the script that calls `run_in_kernel` and brings its output home).

Runs on Kaggle's image, with its versions (the oldest supported: TensorFlow 2.20, Keras 3.13); may
import Keras, through `train`. This module's text is part of every pushed script (the package is
embedded in it), so an edit here changes every kernel's script. Also holds what both sides share: the
output's file names and the receipt that says what the archive holds.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from competition import data, environ, paths, storage
from competition.errors import SessionDeadline, UserError
from competition.runs.folder import Run, member_name
from competition.training.settings import TrainSettings

ARCHIVE = "kaggle-mnist-run.zip"
RECEIPT = "kaggle-mnist-run.json"
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


def run_in_kernel(
    settings_values: dict, members: list[str] | None, session_ends: float | None = None
) -> Path:
    """Inside the kernel: fetch from the mounted input, continue a stopped run found there, train until
    done or until the session nearly ends, and pack the run (and a receipt saying which) for download."""
    from competition import backend

    settings = TrainSettings.from_dict(settings_values)
    data.fetch(log=_print)
    continue_from_input()
    backend.select(settings.backend)
    from competition.training import train

    if session_ends is not None:
        margin = min(STOP_MARGIN_SECONDS, (session_ends - time.time()) / 10)
        # An environment variable, so the worker processes (one per GPU) see it too.
        os.environ[environ.DEADLINE] = str(session_ends - margin)

    try:
        # Not quiet: the kernel's log is no terminal, so train prints plain progress lines (share done,
        # time left) that `--on kaggle` reads from the live log into its status line.
        run_dir, finished = train.train(settings, quiet=False, only=members), True
    except SessionDeadline as stop:
        run_dir, finished = stop.run_dir, False
    run = Run(run_dir)
    done = [member_name(*m) for m in run.members if run.member_done(*m)]
    working = paths.workspace()
    archive = working / ARCHIVE
    with storage.atomic_path(archive) as tmp:
        shutil.make_archive(str(tmp.with_suffix("")), "zip", run_dir.parent, run_dir.name)
    receipt = Receipt(run_dir.name, storage.sha256_file(archive), members, finished, done)
    receipt.save(working / RECEIPT)
    # Only the archive and its receipt are output worth downloading.
    shutil.rmtree(paths.data_dir().parent, ignore_errors=True)
    shutil.rmtree(run_dir.parent, ignore_errors=True)
    how = "packed" if finished else "stopped before the session's end and packed to continue"
    _print(f"kaggle-mnist: run {run_dir.name} {how} into {archive} (sha256 {receipt.sha256})")
    return archive


def continue_from_input() -> None:
    """A run an earlier kernel stopped, mounted as this one's input: put back in ensembles/, where
    `train` finds it and continues it (finished members kept, the half-trained one from its backup)."""
    for receipt_path in sorted((paths.kaggle_root() / "input").rglob(RECEIPT)):
        try:
            receipt = Receipt.load(receipt_path)
        except ValueError:
            raise UserError(f"{receipt_path} is damaged: the earlier kernel's output cannot be continued") from None
        archive = receipt_path.with_name(ARCHIVE)
        if receipt.finished or not archive.is_file():
            continue
        if storage.sha256_file(archive) != receipt.sha256:
            raise UserError(f"{archive} does not match its receipt: the earlier kernel's output is damaged")
        target = paths.ensembles_dir()
        if not (target / receipt.run_id).exists():
            target.mkdir(parents=True, exist_ok=True)
            extract(archive, receipt.run_id, target, str(archive))
        _print(f"kaggle-mnist: continuing run {receipt.run_id} ({len(receipt.done)} members done before)")


def extract(archive: Path, run_id: str, target: Path, what: str) -> None:
    """The run folder `run_id` from an output archive into `target`; an archive holding anything else
    (a path outside that folder, a `..`) is refused whole, before anything is written."""
    with zipfile.ZipFile(archive) as zf:
        names = zf.namelist()
        if any(not n.startswith(f"{run_id}/") or ".." in Path(n).parts for n in names):
            raise UserError(f"{what} holds files outside its run folder: refusing it")
        zf.extractall(target)


def _print(message: str) -> None:
    print(message, flush=True)
