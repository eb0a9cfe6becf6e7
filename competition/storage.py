"""Small file helpers shared by every stage: a file that exists is a complete file.

Everything is written under a temporary name in the same folder and renamed into place, because a
rename is atomic on POSIX: a Ctrl-C, `kill -9` or dead notebook leaves either the old file, the new
file, or a stray `*.partial*` that nobody reads.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np


def partial_path(path: Path) -> Path:
    # Keep the real suffix last: some writers (Keras' `.keras`, NumPy's `.npy`) insist on it.
    return path.with_name(f"{path.stem}.partial-{os.getpid()}{path.suffix}")


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yields a temporary path to write to; renames it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_atomic(path: Path, writer: Callable[[Path], Any]) -> Path:
    with atomic_path(path) as tmp:
        writer(tmp)
    return Path(path)


def write_text(path: Path, text: str) -> Path:
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(path: Path, payload: Any) -> Path:
    return write_text(path, json.dumps(payload, indent=2, sort_keys=True, default=_json_default) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def npy_writer(array: np.ndarray) -> Callable[[Path], None]:
    """Writes `array` to a given path in .npy format, the same bytes for the same array (so a file can
    be rebuilt and checked against a recorded sha256)."""

    def writer(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.save(handle, np.ascontiguousarray(array))

    return writer


def save_npy(path: Path, array: np.ndarray) -> Path:
    return write_atomic(path, npy_writer(array))


def ensure_free_space(folder: Path, needed_bytes: int) -> None:
    """Raises the OS's own "no space left" error before a write that would not fit. Some writers do not
    fail cleanly on a full disk (h5py, under Keras' weight saving, can crash the process), so the big
    writes check first; the CLI turns the error into one line."""
    free = shutil.disk_usage(folder).free
    if free < needed_bytes:
        raise OSError(
            errno.ENOSPC,
            f"No space left on device ({free >> 20} MB free, {needed_bytes >> 20} MB needed)",
            str(folder),
        )


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
