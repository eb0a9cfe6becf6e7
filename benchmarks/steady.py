"""Steady-state training speed per member, the current code against an earlier commit, for code that
did not record its epochs one by one.

    python benchmarks/steady.py --baseline 02d48ae --repeat 2

Each side trains the same recipe twice, `--short` and `--long` epochs (default 4 and 8; `--folds 2
--seeds 1 --subset 12000`: 6,000 training rows per member), through its own `train` command, the sides
and lengths alternated `--repeat` times. A member's extra time for the extra epochs (`seconds` in each
member's entry of metrics.json, from the member's own clock) is what those epochs cost in steady state:
start-up, tracing, the first epoch and the predictions cancel out. So

    images/s per member = rows x (long - short) / (seconds(long) - seconds(short)),

median over members and repeats, the same way for both sides, each side training its members the way
its own code does (the current code two side by side on a 2-core CPU, the earlier one after the other
on both cores). Per-epoch validation is part of the cost where a side's code does it. Appends one
JSON line to benchmarks/steady.jsonl. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench import DEFAULT_DATA, checkout, device_name, full_commit  # noqa: E402


def member_seconds(cli: list[str], args: list[str], workspace: Path, env: dict) -> tuple[int, dict]:
    subprocess.run(
        [*cli, "train", *args, "--quiet", "--fresh"], cwd=workspace, env=env, check=True, capture_output=True
    )
    newest = max((workspace / "ensembles").glob("*/metrics.json"), key=lambda p: p.stat().st_mtime)
    metrics = json.loads(newest.read_text())
    members = metrics["members"]
    return members[0]["train_rows"], {m["name"]: m["seconds"] for m in members}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="competition zip or folder")
    parser.add_argument("--baseline", metavar="REV", required=True, help="the earlier commit")
    parser.add_argument("--short", type=int, default=4)
    parser.add_argument("--long", type=int, default=8)
    parser.add_argument("--subset", type=int, default=12000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--results", type=Path, default=HERE / "steady.jsonl")
    args = parser.parse_args()
    if args.long <= args.short:
        raise SystemExit("--long must be more epochs than --short")

    workspace = Path(tempfile.mkdtemp(prefix="kaggle-mnist-steady-"))
    env = {**os.environ, "KAGGLE_MNIST_WORKSPACE": str(workspace), "TF_CPP_MIN_LOG_LEVEL": "3"}
    cli = [sys.executable, "-m", "competition"]
    subprocess.run(
        [*cli, "fetch", "--from", str(args.data)], cwd=workspace, env=env, check=True, capture_output=True
    )
    code = checkout(args.baseline, workspace / "baseline-code")
    # PYTHONPATH goes before the installed (editable) package, so `-m competition` runs the old code.
    sides = {"now": env, "baseline": {**env, "PYTHONPATH": str(code)}}
    recipe = ["--folds=2", "--seeds=1", f"--subset={args.subset}"]
    rates: dict[str, list[float]] = {side: [] for side in sides}
    for _ in range(args.repeat):
        for side, side_env in sides.items():
            rows, short = member_seconds(cli, [*recipe, f"--epochs={args.short}"], workspace, side_env)
            _, long = member_seconds(cli, [*recipe, f"--epochs={args.long}"], workspace, side_env)
            for member in short:
                extra = long[member] - short[member]
                rates[side].append(rows * (args.long - args.short) / extra)
            print(f"{side}: {[round(r) for r in rates[side][-len(short) :]]} images/s per member", flush=True)

    line = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "device": device_name("tensorflow"),
        "baseline_commit": full_commit(args.baseline),
        "epochs": [args.short, args.long],
        "subset": args.subset,
        "repeats": args.repeat,
        "steady_images_per_second_per_member": {s: [round(r) for r in v] for s, v in rates.items()},
    }
    now, before = statistics.median(rates["now"]), statistics.median(rates["baseline"])
    line["ratio"] = round(now / before, 2)
    with open(args.results, "a") as handle:
        handle.write(json.dumps(line) + "\n")
    print(f"\n{line['device']}; epochs {args.short} and {args.long}, {args.repeat} repeats")
    for side, values in rates.items():
        print(
            f"{side:>9}: {statistics.median(values):,.0f} images/s per member "
            f"({min(values):,.0f}-{max(values):,.0f})"
        )
    print(f"now / baseline: {line['ratio']}x")


if __name__ == "__main__":
    main()
