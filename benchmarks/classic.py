"""The classic way, for comparison only: what the popular digit-recognizer kernels do, in its fastest
honest form.

One plain `keras.Sequential` CNN per fold (the same BN-CNN recipe, bias and ReLU inside each
convolution), fed by the legacy `ImageDataGenerator`, which augments each image with SciPy on the CPU
inside the training loop; batch 64, Adam 1e-3 x 0.95^epoch; no validation during training (the
kernels it stands for do not validate each epoch either: the fold is scored once, at the end); CSVs
read with pandas and scaled to float32; `model.predict` at its default batch size. It is the baseline
`bench.py` measures the project against, not part of the product. Keras' backend comes from
KERAS_BACKEND (TensorFlow when unset), so it also runs with JAX where TensorFlow is missing.

    python benchmarks/classic.py DATA_DIR --folds 2 --epochs 2 --subset 12000 --out result.json
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def build(dropout_rate: float = 0.4):
    import keras
    from keras import layers

    def conv(filters, kernel, strides=1, padding="same"):
        # As in the kernel it comes from: ReLU inside the convolution, batch norm after it.
        return [
            layers.Conv2D(filters, kernel, strides=strides, padding=padding, activation="relu"),
            layers.BatchNormalization(),
        ]

    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            *conv(32, 3, padding="valid"),
            *conv(32, 3, padding="valid"),
            *conv(32, 5, strides=2),
            layers.Dropout(dropout_rate),
            *conv(64, 3, padding="valid"),
            *conv(64, 3, padding="valid"),
            *conv(64, 5, strides=2),
            layers.Dropout(dropout_rate),
            *conv(128, 4, padding="valid"),
            layers.Flatten(),
            layers.Dropout(dropout_rate),
            layers.Dense(10, activation="softmax"),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("data", help="folder with train.csv and test.csv")
    parser.add_argument("--folds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--subset", type=int, default=0)
    parser.add_argument("--split-seed", type=int, default=42)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    started = time.perf_counter()
    import keras
    import numpy as np
    import pandas as pd
    from sklearn.model_selection import StratifiedKFold

    try:  # where the kernels import it from
        from tensorflow.keras.preprocessing.image import ImageDataGenerator
    except ImportError:  # no TensorFlow (the GPU machine): the same legacy class, inside Keras 3
        from keras.src.legacy.preprocessing.image import ImageDataGenerator

    train = pd.read_csv(os.path.join(args.data, "train.csv"))
    test = pd.read_csv(os.path.join(args.data, "test.csv"))
    if args.subset:
        train = train.iloc[: args.subset]
    labels = train["label"].to_numpy()
    x = train.drop(columns="label").to_numpy(np.float32).reshape(-1, 28, 28, 1) / 255.0
    x_test = test.to_numpy(np.float32).reshape(-1, 28, 28, 1) / 255.0
    y = keras.utils.to_categorical(labels, 10)

    datagen = ImageDataGenerator(
        rotation_range=10, zoom_range=0.1, width_shift_range=0.1, height_shift_range=0.1
    )
    oof = np.zeros((len(labels), 10), dtype=np.float32)
    test_probs = np.zeros((len(x_test), 10), dtype=np.float32)
    epoch_seconds = []
    splitter = StratifiedKFold(n_splits=args.folds, shuffle=True, random_state=args.split_seed)

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            epoch_seconds.append(time.perf_counter() - self.t)

    train_rows, train_accuracy = 0, []
    for fold, (fit_rows, val_rows) in enumerate(splitter.split(x, labels)):
        keras.utils.set_random_seed(fold)
        model = build()
        model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
        history = model.fit(
            datagen.flow(x[fit_rows], y[fit_rows], batch_size=64),
            epochs=args.epochs,
            callbacks=[keras.callbacks.LearningRateScheduler(lambda epoch: 1e-3 * 0.95**epoch), Timer()],
            verbose=0,
        )
        oof[val_rows] = model.predict(x[val_rows], verbose=0)
        test_probs += model.predict(x_test, verbose=0) / args.folds
        train_rows = len(fit_rows)
        train_accuracy.append(history.history["accuracy"][-1])  # training mode: batch statistics
    submission = pd.DataFrame({"ImageId": np.arange(1, len(x_test) + 1), "Label": test_probs.argmax(1)})
    submission.to_csv(
        os.path.join(os.path.dirname(os.path.abspath(args.out)), "classic_submission.csv"), index=False
    )
    seconds_per_epoch = float(np.mean(epoch_seconds))
    # After each net's first epoch (which traces the model); all epochs if there is only one.
    later = [t for i, t in enumerate(epoch_seconds) if i % args.epochs] or epoch_seconds
    result = {
        "cv_accuracy": float(np.mean(oof.argmax(1) == labels)),
        "last_epoch_train_accuracy": float(np.mean(train_accuracy)),
        "seconds_per_epoch": seconds_per_epoch,
        "images_per_second_per_member": train_rows / seconds_per_epoch,
        "steady_images_per_second_per_member": train_rows / float(np.median(later)),
        "seconds_inside": time.perf_counter() - started,
    }
    with open(args.out, "w") as handle:
        json.dump(result, handle)


if __name__ == "__main__":
    main()
