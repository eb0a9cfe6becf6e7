"""Batch-norm statistics recomputed after training: exact, what a short run predicts with, and the same
numbers after a kill in the middle of them."""

from __future__ import annotations

import numpy as np
import pytest

from competition import backend
from competition.runs.folder import Run
from competition.training.settings import TrainSettings
from tests.conftest import TINY
from tests.digits import make_images

backend.select("tensorflow")

import keras  # noqa: E402

from competition.training import member, precise_bn  # noqa: E402
from competition.training import train as training  # noqa: E402


def short_run(precise: bool) -> Run:
    # A GPU's batch of 256 on 300 rows a member: 6 steps, far too few for the moving averages to settle.
    settings = TrainSettings(**{**TINY, "epochs": 3, "batch_size": 256, "subset": 600, "precise_bn": precise})
    return Run(training.train(settings, fresh=True, quiet=True))


def test_the_statistics_are_those_of_the_layers_inputs_over_all_rows():
    # Without augmentation nothing random reaches the first batch-norm layer: its recomputed statistics
    # must be the mean and variance of its inputs over all rows at once, whatever the batches
    # (1,234 rows: two full batches and a short one).
    settings = TrainSettings(augment=False, width=0.25)
    keras.utils.set_random_seed(0)
    model = member.build(settings)
    images = make_images(np.arange(1234) % 10)
    precise_bn.recompute(model, images, seed=3, epoch=20)
    first = precise_bn.batch_norm_layers(model)[0]
    inputs = keras.ops.convert_to_numpy(keras.Model(model.input, first.input)(images)).astype(np.float64)
    np.testing.assert_allclose(first.moving_mean.numpy(), inputs.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(first.moving_variance.numpy(), inputs.var(axis=(0, 1, 2)), rtol=1e-4)


def test_a_network_without_batch_norm_is_left_as_it_is():
    model = member.build(TrainSettings(arch="mlp"))
    before = [v.numpy().copy() for v in model.variables]
    precise_bn.recompute(model, make_images(np.arange(20) % 10), seed=0, epoch=1)
    for old, new in zip(before, model.variables, strict=True):
        np.testing.assert_array_equal(old, new.numpy())


def test_a_short_run_predicts_with_the_statistics_of_its_own_weights(tiny_data):
    averaged, precise = short_run(False), short_run(True)
    assert averaged.settings.precise_bn is False and precise.settings.precise_bn is True
    for info in precise.metrics["members"]:
        assert info["precise_bn_seconds"] > 0
    # The same training (same seeds): the same weights, other statistics, other predictions.
    old = keras.models.load_model(averaged.member_dir(0, 0) / "model.keras")
    new = keras.models.load_model(precise.member_dir(0, 0) / "model.keras")
    for a, b in zip(old.trainable_variables, new.trainable_variables, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    for a, b in zip(precise_bn.batch_norm_layers(old), precise_bn.batch_norm_layers(new), strict=True):
        assert not np.allclose(a.moving_mean.numpy(), b.moving_mean.numpy(), rtol=0.05)
    assert not np.array_equal(averaged.member_predictions(0, 0)[1], precise.member_predictions(0, 0)[1])
    # The moving averages of 6 steps predict near chance; the weights' own statistics far better.
    assert averaged.metrics["cv_accuracy"] < 0.5 < precise.metrics["cv_accuracy"], (
        averaged.metrics["cv_accuracy"],
        precise.metrics["cv_accuracy"],
    )


def test_a_kill_while_recomputing_then_a_rerun_gives_the_uninterrupted_numbers(tiny_data, monkeypatch):
    settings = TrainSettings(**{**TINY, "epochs": 2})
    reference = Run(training.train(settings, fresh=True, quiet=True))
    recompute = precise_bn.recompute

    def killed(model, images, seed, epoch):
        # Half the rows measured and the model's statistics already changed when the kill comes.
        recompute(model, images[: len(images) // 2], seed, epoch)
        raise KeyboardInterrupt

    monkeypatch.setattr(precise_bn, "recompute", killed)
    with pytest.raises(KeyboardInterrupt):
        training.train(settings, fresh=True, quiet=True)
    monkeypatch.setattr(precise_bn, "recompute", recompute)
    (run_dir,) = [p for p in (tiny_data / "ensembles").glob("2*") if p != reference.dir]
    assert not (run_dir / "members" / "f0-s0" / "model.keras").exists()
    resumed = Run(training.train(settings, quiet=True))  # the same command again
    assert resumed.dir == run_dir
    for fold in range(2):
        for mine, theirs in zip(resumed.member_predictions(fold, 0), reference.member_predictions(fold, 0), strict=True):
            np.testing.assert_array_equal(mine, theirs)

