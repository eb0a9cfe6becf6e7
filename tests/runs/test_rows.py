"""The rows a run trains on and predicts: the holdout draw, held rows predicted in place of test.csv."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from competition.errors import UserError
from competition.runs.rows import holdout_split, run_rows
from competition.training.settings import TrainSettings


def test_the_holdout_is_a_stratified_seeded_draw_apart_from_the_rest():
    labels = np.repeat(np.arange(10), [50, 60, 40, 70, 30, 50, 50, 80, 20, 50]).astype(np.uint8)
    kept, held = holdout_split(labels, 100, seed=0)
    assert len(held) == 100 and len(kept) == len(labels) - 100
    assert not set(kept) & set(held) and set(kept) | set(held) == set(range(len(labels)))
    # Each digit in the proportion it has in the whole (within one row of rounding).
    share = np.bincount(labels[held], minlength=10) - np.bincount(labels, minlength=10) * 100 / len(labels)
    assert np.abs(share).max() <= 1
    assert np.array_equal(held, holdout_split(labels, 100, seed=0)[1])  # the same rows for every recipe
    assert not np.array_equal(held, holdout_split(labels, 100, seed=1)[1])


@pytest.mark.parametrize("size", [5, 495])
def test_a_holdout_that_leaves_a_digit_out_of_either_side_is_refused(size):
    labels = np.repeat(np.arange(10), 50).astype(np.uint8)
    with pytest.raises(UserError, match="--holdout"):
        holdout_split(labels, size, seed=0)


def test_held_rows_are_predicted_in_place_of_test_csv_and_never_trained_on():
    rows = 400
    # Every image carries its row number, so where each row went can be read off the arrays.
    images = np.zeros((rows, 28, 28), dtype=np.uint16)
    images[:, 0, 0] = np.arange(rows)
    dataset = SimpleNamespace(
        train_images=images,
        train_labels=(np.arange(rows) % 10).astype(np.uint8),
        test_images=np.full((7, 28, 28), 999, dtype=np.uint16),
    )
    split = run_rows(TrainSettings(holdout=80, holdout_seed=3, subset=200), dataset)
    trained, held = set(split.images[:, 0, 0]), split.test_images[:, 0, 0]
    assert len(held) == 80 and np.array_equal(held, split.held_rows)
    assert not trained & set(held)
    assert len(split.images) == 200  # --subset cuts the rows left after the holdout
    assert np.array_equal(split.held_labels, dataset.train_labels[held])
    plain = run_rows(TrainSettings(), dataset)
    assert plain.held_labels is None and len(plain.test_images) == 7 and len(plain.images) == rows

