"""The networks `kaggle-mnist train --arch` offers. Adding one is a function and a line in ARCHITECTURES.

Import this only after the Keras backend is chosen (`train.select_backend`): Keras reads
KERAS_BACKEND once, on first import.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
from keras import layers

NUM_CLASSES = 10
INPUT_SHAPE = (28, 28, 1)


def conv_bn_relu(x, filters: int, kernel_size: int, strides: int = 1, padding: str = "valid"):
    # No bias: batch norm's shift makes it redundant.
    x = layers.Conv2D(filters, kernel_size, strides=strides, padding=padding, use_bias=False)(x)
    # momentum 0.9, not Keras' 0.99: the moving statistics that inference uses then settle within ~30
    # steps, so short runs (a one-epoch look, a small --subset) predict sensibly too.
    x = layers.BatchNormalization(momentum=0.9)(x)
    return layers.ReLU()(x)


def bncnn(x, dropout_rate: float):
    """The strongest public recipe for this competition (15 of these scored 0.99757 on the leaderboard).

    The 5x5 stride-2 convolutions replace max-pooling with a learnable downsampling.
    """
    for filters in (32, 64):
        x = conv_bn_relu(x, filters, 3)
        x = conv_bn_relu(x, filters, 3)
        x = conv_bn_relu(x, filters, 5, strides=2, padding="same")
        x = layers.Dropout(dropout_rate)(x)
    x = conv_bn_relu(x, 128, 4)
    x = layers.Flatten()(x)
    return layers.Dropout(dropout_rate)(x)


def lenet(x, dropout_rate: float):
    """The tutorial CNN most public notebooks use (about 99.3-99.5% alone)."""
    for filters, kernel in ((32, 5), (64, 3)):
        x = layers.Conv2D(filters, kernel, padding="same", activation="relu")(x)
        x = layers.Conv2D(filters, kernel, padding="same", activation="relu")(x)
        x = layers.MaxPooling2D()(x)
        x = layers.Dropout(0.25)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(256, activation="relu")(x)
    return layers.Dropout(dropout_rate)(x)


def mlp(x, dropout_rate: float):
    """A 784-200-100-10 perceptron: the baseline every CNN should beat (about 98%)."""
    x = layers.Flatten()(x)
    x = layers.Dense(200, activation="relu")(x)
    return layers.Dense(100, activation="relu")(x)


ARCHITECTURES: dict[str, Callable] = {"bncnn": bncnn, "lenet": lenet, "mlp": mlp}


def augmentation(rotation_degrees: float, zoom: float, shift: float) -> keras.Sequential:
    """Random rotation, zoom and shift; active in `fit`, inert at predict time, run on the device.

    No flips: a flipped 6 is a 9. Fill with black, the background of every MNIST digit ("reflect", the
    Keras default, would paint stroke fragments into the border).
    """
    return keras.Sequential(
        [
            layers.RandomRotation(rotation_degrees / 360.0, fill_mode="constant", fill_value=0.0),
            layers.RandomZoom(zoom, zoom, fill_mode="constant", fill_value=0.0),
            layers.RandomTranslation(shift, shift, fill_mode="constant", fill_value=0.0),
        ],
        name="augmentation",
    )


def build_model(
    arch: str = "bncnn",
    dropout_rate: float = 0.4,
    augment: bool = True,
    rotation_degrees: float = 10.0,
    zoom: float = 0.1,
    shift: float = 0.1,
) -> keras.Model:
    """Takes uint8 images (N, 28, 28) straight from the cache; returns softmax probabilities."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    inputs = keras.Input(shape=INPUT_SHAPE[:2], dtype="uint8", name="pixels")
    x = layers.Reshape(INPUT_SHAPE)(inputs)
    # uint8 in, scaled on the device: 4x less to move host-to-device than float32.
    x = layers.Rescaling(1.0 / 255.0)(x)
    if augment:
        x = augmentation(rotation_degrees, zoom, shift)(x)
    x = ARCHITECTURES[arch](x, dropout_rate)
    # Softmax in float32 even under mixed precision: float16 probabilities lose the small ones.
    outputs = layers.Dense(NUM_CLASSES, activation="softmax", dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=arch)
