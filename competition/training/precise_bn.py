"""Batch-norm statistics recomputed once a member's weights are final (`kaggle-mnist train`, after a
member's last epoch and before it predicts or is saved). Import after `backend.select(...)`.

At predict time a batch-norm layer normalises with moving averages of the batch statistics it saw while
training, statistics of weights that kept changing. After thousands of steps they have caught up; after
a few dozen (a --subset look, a GPU's batch of 256 on few rows) they belong to no weights at all, and a
network that has learned predicts at chance. "Precise BN" (Wu & Johnson, "Rethinking 'Batch' in
BatchNorm", 2021) replaces them with the population statistics of the final weights: every layer's
inputs averaged over the member's own training rows, the network run as in training (augmentation and
dropout on, each layer normalising by its batch), the weights fixed.

The rows' order and every random draw follow from (member seed, epoch) as an epoch's do
(resume.EpochBatches, resume.reseed), so a member recomputed again after a kill, or in a kernel, gets
the same numbers. Plain Keras ops: the same on every backend.
"""

from __future__ import annotations

import keras
import numpy as np

from competition.training.resume import reseed

# Rows a batch: large enough that a batch's own statistics, which normalise the layers above the one
# being measured, are close to the population's; small enough to stay a few hundred MB at 1.5x width.
BATCH_ROWS = 500
# Rows read at most, a seeded draw of the member's training rows: half the forward passes of a member's
# 21,000-26,880 rows. On the quick look's members (1 epoch, batch 256, 21,000 rows) all rows and 10,000
# gave variances within 2.3% in every channel and the same validation accuracy within 2 of 10,500
# images (96.63% and 96.61%, from 96.24% with the moving averages).
ROWS = 10_000


def batch_norm_layers(model: keras.Model) -> list[keras.layers.BatchNormalization]:
    return [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]


def recompute(model: keras.Model, images: np.ndarray, seed: int, epoch: int) -> None:
    """Sets every batch-norm layer's moving mean and variance of `model` to the exact mean and variance
    of its inputs over `ROWS` of `images` (the member's training rows; all of them if fewer), drawn and
    read `BATCH_ROWS` at a time in the order (seed, epoch) gives, with augmentation and dropout drawn
    from (seed, epoch) too. `epoch`: the one after the member's last, so its draws are none that
    training used. A network without batch norm is left as it is."""
    layers = batch_norm_layers(model)
    if not layers:
        return
    # The inputs of every batch-norm layer at once, as the layers below it compute them in training.
    probe = keras.Model(model.input, [layer.input for layer in layers])
    reseed(model, seed, epoch)
    order = np.random.default_rng([seed, epoch]).permutation(len(images))[:ROWS]
    # Per layer: values seen so far per channel, their mean, and their sum of squared deviations.
    seen = [0] * len(layers)
    means = [np.zeros(layer.moving_mean.shape, np.float64) for layer in layers]
    squares = [np.zeros(layer.moving_mean.shape, np.float64) for layer in layers]
    for start in range(0, len(order), BATCH_ROWS):
        inputs = probe(images[order[start : start + BATCH_ROWS]], training=True)
        for i, x in enumerate(inputs):
            x = keras.ops.cast(x, "float32")
            axes = tuple(range(len(x.shape) - 1))  # all but the channels
            n = int(np.prod(x.shape[:-1]))
            mean = keras.ops.convert_to_numpy(keras.ops.mean(x, axis=axes)).astype(np.float64)
            variance = keras.ops.convert_to_numpy(keras.ops.var(x, axis=axes)).astype(np.float64)
            # Chan et al.'s pairwise update: the values so far joined with this batch's, exact up to
            # rounding whatever the batches' sizes.
            total = seen[i] + n
            delta = mean - means[i]
            squares[i] += variance * n + delta**2 * seen[i] * n / total
            means[i] += delta * n / total
            seen[i] = total
    for layer, mean, square, n in zip(layers, means, squares, seen, strict=True):
        layer.moving_mean.assign(mean.astype(np.float32))
        # The population variance, as Keras' own batch norm computes a batch's (no n - 1).
        layer.moving_variance.assign((square / n).astype(np.float32))
