"""`--holdout N`: labelled rows of train.csv that nothing trains or chooses on, predicted in place of
test.csv, so the submission's own predictor is scored on known labels."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from competition.errors import UserError
from competition.runs.rows import holdout_split, run_rows
from competition.scoring import ensemble
from competition.training.settings import TrainSettings
from tests import digits
from tests.conftest import assert_clean_failure, run_cli


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


def test_accuracy_comes_with_its_standard_error():
    probs = np.eye(10)[[0, 1, 2, 3]]
    score = ensemble.scored(probs, np.array([0, 1, 2, 9]))
    assert score == {"rows": 4, "accuracy": 0.75, "standard_error": pytest.approx(np.sqrt(0.75 * 0.25 / 4))}


@pytest.mark.slow
def test_a_holdout_run_scores_its_predictor_on_the_held_rows_and_submits_nothing(workspace, tmp_path):
    digits.write_csvs(tmp_path / "csvs", n_train=900, n_test=40)
    quick = ["--folds", "2", "--seeds", "1", "--epochs", "3", "--batch-size", "16", "--quiet"]
    result = run_cli("run", "--from", str(tmp_path / "csvs"), "--holdout", "300", *quick, cwd=workspace)
    assert result.returncode == 0, result.output
    assert "scores" in result.stdout and "on 300 labelled rows of train.csv" in result.stdout
    (run_dir,) = (p for p in (workspace / "ensembles").iterdir() if p.is_dir())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["rows"] == 600 and metrics["holdout"]["rows"] == 300
    assert [m["train_rows"] + m["val_rows"] for m in metrics["members"]] == [600, 600]
    assert np.load(run_dir / "test_probs.npy").shape == (300, 10)
    # The synthetic digits are easy: the held rows are scored far beyond chance.
    assert metrics["holdout"]["accuracy"] > 0.6
    (record,) = (workspace / "submissions").glob("*.holdout.json")
    saved = json.loads(record.read_text())["holdout"]
    assert saved["accuracy"] == metrics["holdout"]["accuracy"]  # the plain mean is the predictor here
    assert len(saved["wrong_rows"]) == round((1 - saved["accuracy"]) * 300)
    assert not (workspace / "submission.csv").exists()
    assert not list((workspace / "submissions").glob("*.csv"))


@pytest.mark.slow
def test_a_holdout_run_cannot_be_submitted(workspace):
    result = run_cli("run", "--holdout", "100", "--submit", cwd=workspace)
    assert_clean_failure(result, "nothing to submit")
