"""Where one member's training time goes: each speed lever of `kaggle-mnist train` on its own, in one
process, the variants alternated and repeated so that a slow spell of a shared machine hits them all.

    python benchmarks/levers.py --repeat 3

Every variant trains the default network on the same 6,000 rows (fold 0 of a 2-fold split of the
first 12,000 training rows, the other 6,000 as its validation fold, as in bench.py) with the
project's own input path (`EpochBatches`, reseeded every epoch), callbacks (schedule, epoch log,
full-state backup) and `fit`. Each variant runs one `fit` of 1 + `--epochs` epochs; the first
(tracing, oneDNN kernel set-up) is left out, and the figure is training images per second over the
others (validation included where the variant validates). Prints a table with the median and the range
over the repeats and appends a JSON line to benchmarks/levers.jsonl. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
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

from bench import DEFAULT_DATA, append_result, device_name  # noqa: E402

# Each variant changes one thing from the one above it, from the code as it was (three augmentation
# layers, Keras' batch norm, float32, validation every epoch) to what `train` does now.
CPU_DEFAULT = dict(aug="affine", bn="fused", policy="mixed_bfloat16", validate=False)
# Session 9: from the input path `train` uses since session 8 (resume.feed: autotuning off).
FED = {**CPU_DEFAULT, "feed": True}
VARIANTS = {
    "before: 3 aug layers, Keras BN, float32, val each epoch": dict(
        aug="three", bn="keras", policy="float32"
    ),
    "one affine warp": dict(aug="affine", bn="keras", policy="float32"),
    "+ fused batch norm": dict(aug="affine", bn="fused", policy="float32"),
    "+ bfloat16": dict(aug="affine", bn="fused", policy="mixed_bfloat16"),
    "+ no per-epoch validation": CPU_DEFAULT,
    "+ batch 128": {**CPU_DEFAULT, "batch": 128},
    "+ batch 256": {**CPU_DEFAULT, "batch": 256},
    "batch 64, steps_per_execution 8": {**CPU_DEFAULT, "spe": 8},
    "batch 64, arrays instead of EpochBatches": {**CPU_DEFAULT, "arrays": True},
    "batch 64, through feed": FED,
    "+ whole-kernel conv as a matmul": {**FED, "conv": "matmul"},
    "+ 16-bit dropout masks": {**FED, "conv": "matmul", "dropout": "bits"},
    "+ steps_per_execution 8": {**FED, "conv": "matmul", "dropout": "bits", "spe": 8},
    # Session 10: larger batches on top of everything `train` does now.
    "now, batch 128": {**FED, "conv": "matmul", "dropout": "bits", "batch": 128},
    "now, batch 256": {**FED, "conv": "matmul", "dropout": "bits", "batch": 256},
    # Session 10: Adam's update as one fused op per variable.
    "now, fused Adam": {**FED, "conv": "matmul", "dropout": "bits", "adam": "fused"},
}


def load_rows(data: Path, workspace: Path):
    import subprocess

    import numpy as np

    env = {**os.environ, "KAGGLE_MNIST_WORKSPACE": str(workspace)}
    subprocess.run(
        [sys.executable, "-m", "competition", "fetch", "--from", str(data)],
        env=env,
        check=True,
        capture_output=True,
    )
    cache = workspace / "data" / "digit-recognizer" / "cache"
    images, labels = np.load(cache / "train_images.npy")[:12000], np.load(cache / "train_labels.npy")[:12000]
    return images[0::2], labels[0::2], images[1::2], labels[1::2]


def build(variant: dict):
    import keras
    from keras import layers

    from competition.training import model

    keras.mixed_precision.set_global_policy(variant["policy"])
    keras.utils.set_random_seed(0)
    # The Keras batch norm the network used before, put back for the "before" variants.
    norm, conv, dropout = model.BatchNorm, model.Conv2D, model.Dropout
    if variant["bn"] == "keras":
        model.BatchNorm = layers.BatchNormalization
    # Keras' own Conv2D and Dropout unless the variant names the project's faster ones.
    if variant.get("conv") != "matmul":
        model.Conv2D = layers.Conv2D
    if variant.get("dropout") != "bits":
        model.Dropout = layers.Dropout
    try:
        inputs = keras.Input((28, 28), dtype="uint8")
        x = layers.Rescaling(1.0 / 255.0)(layers.Reshape((28, 28, 1))(inputs))
        if variant["aug"] == "three":
            fill = dict(fill_mode="constant", fill_value=0.0)
            x = layers.RandomRotation(10 / 360, **fill)(x)
            x = layers.RandomZoom(0.1, 0.1, **fill)(x)
            x = layers.RandomTranslation(0.1, 0.1, **fill)(x)
        else:
            x = model.RandomAffine(10.0, 0.1, 0.1)(x)
        x = model.bncnn(x, 0.4)
        outputs = layers.Dense(10, activation="softmax", dtype="float32")(x)
    finally:
        model.BatchNorm, model.Conv2D, model.Dropout = norm, conv, dropout
    net = keras.Model(inputs, outputs)
    net.compile(
        optimizer=fused_adam(1e-3) if variant.get("adam") == "fused" else keras.optimizers.Adam(1e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        steps_per_execution=variant.get("spe", 1),
    )
    return net


def fused_adam(rate: float):
    """Keras' Adam with each variable's update as TensorFlow's one fused op (ResourceApplyAdam, the same
    formula) instead of about ten small ops: the session-10 lever, measured and dropped."""
    import keras
    import tensorflow as tf

    class FusedAdam(keras.optimizers.Adam):
        def update_step(self, gradient, variable, learning_rate):
            dtype = variable.dtype
            step = tf.cast(self.iterations + 1, dtype)
            index = self._get_variable_index(variable)
            m, v = self._momentums[index], self._velocities[index]
            tf.raw_ops.ResourceApplyAdam(
                var=variable.handle,
                m=m.handle,
                v=v.handle,
                beta1_power=tf.pow(tf.cast(self.beta_1, dtype), step),
                beta2_power=tf.pow(tf.cast(self.beta_2, dtype), step),
                lr=tf.cast(learning_rate, dtype),
                beta1=tf.cast(self.beta_1, dtype),
                beta2=tf.cast(self.beta_2, dtype),
                epsilon=tf.cast(self.epsilon, dtype),
                grad=tf.cast(gradient, dtype),
            )

    return FusedAdam(rate)


def timed_epochs(variant: dict, rows, epochs: int) -> float:
    """Training images per second over `epochs` epochs, after one warm-up epoch."""
    import keras

    from competition.training.resume import EpochBatches, EpochSeeds, ExactBackup, feed

    x, y, x_val, y_val = rows
    batch = variant.get("batch", 64)
    net = build(variant)
    folder = Path(tempfile.mkdtemp(prefix="levers-"))
    batches = EpochBatches(x, y, batch, seed=0)
    callbacks = [
        EpochSeeds(batches, 0),
        keras.callbacks.LearningRateScheduler(lambda epoch: 1e-3 * 0.95**epoch),
        keras.callbacks.CSVLogger(str(folder / "history.csv")),
    ]
    callbacks.append(ExactBackup(folder / "backup", []))
    seconds = []

    class Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):  # after validation, as `train` times its epochs
            seconds.append(time.perf_counter() - self.started)

    options = dict(callbacks=[Clock(), *callbacks], verbose=0, epochs=1 + epochs)
    if variant.get("validate", True):
        options.update(validation_data=(x_val, y_val), validation_batch_size=1024)
    if variant.get("arrays"):
        net.fit(x, y, batch_size=batch, **options)
    elif variant.get("feed"):
        net.fit(feed(batches), shuffle=False, **options)
    else:
        net.fit(batches, shuffle=False, **options)
    # One fit, as in `train`; its first epoch (tracing, oneDNN kernel set-up) is left out.
    return epochs * len(y) / sum(seconds[1:])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="competition zip or folder")
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs per variant and repeat")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", action="append", help="variant names (default: all)")
    parser.add_argument("--results", type=Path, default=HERE / "levers.jsonl")
    parser.add_argument(
        "--threads", type=int, default=0, help="CPU threads (default: all cores; 1 = one side-by-side worker)"
    )
    args = parser.parse_args()

    from competition import backend

    backend.select("tensorflow")
    backend.make_deterministic()
    if args.threads:
        backend.limit_cpu_threads(args.threads)
    rows = load_rows(args.data, Path(tempfile.mkdtemp(prefix="kaggle-mnist-levers-")))
    names = args.only or list(VARIANTS)
    rates: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(args.repeat):
        for name in names:
            rates[name].append(timed_epochs(VARIANTS[name], rows, args.epochs))
            print(f"{name}: {rates[name][-1]:,.0f} images/s", flush=True)

    reference = statistics.median(rates[names[0]])
    line = {
        "device": device_name("tensorflow"),
        "epochs": args.epochs,
        "threads": args.threads or os.cpu_count(),
        "images_per_second": {n: [round(r) for r in rates[n]] for n in names},
    }
    line = append_result(args.results, line, args.repeat)
    print(
        f"\n{line['device']}, {line['threads']} thread(s), {args.repeat} repeats of {args.epochs} timed epochs"
        " on 6,000 rows"
    )
    print(f"{'variant':<52} {'median img/s':>12} {'range':>13} {'x first':>8}")
    for name in names:
        values = rates[name]
        middle = statistics.median(values)
        print(
            f"{name:<52} {middle:>12,.0f} {min(values):>6,.0f}-{max(values):<6,.0f} {middle / reference:>7.2f}x"
        )


if __name__ == "__main__":
    main()
