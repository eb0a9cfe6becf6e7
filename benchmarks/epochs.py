"""Accuracy against epochs, recipe against recipe, on the same validation fold: what a speed lever
(batch size, precision) or a schedule costs or buys, measured the way a competitor would.

    python benchmarks/epochs.py --epochs 10 --seeds 2 --variant "--batch-size 64" --variant "--batch-size 128"

For every variant (extra `kaggle-mnist train` options) it trains members f0-s0 .. f0-s{N-1} (fold 0 of a
5-fold split of all 42,000 rows, or the fold --fold names: 33,600 training rows, 8,400 validation rows; one
image is 0.012%)
through the real `kaggle-mnist train --members`, with the fold scored after every epoch. Variants
alternate seed by seed, so a slow spell of a shared machine hits all of them. Prints a table of the
mean (min-max) validation accuracy per epoch and per variant, and appends one JSON line per variant
to benchmarks/epochs.jsonl. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench import DEFAULT_DATA, device_name  # noqa: E402


def history(run_dir: Path, member: str) -> list[dict]:
    with open(run_dir / "members" / member / "history.csv") as handle:
        rows = {int(r["epoch"]): r for r in csv.DictReader(handle)}  # a resumed epoch: keep the last
    return [rows[e] for e in sorted(rows)]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="competition zip or folder")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=3, help="members per variant (seed indices 0..N-1)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--fold", type=int, default=0, help="the fold whose members are trained and scored")
    parser.add_argument("--variant", action="append", required=True, help="extra train options, quoted")
    parser.add_argument("--results", type=Path, default=HERE / "epochs.jsonl")
    parser.add_argument("--workspace", type=Path, help="keep runs here instead of a temporary folder")
    args = parser.parse_args()

    workspace = args.workspace or Path(tempfile.mkdtemp(prefix="kaggle-mnist-epochs-"))
    workspace.mkdir(parents=True, exist_ok=True)
    # A wide console: the run's folder is read from train's output, which would otherwise wrap.
    env = {
        **os.environ,
        "KAGGLE_MNIST_WORKSPACE": str(workspace),
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "COLUMNS": "400",
    }
    cli = [sys.executable, "-m", "competition"]
    subprocess.run(
        [*cli, "fetch", "--from", str(args.data)], cwd=workspace, env=env, check=True, capture_output=True
    )

    base = [f"--folds={args.folds}", f"--seeds={args.seeds}", f"--epochs={args.epochs}", "--epoch-validation"]
    runs: dict[str, list[Path]] = {v: [] for v in args.variant}  # per variant, each seed's run folder
    for seed_index in range(args.seeds):
        for variant in args.variant:
            command = [
                *cli,
                "train",
                *base,
                *shlex.split(variant),
                f"--members=f{args.fold}-s{seed_index}",
                "--quiet",
            ]
            done = subprocess.run(command, cwd=workspace, env=env, capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
            line = next(x for x in done.stdout.splitlines() if "members into" in x or "unfinished run" in x)
            runs[variant].append(Path(line.split()[-1]))

    device = device_name("tensorflow")
    print(f"fold {args.fold} of {args.folds}, {args.seeds} seeds, {device}")
    for variant in args.variant:
        # Normally one folder per variant; two if the code changed the run's identity mid-benchmark.
        folders = runs[variant]
        settings = json.loads((folders[-1] / "config.json").read_text())["settings"]
        curves = [
            [float(r["val_accuracy"]) for r in history(d, f"f{args.fold}-s{i}")]
            for i, d in enumerate(folders)
        ]
        finals = [
            json.loads((d / "members" / f"f{args.fold}-s{i}" / "member.json").read_text())
            for i, d in enumerate(folders)
        ]
        per_epoch = [
            {
                "mean": statistics.mean(c[e] for c in curves),
                "min": min(c[e] for c in curves),
                "max": max(c[e] for c in curves),
            }
            for e in range(args.epochs)
        ]
        result = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "device": device,
            "variant": variant,
            "settings": {
                k: settings.get(k)
                for k in (
                    "batch_size",
                    "learning_rate",
                    "precision",
                    "schedule",
                    "epochs",
                    "warmup_epochs",
                    "ema",
                    "label_smoothing",
                    "dropout_rate",
                )
            },
            "fold": args.fold,
            "folds": args.folds,
            "seeds": args.seeds,
            "val_accuracy_by_epoch": per_epoch,
            "final_val_accuracy": [m["val_accuracy"] for m in finals],
            "images_per_second": [round(m["images_per_second"]) for m in finals],
            # Each member's own training time (member.json), so a rerun over kept runs reports it too.
            "member_seconds": [round(m["seconds"], 1) for m in finals],
        }
        with open(args.results, "a") as handle:
            handle.write(json.dumps(result) + "\n")
        print(f"\n{variant}: {result['settings']}")
        for e, p in enumerate(per_epoch):
            print(f"  epoch {e + 1:>2}: {p['mean']:.4%} ({p['min']:.4%} - {p['max']:.4%})")
        print(
            f"  final (model.predict): {[f'{a:.4%}' for a in result['final_val_accuracy']]}, "
            f"img/s {result['images_per_second']}"
        )


if __name__ == "__main__":
    main()
