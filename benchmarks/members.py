"""What a member costs: each candidate network's training FLOPs per image and its training images per
second on one thread by default (one of the two side-by-side workers of a CPU run), so that a candidate's held-out
accuracy (`holdout.py --member`) can be set against its price.

    python benchmarks/members.py --repeat 3
    python benchmarks/members.py --only default "bncnn --width 1.5" --repeat 5

Each candidate is `TrainSettings` with a few options changed, built and compiled by `member.build` and
`member.compile` (the run's own precision for this CPU, its batch size and schedule) and fitted through
the project's input path (`EpochBatches` via `feed`) on 3,840 random uint8 images: a step's time does
not depend on what the pixels show. One `fit` per candidate and repeat: a first epoch (tracing, oneDNN's
kernel set-up) left out, then `--epochs` timed ones. The candidates are alternated within every repeat,
so a slow spell of a shared machine hits them all; prints the median and range and appends a JSON line
to benchmarks/members.jsonl.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from bench import append_result  # noqa: E402

LOG = HERE / "members.jsonl"
ROWS = 3840  # 60 steps of 64
# The candidates of the member-quality screen (benchmarks/README.md): today's network and wider. The
# residual network and M3 screened beside them are in git at 85d9cee, elastic distortion at c6e669b,
# with their figures in members.jsonl.
CANDIDATES = {
    "default": {},
    "bncnn --width 1.5": {"width": 1.5},
    "bncnn --width 2": {"width": 2.0},
}


def settings_for(options: dict, threads: int = 1):
    from competition import backend
    from competition.training.settings import TrainSettings

    settings = dataclasses.replace(TrainSettings(), **options, cpu_threads=threads)
    return settings.resolved(gpu=False, cpu_bfloat16=backend.cpu_bfloat16())


def timed(options: dict, epochs: int, threads: int = 1) -> tuple[float, int]:
    """Training images per second over `epochs` epochs after the first, and FLOPs per image."""
    import keras
    import numpy as np

    from competition.training import member
    from competition.training.model import training_flops
    from competition.training.resume import EpochBatches, feed

    settings = settings_for(options, threads)
    keras.mixed_precision.set_global_policy(member.POLICIES[settings.precision])
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (ROWS, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, ROWS, dtype=np.uint8)
    keras.utils.set_random_seed(0)
    model = member.build(settings)
    batches = EpochBatches(images, labels, settings.batch_size, seed=0)
    member.compile(model, settings, len(batches))
    seconds = []

    class Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds.append(time.perf_counter() - self.started)

    model.fit(feed(batches), epochs=1 + epochs, shuffle=False, callbacks=[Clock()], verbose=0)
    return ROWS * epochs / sum(seconds[1:]), training_flops(model)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs of 60 steps per fit")
    parser.add_argument("--only", nargs="+", choices=list(CANDIDATES), help="these candidates only")
    parser.add_argument(
        "--threads", type=int, default=1, help="intra-op threads (2: a member alone on a 2-core machine)"
    )
    args = parser.parse_args()
    from competition import backend

    backend.select("tensorflow")
    backend.make_deterministic()
    backend.limit_cpu_threads(args.threads)
    names = args.only or list(CANDIDATES)
    rates: dict[str, list[float]] = {name: [] for name in names}
    flops: dict[str, int] = {}
    for repeat in range(args.repeat):
        for name in names if repeat % 2 == 0 else names[::-1]:
            rate, flops[name] = timed(CANDIDATES[name], args.epochs, args.threads)
            rates[name].append(rate)
            print(f"repeat {repeat + 1}: {name}: {rate:,.0f} images/s", flush=True)
    base = statistics.median(rates[names[0]])
    print(f"\n{'candidate':<22} {'MFLOP/image':>12} {'images/s (range)':>24} {'GFLOP/s':>8} {'time x':>7}")
    figures = {}
    for name in names:
        median = statistics.median(rates[name])
        figures[name] = {
            "options": CANDIDATES[name],
            "training_mflop_per_image": round(flops[name] / 1e6, 1),
            "images_per_second": [round(r, 1) for r in rates[name]],
            "median_images_per_second": round(median, 1),
            "gflop_per_second": round(median * flops[name] / 1e9, 1),
            "time_per_image_vs_first": round(base / median, 2),
        }
        spread = f"{median:,.0f} ({min(rates[name]):,.0f}-{max(rates[name]):,.0f})"
        print(
            f"{name:<22} {flops[name] / 1e6:>12.1f} {spread:>24} {median * flops[name] / 1e9:>8.1f} "
            f"{base / median:>7.2f}"
        )
    append_result(
        LOG,
        {"threads": args.threads, "precision": settings_for({}).precision, "candidates": figures},
        args.repeat,
    )

if __name__ == "__main__":
    main()
