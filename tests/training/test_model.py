"""The networks and their custom layers, each proven equal to Keras' own; augmentation; saved models load."""

from __future__ import annotations

import numpy as np
import pytest

from competition import backend

backend.select("tensorflow")

import keras  # noqa: E402
from keras import layers  # noqa: E402

from competition.training import member  # noqa: E402
from competition.training.model import BatchNorm, Conv2D, Dropout, RandomAffine, load, training_flops  # noqa: E402
from competition.training.settings import TrainSettings  # noqa: E402


def blob(size: int = 28) -> np.ndarray:
    """A bright square off the centre of a black 28x28 image, as a (1, 28, 28, 1) float batch."""
    image = np.zeros((1, size, size, 1), dtype=np.float32)
    image[0, 6:12, 16:22, 0] = 1.0
    return image


def test_augmentation_is_inert_at_predict_time_and_exact_without_ranges():
    images = np.random.default_rng(0).random((4, 28, 28, 1)).astype(np.float32)
    layer = RandomAffine(10.0, 0.1, 0.1, seed=1)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(images, training=False)), images)
    still = RandomAffine(0.0, 0.0, 0.0, seed=1)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(still(images, training=True)), images, atol=1e-6)


def test_augmentation_moves_digits_within_its_ranges():
    """Shift only: the blob's centre moves by at most 10% of the side, and differently per image."""
    images = np.repeat(blob(), 64, axis=0)
    moved = keras.ops.convert_to_numpy(RandomAffine(0.0, 0.0, 0.1, seed=3)(images, training=True))
    ys, xs = np.mgrid[:28, :28]
    mass = moved[..., 0].sum(axis=(1, 2))
    centre_y = (moved[..., 0] * ys).sum(axis=(1, 2)) / mass
    centre_x = (moved[..., 0] * xs).sum(axis=(1, 2)) / mass
    dy, dx = centre_y - 8.5, centre_x - 18.5
    assert np.all(np.abs(dy) <= 2.8 + 0.05) and np.all(np.abs(dx) <= 2.8 + 0.05)
    assert np.std(dx) > 0.8 and np.std(dy) > 0.8  # uniform on +-2.8 px has std 1.6
    np.testing.assert_allclose(mass, 36.0, rtol=0.02)  # a shift keeps the ink (nothing left the frame)


def test_augmentation_rotates_about_the_centre_and_zooms():
    """Rotation only: the blob's distance from the centre is kept. Zoom only: its area scales."""
    images = np.repeat(blob(), 64, axis=0)
    ys, xs = np.mgrid[:28, :28]
    turned = keras.ops.convert_to_numpy(RandomAffine(10.0, 0.0, 0.0, seed=4)(images, training=True))[..., 0]
    mass = turned.sum(axis=(1, 2))
    cy, cx = (turned * ys).sum(axis=(1, 2)) / mass, (turned * xs).sum(axis=(1, 2)) / mass
    radius = np.hypot(cy - 13.5, cx - 13.5)
    np.testing.assert_allclose(radius, np.hypot(8.5 - 13.5, 18.5 - 13.5), atol=0.15)
    zoomed = keras.ops.convert_to_numpy(RandomAffine(0.0, 0.1, 0.0, seed=5)(images, training=True))[..., 0]
    area = zoomed.sum(axis=(1, 2))
    # The output samples the input at zoom x the distance: the blob's area scales by 1/(zy * zx).
    assert area.min() >= 36 / 1.1**2 - 0.5 and area.max() <= 36 / 0.9**2 + 0.5 and np.std(area) > 1


def test_augmentation_is_a_function_of_its_seed_state():
    images = np.repeat(blob(), 8, axis=0)
    a, b = RandomAffine(seed=7), RandomAffine(seed=7)
    first = keras.ops.convert_to_numpy(a(images, training=True))
    np.testing.assert_array_equal(first, keras.ops.convert_to_numpy(b(images, training=True)))
    assert not np.array_equal(first, keras.ops.convert_to_numpy(a(images, training=True)))
    state = [v for v in a.non_trainable_variables if v.path.endswith("seed_generator_state")]
    assert len(state) == 1  # what resume.EpochSeeds reseeds every epoch


def test_a_model_saved_while_elastic_distortion_existed_still_loads():
    """Models saved while `--elastic` existed have it (0.0) in their augmentation layer's config."""
    layer = RandomAffine.from_config({**RandomAffine(10.0, 0.1, 0.1, seed=1).get_config(), "elastic": 0.0})
    assert "elastic" not in layer.get_config() and layer.rotation_degrees == 10.0


@pytest.mark.parametrize(
    ("arch", "width", "mflop"), [("bncnn", 1.0, 91.0), ("bncnn", 1.5, 203.8), ("bncnn", 2.0, 361.6), ("lenet", 1.0, 194.0)]
)
def test_every_network_trains_and_prices_itself(arch, width, mflop):
    """Each network builds from the settings, takes a training step on uint8 digits, predicts
    probabilities, and counts its training FLOPs per image (bncnn's 91 MFLOP: 15 M multiply-adds,
    x2 operations, x3 passes). Width scales every convolution, so bncnn at 2 costs about 4x."""
    settings = TrainSettings(arch=arch, width=width, epochs=1).resolved(gpu=False)
    keras.utils.set_random_seed(0)
    model = member.build(settings)
    member.compile(model, settings, steps_per_epoch=1)
    images = np.random.default_rng(0).integers(0, 256, size=(16, 28, 28), dtype=np.uint8)
    model.fit(images, np.arange(16) % 10, batch_size=16, epochs=1, verbose=0)
    probabilities = model.predict(images, verbose=0)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert training_flops(model) / 1e6 == pytest.approx(mflop, abs=0.1)


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_fused_batch_norm_matches_keras(policy):
    """Same outputs and the same moving statistics as Keras' BatchNormalization, in training and at
    predict time (the moving variance differs by the n/(n-1) Bessel factor of the fused kernel)."""
    keras.mixed_precision.set_global_policy(policy)
    try:
        rng = np.random.default_rng(0)
        x = (rng.normal(size=(16, 6, 6, 8)) * 3 + 1).astype(np.float32)
        ours, theirs = BatchNorm(momentum=0.9), layers.BatchNormalization(momentum=0.9)
        ours.build(x.shape)
        theirs.build(x.shape)
        gamma, beta = rng.normal(size=8).astype(np.float32), rng.normal(size=8).astype(np.float32)
        for layer in (ours, theirs):
            layer.gamma.assign(gamma)
            layer.beta.assign(beta)
        tolerance = 1e-4 if policy == "float32" else 3e-2
        for _ in range(3):
            a = keras.ops.convert_to_numpy(keras.ops.cast(ours(x, training=True), "float32"))
            b = keras.ops.convert_to_numpy(keras.ops.cast(theirs(x, training=True), "float32"))
            np.testing.assert_allclose(a, b, atol=tolerance)
        n = 16 * 6 * 6
        np.testing.assert_allclose(ours.moving_mean.numpy(), theirs.moving_mean.numpy(), atol=1e-2)
        # After 3 updates of 0.1: the moving variance holds 1 - 0.9**3 of the batch variance.
        share = 1 - 0.9**3
        expected = theirs.moving_variance.numpy() + share * x.var(axis=(0, 1, 2)) * (n / (n - 1) - 1)
        np.testing.assert_allclose(ours.moving_variance.numpy(), expected, rtol=2e-2)
        ours.moving_variance.assign(theirs.moving_variance)
        a = keras.ops.convert_to_numpy(keras.ops.cast(ours(x, training=False), "float32"))
        b = keras.ops.convert_to_numpy(keras.ops.cast(theirs(x, training=False), "float32"))
        np.testing.assert_allclose(a, b, atol=tolerance)
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("use_bias", [False, True])
def test_a_whole_kernel_convolution_is_the_same_function_as_keras(use_bias):
    """bncnn's last convolution (4x4 over 4x4) runs as a matmul: same outputs from the same weights,
    so models saved before it load and predict as they did."""
    x = np.random.default_rng(0).normal(size=(8, 4, 4, 64)).astype(np.float32)
    ours = Conv2D(128, 4, use_bias=use_bias, activation="relu")
    theirs = layers.Conv2D(128, 4, use_bias=use_bias, activation="relu")
    ours.build(x.shape)
    theirs.build(x.shape)
    weights = [np.random.default_rng(1).normal(size=w.shape).astype(np.float32) for w in ours.get_weights()]
    ours.set_weights(weights)
    theirs.set_weights(weights)
    a, b = keras.ops.convert_to_numpy(ours(x)), keras.ops.convert_to_numpy(theirs(x))
    assert a.shape == b.shape == (8, 1, 1, 128)
    np.testing.assert_allclose(a, b, atol=1e-4)
    # Any other shape is Keras' own convolution.
    y = np.random.default_rng(2).normal(size=(2, 6, 6, 64)).astype(np.float32)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(ours(y)), keras.ops.convert_to_numpy(theirs(y)))


def test_dropout_masks_drop_the_rate_and_scale_the_rest():
    ones = np.ones((64, 12, 12, 33), dtype=np.float32)  # an odd count of values per image
    layer = Dropout(0.4, seed=3)
    out = keras.ops.convert_to_numpy(layer(ones, training=True))
    # 304,128 values: the dropped share is 0.4 within 5 standard deviations (0.0044).
    assert abs((out == 0).mean() - 0.4) < 0.0045
    np.testing.assert_allclose(np.unique(out), [0.0, 1 / 0.6], rtol=1e-6)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(ones, training=False)), ones)
    # Masks differ from call to call and from place to place, and follow the seed generator's state.
    again = keras.ops.convert_to_numpy(layer(ones, training=True))
    assert not np.array_equal(out == 0, again == 0)
    assert not np.array_equal(out[0] == 0, out[1] == 0)
    twin = Dropout(0.4, seed=3)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(twin(ones, training=True)), out)
    state = [v for v in layer.non_trainable_variables if v.path.endswith("seed_generator_state")]
    assert len(state) == 1  # what resume.EpochSeeds reseeds every epoch
    # Rates that 16 bits cannot hold: off (Keras' own) and everything dropped (zeros, on every Keras).
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(Dropout(0.0)(ones, training=True)), ones)
    assert not keras.ops.convert_to_numpy(Dropout(1.0)(ones, training=True)).any()


def test_a_saved_model_loads_with_its_layers(tmp_path):
    keras.utils.set_random_seed(0)
    model = member.build(TrainSettings())
    images = np.random.default_rng(1).integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    before = model.predict(images, verbose=0)
    model.save(tmp_path / "model.keras")
    again = load(tmp_path / "model.keras")
    assert {type(layer).__name__ for layer in again.layers} >= {
        "RandomAffine",
        "BatchNorm",
        "Conv2D",
        "Dropout",
    }
    assert {
        type(layer).__module__ for layer in again.layers if type(layer).__name__ in ("Conv2D", "Dropout")
    } == {"competition.training.model"}
    np.testing.assert_allclose(again.predict(images, verbose=0), before, atol=1e-6)


def test_batch_norm_configs_load_on_every_supported_keras():
    """A member saved by Keras 3.14+ names renorm's off switch in its config; Keras 3.13 (Kaggle's
    image) has no such argument. Either way the layer is built, and it fuses as before."""
    saved_by_newer = {"momentum": 0.9, "renorm": False, "renorm_clipping": None, "renorm_momentum": 0.99}
    saved_by_older = {"momentum": 0.9}
    for config in (saved_by_newer, saved_by_older):
        layer = BatchNorm.from_config({**BatchNorm(momentum=0.9).get_config(), **config})
        x = np.ones((2, 3, 3, 4), dtype=np.float32)
        assert keras.ops.convert_to_numpy(layer(x, training=True)).shape == x.shape
        assert not getattr(layer, "renorm", False)

