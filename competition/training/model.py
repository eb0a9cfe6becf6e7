"""The networks `kaggle-mnist train --arch` offers. Adding one is a function and a line in ARCHITECTURES.

Import this only after the Keras backend is chosen (`backend.select`): Keras reads
KERAS_BACKEND once, on first import.
"""

from __future__ import annotations

import inspect
import json
import math
import re
import zipfile
from collections.abc import Callable

import keras
import numpy as np
from keras import layers

from competition.errors import UserError

NUM_CLASSES = 10
INPUT_SHAPE = (28, 28, 1)


_HAS_RENORM = "renorm" in inspect.signature(layers.BatchNormalization.__init__).parameters


@keras.saving.register_keras_serializable(package="kaggle_mnist")
class BatchNorm(layers.BatchNormalization):
    """Keras' BatchNormalization, computed by TensorFlow's fused kernel on the TensorFlow backend.

    Keras 3 normalises with separate element-wise ops in float32 (casting bfloat16 activations up and
    down around them); on a CPU those ops cost more than the convolutions. TensorFlow's one fused op,
    which oneDNN runs in bfloat16 too, is much faster (benchmarks/README.md, "fused batch norm"). Same
    parameters, same moving-average rule, same saved weights; other backends use Keras' own (XLA fuses
    it there).
    """

    def __init__(self, **kwargs):
        # Batch renormalisation came in Keras 3.14. Without it (Kaggle's image has 3.13), a saved layer
        # that does not use it still loads: its config names the off switch, which that Keras refuses.
        if not _HAS_RENORM and not kwargs.get("renorm"):
            for key in ("renorm", "renorm_clipping", "renorm_momentum"):
                kwargs.pop(key, None)
        super().__init__(**kwargs)

    def call(self, inputs, training=None, mask=None):
        if keras.backend.backend() != "tensorflow" or mask is not None or len(inputs.shape) != 4:
            return super().call(inputs, training=training, mask=mask)
        if self.axis not in (-1, 3) or not (self.scale and self.center) or getattr(self, "renorm", False):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        training = bool(training) and self.trainable
        y, mean, variance, *_ = tf.raw_ops.FusedBatchNormV3(
            x=inputs,
            scale=self.gamma,
            offset=self.beta,
            mean=self.moving_mean,
            variance=self.moving_variance,
            epsilon=self.epsilon,
            # The kernel updates the moving statistics itself: moving * momentum + batch * (1 - momentum).
            exponential_avg_factor=1.0 - self.momentum if training else 1.0,
            data_format="NHWC",
            is_training=training,
        )
        if training:
            self.moving_mean.assign(mean)
            self.moving_variance.assign(variance)
        return y


@keras.saving.register_keras_serializable(package="kaggle_mnist")
class Conv2D(layers.Conv2D):
    """Keras' Conv2D; where the kernel covers the whole input (one output pixel, as in bncnn's last
    convolution, 4x4 over 4x4), computed as the matrix product it is, on the TensorFlow backend.

    oneDNN's convolution kernels are slow on that layer's weight gradient, a 1,024 x 128 product that a
    matmul computes several times faster (benchmarks/README.md, "matmul convolution"). Same weights (the
    kernel is only reshaped, in the row-major order both layouts share), same saved format, same
    function; other backends and other shapes use Keras' own.
    """

    def call(self, inputs):
        height, width, channels = inputs.shape[1], inputs.shape[2], inputs.shape[3]
        whole = (height, width) == tuple(self.kernel_size) and self.padding == "valid"
        if keras.backend.backend() != "tensorflow" or not whole or self.data_format != "channels_last":
            return super().call(inputs)
        ops = keras.ops
        kernel = ops.reshape(ops.cast(self.kernel, inputs.dtype), (height * width * channels, self.filters))
        outputs = ops.matmul(ops.reshape(inputs, (-1, height * width * channels)), kernel)
        if self.use_bias:
            outputs = outputs + ops.cast(self.bias, outputs.dtype)
        outputs = ops.reshape(outputs, (-1, 1, 1, self.filters))
        return self.activation(outputs) if self.activation is not None else outputs


@keras.saving.register_keras_serializable(package="kaggle_mnist")
class Dropout(layers.Dropout):
    """Keras' Dropout, with its mask drawn from 16 random bits per value on the TensorFlow backend.

    Keras draws one float per value; TensorFlow's CPU generator is slow enough that bncnn's two dropout
    masks are a visible share of a step at batch 64 on one core, and two 16-bit draws per 32-bit one
    cut that by about two thirds (benchmarks/README.md, "16-bit dropout masks"). A value is dropped with probability round(rate * 65536) / 65536 (0.399994 for 0.4) and the kept
    ones are scaled by 1 / (1 - rate), as Keras does. Drawn from the layer's own seed generator, so resume.EpochSeeds
    reseeds it and a resumed run draws the same masks.
    """

    def call(self, inputs, training=False):
        threshold = round(self.rate * 65536)
        if training and threshold >= 65536 and self.noise_shape is None:
            return keras.ops.zeros_like(inputs)  # all dropped (Keras 3.13 refuses a rate of 1 outright)
        if not training or threshold == 0 or self.noise_shape is not None:
            return super().call(inputs, training=training)  # off, or a shared mask: Keras' own
        if keras.backend.backend() != "tensorflow":
            return super().call(inputs, training=training)
        import tensorflow as tf

        shape = tf.shape(inputs)
        size = tf.reduce_prod(shape)
        words = tf.random.stateless_uniform(
            ((size + 1) // 2,), self.seed_generator.next(), minval=None, maxval=None, dtype=tf.uint32
        )
        bits = tf.reshape(tf.bitcast(words, tf.uint16), (-1,))[:size]
        keep = tf.reshape(bits >= threshold, shape)
        scaled = inputs * tf.cast(1.0 / (1.0 - self.rate), inputs.dtype)
        return tf.where(keep, scaled, tf.constant(0, inputs.dtype))


def conv_bn_relu(x, filters: int, kernel_size: int, strides: int = 1, padding: str = "valid"):
    # No bias: batch norm's shift makes it redundant.
    x = Conv2D(filters, kernel_size, strides=strides, padding=padding, use_bias=False)(x)
    # momentum 0.9, not Keras' 0.99: the moving statistics that inference uses then settle within ~30
    # steps, so short runs (a one-epoch look, a small --subset) predict sensibly too.
    x = BatchNorm(momentum=0.9)(x)
    return layers.ReLU()(x)


def scaled(units: int, width: float) -> int:
    """A layer's channels (or units) at `width` times the network's own: a multiple of 8, which the CPU's
    vector units and a GPU's tensor cores both divide evenly. At width 1, the network's own."""
    return units if width == 1 else max(8, 8 * round(units * width / 8))


def bncnn(x, dropout_rate: float, width: float):
    """The strongest public recipe for this competition (15 of these scored 0.99757 on the leaderboard).

    The 5x5 stride-2 convolutions replace max-pooling with a learnable downsampling.
    """
    for filters in (32, 64):
        x = conv_bn_relu(x, scaled(filters, width), 3)
        x = conv_bn_relu(x, scaled(filters, width), 3)
        x = conv_bn_relu(x, scaled(filters, width), 5, strides=2, padding="same")
        x = Dropout(dropout_rate)(x)
    x = conv_bn_relu(x, scaled(128, width), 4)
    x = layers.Flatten()(x)
    return Dropout(dropout_rate)(x)


def lenet(x, dropout_rate: float, width: float):
    """The tutorial CNN most public notebooks use (about 99.3-99.5% alone)."""
    for filters, kernel in ((32, 5), (64, 3)):
        x = layers.Conv2D(scaled(filters, width), kernel, padding="same", activation="relu")(x)
        x = layers.Conv2D(scaled(filters, width), kernel, padding="same", activation="relu")(x)
        x = layers.MaxPooling2D()(x)
        x = Dropout(0.25)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(scaled(256, width), activation="relu")(x)
    return Dropout(dropout_rate)(x)


def mlp(x, dropout_rate: float, width: float):
    """A 784-200-100-10 perceptron: the baseline every CNN should beat (about 98%)."""
    x = layers.Flatten()(x)
    x = layers.Dense(scaled(200, width), activation="relu")(x)
    return layers.Dense(scaled(100, width), activation="relu")(x)


# Other networks screened as members, and what they bought for their cost: benchmarks/README.md.
ARCHITECTURES: dict[str, Callable] = {"bncnn": bncnn, "lenet": lenet, "mlp": mlp}


@keras.saving.register_keras_serializable(package="kaggle_mnist")
class RandomAffine(layers.Layer):
    """Random rotation, zoom and shift composed into one affine matrix per image and applied with one
    bilinear interpolation; active in `fit`, inert at predict time, run on the device.

    The same distribution as Keras' RandomRotation + RandomZoom + RandomTranslation (angle, height and
    width zoom, and both shifts each uniform and independent), at a third of the interpolation work and
    one random draw per batch instead of three. No flips: a flipped 6 is a 9. Fill with black, the
    background of every MNIST digit ("reflect", the Keras default, would paint stroke fragments into the
    border). Computed in float32 under any precision policy: the warp is cheap, and the image kernels of
    some backends have no bfloat16 version.

    Elastic distortion (Simard et al. 2003) did not pay in this warp (benchmarks/README.md). Keras'
    RandomElasticTransform cannot stand in for it: its sigma is at most 1.4 pixels, it
    draws one field per batch with the same noise for both axes, and on TensorFlow it transforms only
    the first image of a batch whose size the graph does not know (as in `fit`).
    """

    def __init__(self, rotation_degrees=10.0, zoom=0.1, shift=0.1, seed=None, **kwargs):
        kwargs["dtype"] = "float32"
        kwargs.pop("elastic", None)  # in the config of models saved while --elastic existed (training only)
        super().__init__(**kwargs)
        self.rotation_degrees, self.zoom, self.shift, self.seed = rotation_degrees, zoom, shift, seed
        # TensorFlow's image warp (ImageProjectiveTransformV3) has no XLA kernel: a model holding it
        # must not be compiled by XLA there, which Keras' jit_compile="auto" would do on a GPU (and
        # fail at the first step). Keras' own RandomRotation says the same. JAX's warp compiles.
        self.supports_jit = keras.backend.backend() != "tensorflow"
        # Its state variable ends in "seed_generator_state", which resume.EpochSeeds reseeds each epoch.
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=None):
        if not training:
            return images
        ops = keras.ops
        batch = ops.shape(images)[0]
        height, width = images.shape[1], images.shape[2]
        draws = keras.random.uniform((batch, 5), minval=-1.0, maxval=1.0, seed=self.seed_generator)
        angle = draws[:, 0] * (self.rotation_degrees * math.pi / 180.0)
        zoom_y, zoom_x = 1.0 + draws[:, 1] * self.zoom, 1.0 + draws[:, 2] * self.zoom
        shift_y, shift_x = draws[:, 3] * (self.shift * height), draws[:, 4] * (self.shift * width)
        # The matrix maps each output pixel to where it is read in the input (affine_transform's
        # convention): about the centre, rotate and scale, then shift.
        cos, sin = ops.cos(angle), ops.sin(angle)
        a0, a1 = cos * zoom_x, -sin * zoom_y
        b0, b1 = sin * zoom_x, cos * zoom_y
        cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
        a2 = cx - a0 * cx - a1 * cy - shift_x
        b2 = cy - b0 * cx - b1 * cy - shift_y
        zeros = ops.zeros_like(angle)
        transform = ops.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)
        return ops.image.affine_transform(
            images, transform, interpolation="bilinear", fill_mode="constant", fill_value=0.0
        )

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "rotation_degrees": self.rotation_degrees,
            "zoom": self.zoom,
            "shift": self.shift,
            "seed": self.seed,
        }


def build_model(
    arch: str,
    dropout_rate: float,
    augment: bool,
    rotation_degrees: float,
    zoom: float,
    shift: float,
    width: float,
) -> keras.Model:
    """Takes uint8 images (N, 28, 28) straight from the cache; returns softmax probabilities. The
    settings' defaults live in TrainSettings alone: `member.build(settings)` calls this."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    inputs = keras.Input(shape=INPUT_SHAPE[:2], dtype="uint8", name="pixels")
    x = layers.Reshape(INPUT_SHAPE)(inputs)
    # uint8 in, scaled on the device: 4x less to move host-to-device than float32.
    x = layers.Rescaling(1.0 / 255.0)(x)
    if augment:
        x = RandomAffine(rotation_degrees, zoom, shift, name="augmentation")(x)
    x = ARCHITECTURES[arch](x, dropout_rate, width)
    # Softmax in float32 even under mixed precision: float16 probabilities lose the small ones.
    outputs = layers.Dense(NUM_CLASSES, activation="softmax", dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=arch)


def load(path) -> keras.Model:
    """A saved member; this module defines the custom layers that `load_model` needs. A member saved by
    a newer Keras than this one (trained elsewhere, used in Kaggle's notebook image, say) may name
    arguments this Keras lacks: that is said in one line, not reported as a bug."""
    try:
        return keras.models.load_model(path)
    except (TypeError, ValueError) as exc:
        saved = _saved_keras_version(path)
        if saved is None or _version(saved) <= _version(keras.__version__):
            raise
        raise UserError(
            f"{path} was saved by Keras {saved}, newer than this Keras {keras.__version__}, which cannot "
            f"read it ({type(exc).__name__}): upgrade Keras here (pip install -U keras), or use the run "
            "where it was trained"
        ) from None


def _saved_keras_version(path) -> str | None:
    try:
        with zipfile.ZipFile(path) as archive:
            return json.loads(archive.read("metadata.json")).get("keras_version")
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def training_flops(model: keras.Model) -> int:
    """Floating-point operations to train on one image: the multiply-adds of every convolution and dense
    layer, two operations each, three times over (the forward pass, and the backward pass's gradients
    with respect to the inputs and to the weights). The figure that prices a network per image."""
    macs = 0
    for layer in model.layers:
        if isinstance(layer, layers.Conv2D):
            kernel = int(np.prod(layer.kernel.shape))  # kh x kw x in x out
            macs += int(np.prod(layer.output.shape[1:3])) * kernel
        elif isinstance(layer, layers.Dense):
            macs += int(np.prod(layer.kernel.shape))
    return 3 * 2 * macs
