"""Reading back what this project wrote: a JSON file or a run's file, checked against the sha256
recorded when it was written, or one line naming it and what to do. Keras-free."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from competition import storage
from competition.errors import UserError


class DamagedFile(UserError):
    """A file of a run that is missing or does not match what was recorded when it was written."""

    def __init__(self, path: Path, what: str, repair: str):
        super().__init__(f"{path} {what}: {repair}")
        self.path = path


def read_json(path: Path, repair: str = "") -> dict:
    """A JSON file written by this project, or one line naming it and what to do."""
    path = Path(path)
    repair = repair or "delete it and run the command that wrote it again"
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DamagedFile(path, "is missing", repair) from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DamagedFile(path, f"is damaged ({type(exc).__name__})", repair) from None
    if not isinstance(value, dict):
        raise DamagedFile(path, "is damaged (not a JSON object)", repair)
    return value


def verify(path: Path, expected_sha256: str | None, repair: str) -> None:
    """Checks a file against the sha256 recorded when it was written; without a record (runs from
    before checksums), checks that it opens as what its name says."""
    path = Path(path)
    if not path.is_file():
        raise DamagedFile(path, "is missing", repair)
    if expected_sha256 is not None:
        if storage.sha256_file(path) != expected_sha256:
            raise DamagedFile(path, "is damaged (its checksum does not match)", repair)
        return
    try:
        if path.suffix == ".npy":
            np.load(path, mmap_mode="r")
        elif path.suffix in (".npz", ".keras"):
            with zipfile.ZipFile(path) as archive:
                if archive.testzip() is not None:
                    raise ValueError("bad member")
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DamagedFile(path, f"is damaged ({type(exc).__name__})", repair) from None


def checksums(folder: Path, names) -> dict[str, str]:
    """The sha256 of each named file in `folder`, to record beside them."""
    return {name: storage.sha256_file(Path(folder) / name) for name in names}
