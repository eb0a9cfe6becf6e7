"""Where one training step's time goes, op by op: TensorFlow's profiler over one epoch of the default
network, as one side-by-side worker trains it (one thread by default), summed by kind of op.

    python benchmarks/profile.py --threads 1 --batch 64 --steps 96

Builds, compiles and configures the network as `train` does for these settings (its precision, loss,
optimizer and schedule, thread cap), feeds it random uint8 images through `resume.feed` as `train` does,
runs one untimed epoch (tracing, oneDNN kernel set-up), then profiles one epoch of `--steps` steps
and prints milliseconds per step for each kind of op, with the step's wall time, the number of ops and
the time outside the executor beside them (the profiler itself adds a little). No data needed. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# Ops whose names say which part of the network they belong to; everything else is summed by op type.
PARTS = {"dropout": "dropout", "augmentation": "augmentation", "adam": "optimizer (Adam)"}


def kind(name: str) -> str:
    """'StatefulPartitionedCall/gradient_tape/bncnn_1/conv2d_5_1/.../Conv2DBackpropFilter:_MklNative...'
    -> '_MklNativeConv2DBackpropFilter'; dropout, augmentation and optimizer ops by their part."""
    op_type = name.rsplit(":", 1)[-1]
    lowered = name.lower()
    for marker, part in PARTS.items():
        if f"/{marker}" in lowered:
            return f"{part}: {op_type}"
    return op_type


def op_times(logdir: Path) -> tuple[dict[str, float], float, int]:
    """Seconds per kind of op on TensorFlow's compute threads, from the profiler's trace; with the
    seconds inside the executor's own spans (ops and the executor's work between them) and the number
    of ops run."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    trace = max(logdir.rglob("*.xplane.pb"), key=lambda p: p.stat().st_mtime)
    space = xplane_pb2.XSpace()
    space.ParseFromString(trace.read_bytes())
    totals: dict[str, float] = collections.defaultdict(float)
    executor, ops = 0.0, 0
    for plane in space.planes:
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                if name.startswith("ExecutorState"):  # the executor's own span wraps the ops
                    executor += event.duration_ps / 1e12
                elif ":" in name and "::" not in name:  # "scope/name:OpType"; not the profiler's markers
                    totals[kind(name)] += event.duration_ps / 1e12
                    ops += 1
    return totals, executor, ops


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (1 = one side-by-side worker)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=96)
    parser.add_argument("--precision", default="auto", help="auto, float32 or bfloat16")
    parser.add_argument("--top", type=int, default=20, help="kinds of op listed")
    args = parser.parse_args()

    from competition import backend

    backend.select("tensorflow")
    import keras
    import numpy as np
    import tensorflow as tf

    from competition import train as training
    from competition.resume import EpochBatches, feed
    from competition.settings import TrainSettings

    settings = TrainSettings(
        batch_size=args.batch, precision=args.precision, cpu_threads=args.threads
    ).resolved(gpu=False, cpu_bfloat16=backend.cpu_bfloat16())
    training._configure_device(settings, [])
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.batch * args.steps, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, args.batch * args.steps)
    batches = EpochBatches(images, labels, args.batch, seed=0)
    model = training._build(settings)
    model.compile(
        optimizer=training._optimizer(settings, len(batches)),
        loss=training._loss(settings),
        metrics=["accuracy"],
    )
    model.fit(feed(batches), epochs=1, shuffle=False, verbose=0)  # tracing and kernel set-up, untimed

    logdir = Path(tempfile.mkdtemp(prefix="kaggle-mnist-profile-"))
    tf.profiler.experimental.start(str(logdir))
    started = time.perf_counter()
    model.fit(feed(batches), epochs=1, shuffle=False, verbose=0)
    wall = time.perf_counter() - started
    tf.profiler.experimental.stop()

    totals, executor, count = op_times(logdir)
    per_step = {name: seconds * 1000 / args.steps for name, seconds in totals.items()}
    ops = sum(per_step.values())
    print(
        f"TensorFlow {tf.__version__}, {keras.mixed_precision.dtype_policy().name}, {args.threads} thread(s), "
        f"batch {args.batch}, {args.steps} steps: {wall * 1000 / args.steps:.1f} ms a step "
        f"({args.batch * args.steps / wall:,.0f} images/s, profiler on), ops {ops:.1f} ms"
    )
    # What is neither an op nor the executor between ops: Keras' Python loop, callbacks, the function
    # call and the input pipeline's hand-over.
    print(
        f"{count / args.steps:.0f} ops a step; inside the executor {executor * 1000 / args.steps:.1f} ms a step, "
        f"outside it {(wall - executor) * 1000 / args.steps:.1f} ms"
    )
    print(f"{'ms/step':>8} {'share':>6}  kind of op")
    for name, ms in sorted(per_step.items(), key=lambda item: -item[1])[: args.top]:
        print(f"{ms:8.2f} {ms / ops:6.1%}  {name}")


if __name__ == "__main__":
    main()
