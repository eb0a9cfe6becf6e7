"""One process at a time on a run folder, the data folder or the ledger.

`filelock` holds an OS lock (flock on POSIX, LockFileEx on Windows) on a small file beside what it
guards, so a killed process never leaves a stale lock behind: the OS drops it with the process.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import filelock

from competition.errors import UserError


@contextlib.contextmanager
def hold(
    path: Path, what: str, wait: bool = False, log: Callable[[str], None] | None = None
) -> Iterator[None]:
    """Holds the lock file `path` for the block.

    `wait`: for short work (a fetch, a ledger update) wait for the other process; otherwise (a
    training run, hours) refuse at once with one line that says what is going on.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(path)
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        owner = _owner(path)
        if not wait:
            raise UserError(
                f"another kaggle-mnist process{owner} is working on {what} right now: wait for it to "
                "finish (or stop it), then run the command again"
            ) from None
        if log is not None:
            log(f"Waiting for another kaggle-mnist process{owner} working on {what} ...")
        lock.acquire()
    try:
        with contextlib.suppress(OSError):
            _owner_file(path).write_text(str(os.getpid()))
        yield
    finally:
        with contextlib.suppress(OSError):
            _owner_file(path).unlink()
        lock.release()


def _owner_file(path: Path) -> Path:
    return path.with_name(path.name + ".pid")


def _owner(path: Path) -> str:
    try:
        return f" (pid {int(_owner_file(path).read_text())})"
    except (OSError, ValueError):
        return ""
