"""What recomputing the batch-norm statistics after training (`--precise-bn`, on by default) changes in
short runs, and what it costs a member: each command below run with `--precise-bn` and with
`--no-precise-bn`, alternated, each in a fresh workspace.

    python benchmarks/precise_bn.py

- the short run at a GPU's batch that scored chance before (`--subset 2000 --batch-size 256`): its CV;
- the notebook's quick look at a GPU's batch (`--folds 2 --seeds 1 --epochs 1 --batch-size 256`): its CV;
- two epochs of the default's first member: the seconds the recompute takes, against the seconds of
  the 20 epochs that member trains in a default run (its second epoch's time x 20).

Appends one JSON line per command and setting to benchmarks/precise_bn.jsonl. The held-out check on
whole runs is `holdout.py --precise-bn`.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench import DEFAULT_DATA, commit, device_name  # noqa: E402
from holdout import kaggle_mnist  # noqa: E402

LOG = HERE / "precise_bn.jsonl"
COMMANDS = {
    "short run, batch 256": ["--folds", "2", "--seeds", "1", "--epochs", "3", "--subset", "2000", "--batch-size", "256"],
    "quick look, batch 256": ["--folds", "2", "--seeds", "1", "--epochs", "1", "--batch-size", "256"],
    "default member, 2 epochs": ["--folds", "5", "--seeds", "1", "--epochs", "2", "--members", "f0-s0"],
}
DEFAULT_EPOCHS = 20


def measure(name: str, options: list[str], precise: bool, data: Path) -> dict:
    with tempfile.TemporaryDirectory(prefix="precise-bn-") as folder:
        workspace = Path(folder)
        kaggle_mnist(["fetch", "--from", str(data)], workspace)
        command = ["train", *options, "--precise-bn" if precise else "--no-precise-bn", "--quiet"]
        _, seconds = kaggle_mnist(command, workspace)
        (run_dir,) = (workspace / "ensembles").glob("2*")
        members = [
            json.loads(p.read_text()) for p in sorted((run_dir / "members").glob("*/member.json"))
        ]
        metrics = run_dir / "metrics.json"
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "commit": commit(),
            "command": "kaggle-mnist " + shlex.join(command),
            "device": device_name("tensorflow"),
            "name": name,
            "precise_bn": precise,
            "cv_accuracy": json.loads(metrics.read_text())["cv_accuracy"] if metrics.is_file() else None,
            "member_accuracy": [m["val_accuracy"] for m in members],
            "precise_bn_seconds": [m["precise_bn_seconds"] for m in members],
            "epoch_seconds": [m["epoch_seconds"] for m in members],
            "wall_seconds": round(seconds, 1),
        }
    if precise and name.startswith("default member"):
        # The recompute against a default member's training: its last epoch (the first also traces
        # the model) times the default's epochs.
        entry["share_of_default_member"] = entry["precise_bn_seconds"][0] / (
            DEFAULT_EPOCHS * entry["epoch_seconds"][0][-1]
        )
    return entry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--only", choices=list(COMMANDS), help="one command instead of all three")
    args = parser.parse_args()
    for name, options in COMMANDS.items():
        if args.only and name != args.only:
            continue
        for precise in (False, True):
            entry = measure(name, options, precise, args.data.resolve())
            with open(LOG, "a") as log:
                log.write(json.dumps(entry) + "\n")
            cv = f"CV {entry['cv_accuracy']:.2%}" if entry["cv_accuracy"] is not None else "one member"
            share = entry.get("share_of_default_member")
            cost = f"; recompute {share:.1%} of a default member" if share is not None else ""
            print(f"{name}, precise_bn {precise}: {cv}; recompute seconds {entry['precise_bn_seconds']}{cost}")


if __name__ == "__main__":
    main()
