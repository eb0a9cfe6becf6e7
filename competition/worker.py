"""`python -m competition.worker RUN_DIR MEMBER...`: one of the processes `kaggle-mnist train` starts
to spread members over several GPUs. Not a user command: the parent gives it a finished run folder
(config.json, folds.npy) and the names of its members, and reads its exit code and log."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

from competition import backend, storage
from competition.errors import UserError

# The exit code when the parent is gone: as if it had passed on a SIGTERM.
ORPHANED = 143


def stop_when_parent_goes(fd: int = 0) -> None:
    """Stops this process as soon as file descriptor `fd` (the worker's stdin, a pipe whose only writer
    is the parent, which never writes to it) reaches end of file, which the OS makes happen when the
    parent dies however it dies: a SIGKILL, the out-of-memory killer, a notebook's kernel restarted. A
    worker left training on its own would race the rerun that continues the run for the same member
    files, and take a core from it. Stopping at once is safe: a kill at any instant leaves a complete
    backup."""

    def watch() -> None:
        # os.read, not sys.stdin: a daemon thread blocked inside a buffered reader holds its lock, and
        # Python's shutdown then aborts the process when it flushes stdin.
        while os.read(fd, 4096):
            pass
        print("the `kaggle-mnist train` that started this worker is gone: stopping", flush=True)
        os._exit(ORPHANED)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def main(argv: list[str]) -> int:
    run_dir, names = Path(argv[0]), argv[1:]
    stop_when_parent_goes()
    try:
        backend.select(storage.read_json(run_dir / "config.json")["settings"]["backend"])
        from competition import train

        try:
            train.work(run_dir, names)
        except train.SessionDeadline:
            print("stopped at the session's deadline; the backup holds the last finished epoch", flush=True)
            return train.DEADLINE_EXIT
    except UserError as exc:
        print(f"error: {exc.message}", flush=True)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
