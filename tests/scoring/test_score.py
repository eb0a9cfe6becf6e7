"""A run's metrics from its members' predictions: arithmetic over arrays, checked by hand."""

from __future__ import annotations

import numpy as np
import pytest

from competition.scoring.score import run_metrics
from competition.training.settings import TrainSettings


def one_hot(labels, classes=10):
    return np.eye(classes, dtype=np.float32)[labels]


def test_the_cv_folds_and_holdout_come_from_the_members_predictions():
    labels = np.array([0, 1, 2, 3, 4, 5])
    folds = np.array([0, 0, 0, 1, 1, 1])
    wrong = labels.copy()
    wrong[4] = 9  # fold 1's member gets one of its three rows wrong
    members = [
        {"val_accuracy": 1.0, "seconds": 2.0, "seconds_per_epoch": 1.0, "images_per_second": 30.0},
        {"val_accuracy": 2 / 3, "seconds": 4.0, "seconds_per_epoch": float("nan"), "images_per_second": 0.0},
    ]
    oof_parts = [(np.array([0, 1, 2]), one_hot(labels[:3])), (np.array([3, 4, 5]), one_hot(wrong[3:]))]
    held = np.array([7, 8])
    # The second member is wrong on row 1 (0.6 on a 1), the first sure of the 8: the mean is right on both.
    tests = [one_hot(held), 0.6 * one_hot(np.array([7, 1])) + 0.4 * one_hot(held)]
    settings = TrainSettings(folds=2, seeds=1, holdout=2, holdout_seed=3)
    arrays, metrics = run_metrics(settings, members, oof_parts, tests, labels, folds, held)
    assert metrics["cv_accuracy"] == pytest.approx(5 / 6)
    assert metrics["fold_accuracy"] == {"0": 1.0, "1": pytest.approx(2 / 3)}
    assert metrics["mean_member_accuracy"] == pytest.approx(5 / 6)
    assert metrics["seconds_total"] == 6.0 and metrics["seconds_per_epoch"] == 1.0  # the NaN left out
    assert metrics["holdout"]["seed"] == 3 and metrics["holdout"]["accuracy"] == pytest.approx(1.0)
    np.testing.assert_array_equal(arrays["oof_labels.npy"], labels)
    np.testing.assert_allclose(arrays["test_probs.npy"], np.mean(tests, axis=0))
    assert arrays["oof_probs.npy"].dtype == np.float32 and arrays["test_probs.npy"].dtype == np.float32
