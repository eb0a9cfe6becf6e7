"""`python -m competition.worker RUN_DIR MEMBER...`: one of the processes `kaggle-mnist train` starts
to spread members over several GPUs. Not a user command: the parent gives it a finished run folder
(config.json, folds.npy) and the names of its members, and reads its exit code and log."""

from __future__ import annotations

import sys
from pathlib import Path

from competition import backend, storage
from competition.errors import UserError


def main(argv: list[str]) -> int:
    run_dir, names = Path(argv[0]), argv[1:]
    try:
        backend.select(storage.read_json(run_dir / "config.json")["settings"]["backend"])
        from competition import train

        train.work(run_dir, names)
    except UserError as exc:
        print(f"error: {exc.message}", flush=True)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
