"""Probability arithmetic: blend weights never fitted on the rows they report, accuracy with its error."""

from __future__ import annotations

import numpy as np
import pytest

from competition.scoring import ensemble


def test_greedy_weights_prefer_the_better_component():
    good = np.full(100, 0.9)
    bad = np.full(100, 0.2)
    weights = ensemble.greedy_weights(np.stack([bad, good]))
    assert weights.tolist() == [0.0, 1.0]
    # Two complementary components: each is sure where the other is not; the blend beats both alone.
    a = np.r_[np.full(50, 0.99), np.full(50, 0.3)]
    b = np.r_[np.full(50, 0.3), np.full(50, 0.99)]
    weights = ensemble.greedy_weights(np.stack([a, b]))
    assert weights.sum() == pytest.approx(1) and min(weights) > 0


def test_cross_fitted_blend_never_fits_on_the_rows_it_reports():
    labels = np.array([0, 1, 0, 1])
    folds = np.array([0, 0, 1, 1])
    good, bad = np.eye(2)[labels] * 0.9 + 0.05, np.eye(2)[1 - labels] * 0.9 + 0.05
    # "a" is right only on fold 0, "b" only on fold 1: weights fitted on the other fold pick the wrong one.
    a = np.where(folds[:, None] == 0, good, bad)
    b = np.where(folds[:, None] == 1, good, bad)
    blended, used = ensemble.cross_fitted_blend(np.stack([a, b]), labels, folds)
    assert used == {"0": [0.0, 1.0], "1": [1.0, 0.0]}
    assert ensemble.accuracy(blended, labels) == 0.0


def test_accuracy_comes_with_its_standard_error():
    probs = np.eye(10)[[0, 1, 2, 3]]
    score = ensemble.scored(probs, np.array([0, 1, 2, 9]))
    assert score == {"rows": 4, "accuracy": 0.75, "standard_error": pytest.approx(np.sqrt(0.75 * 0.25 / 4))}

