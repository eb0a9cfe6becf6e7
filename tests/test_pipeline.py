"""`kaggle-mnist run` (pipeline.run): a --holdout run scores its predictor and has nothing to submit;
what only training here can do is refused on Kaggle before any work."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests import digits
from tests.conftest import assert_clean_failure, run_cli


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



@pytest.mark.parametrize(
    "command, needle",
    [
        (["train", "--on", "kaggle", "--fresh"], "--fresh is for training here"),
        (["run", "--on", "kaggle", "--fresh"], "--fresh is for training here"),
        (["train", "--on", "kaggle", "--members", "f0-s0"], "--members is for training here"),
    ],
)
def test_what_only_training_here_can_do_is_refused_on_kaggle_before_any_work(workspace, command, needle):
    result = run_cli(*command, cwd=workspace)
    assert_clean_failure(result, needle)
    assert not (workspace / "data").exists()  # refused before fetching anything
