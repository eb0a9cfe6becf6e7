"""What a `fit` call costs beyond its steps: the batches handed to Keras as they are (a PyDataset, which
Keras wraps in a tf.data pipeline with autotuning on) against `resume.feed` (the same batches through
tf.data with autotuning off), in one single-threaded process, alternated.

    python benchmarks/feed.py --repeat 12

Each call trains the default network (batch 64, bfloat16 where the CPU has it) for `--steps` steps.
Two figures per call: the wall rate (images / the whole `fit` call) and the steady rate (from the end of
the first batch to the end of the last, by a batch callback, as the time estimate measures it). Where
the two differ, the call spent the difference outside its steps. Prints, per side, the median and the
range over the repeats and how many calls lost more than half a second, and appends a JSON line to
benchmarks/feed.jsonl. `--pin` runs the process on one core (`taskset -c 0`), as a worker of a side by
side run has it. See benchmarks/README.md, "The time estimate".
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from bench import DEFAULT_DATA, device_name  # noqa: E402
from levers import load_rows  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="competition zip or folder")
    parser.add_argument("--steps", type=int, default=48)
    parser.add_argument("--repeat", type=int, default=12)
    parser.add_argument("--pin", action="store_true", help="run on one core (Linux)")
    parser.add_argument("--results", type=Path, default=HERE / "feed.jsonl")
    args = parser.parse_args()
    if args.pin:
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

    from competition import backend

    backend.select("tensorflow")
    backend.limit_cpu_threads(1)
    import keras

    from competition import train
    from competition.resume import EpochBatches, feed
    from competition.settings import TrainSettings

    settings = TrainSettings(cpu_threads=1).resolved(gpu=False, cpu_bfloat16=backend.cpu_bfloat16())
    keras.mixed_precision.set_global_policy(train.POLICIES[settings.precision])
    x, y = load_rows(args.data, Path(tempfile.mkdtemp(prefix="kaggle-mnist-feed-")))[:2]
    rows = args.steps * settings.batch_size
    x, y = x[:rows], y[:rows]
    keras.utils.set_random_seed(0)
    model = train._build(settings)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    model.fit(feed(EpochBatches(x[:128], y[:128], 64, 0)), shuffle=False, verbose=0)  # trace once
    sides = {"PyDataset (Keras' pipeline)": lambda b: b, "feed (autotuning off)": feed}
    wall: dict[str, list[float]] = {side: [] for side in sides}
    steady: dict[str, list[float]] = {side: [] for side in sides}
    for repeat in range(args.repeat):
        for side, wrap in sides.items():
            clock = train.BatchClock()
            batches = EpochBatches(x, y, settings.batch_size, repeat)
            started = time.perf_counter()
            model.fit(wrap(batches), shuffle=False, verbose=0, callbacks=[clock])
            wall[side].append(rows / (time.perf_counter() - started))
            steady[side].append(
                settings.batch_size * (len(clock.train) - 1) / (clock.train[-1] - clock.train[0])
            )

    line = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "device": device_name("tensorflow"),
        "pinned": args.pin,
        "steps": args.steps,
        "repeats": args.repeat,
        "wall_images_per_second": {s: [round(r) for r in v] for s, v in wall.items()},
        "steady_images_per_second": {s: [round(r) for r in v] for s, v in steady.items()},
    }
    with open(args.results, "a") as handle:
        handle.write(json.dumps(line) + "\n")
    print(
        f"{line['device']}{', one core' if args.pin else ''}; {args.steps} steps per fit, {args.repeat} repeats"
    )
    for side in sides:
        # Seconds a call spent outside its steps: its wall time less the steps at the steady rate.
        lost = [rows / w - rows / s for w, s in zip(wall[side], steady[side], strict=True)]
        print(
            f"{side:>28}: wall {statistics.median(wall[side]):,.0f} images/s "
            f"({min(wall[side]):,.0f}-{max(wall[side]):,.0f}), steady {statistics.median(steady[side]):,.0f} "
            f"({min(steady[side]):,.0f}-{max(steady[side]):,.0f}); calls that lost over 0.5 s: "
            f"{sum(t > 0.5 for t in lost)} of {len(lost)}"
        )


if __name__ == "__main__":
    main()
