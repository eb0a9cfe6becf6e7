"""Scores per digit and the confusion matrix; `evaluate` as tables and JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest

from competition.scoring import evaluate
from tests.conftest import assert_clean_failure, run_cli


def test_scores_per_digit_and_confusion():
    labels = np.array([0, 0, 1, 1, 2, 2])
    predicted = np.array([0, 1, 1, 1, 2, 0])
    result = evaluate.scores(np.eye(10)[predicted], labels)
    assert result["accuracy"] == pytest.approx(4 / 6) and result["errors"] == 2
    per = {c["digit"]: c for c in result["per_class"]}
    assert per[0]["precision"] == 0.5 and per[0]["recall"] == 0.5
    assert per[1]["precision"] == pytest.approx(2 / 3) and per[1]["recall"] == 1.0
    assert per[2]["precision"] == 1.0 and per[2]["recall"] == 0.5 and per[2]["support"] == 2
    assert per[7]["support"] == 0 and per[7]["precision"] == 0.0
    assert result["confusion"][0][:3] == [1, 1, 0] and result["confusion"][2][:3] == [1, 0, 1]
    assert np.sum(result["confusion"]) == 6


def test_evaluate_cli_tables_and_json(in_run):
    workspace, run_dir = in_run
    shown = run_cli("evaluate", cwd=workspace)
    assert shown.returncode == 0, shown.output
    for needle in ("Per digit", "precision", "recall", "Confusion matrix", "f0-s1", "ensemble"):
        assert needle in shown.stdout
    as_json = run_cli("evaluate", run_dir.name, "--json", cwd=workspace)
    result = json.loads(as_json.stdout)
    oof = np.load(run_dir / "oof_probs.npy")
    labels = np.load(run_dir / "oof_labels.npy")
    assert result["accuracy"] == pytest.approx(float(np.mean(oof.argmax(1) == labels)))
    assert len(result["per_class"]) == 10 and np.sum(result["confusion"]) == len(labels) == 300
    assert len(result["members"]) == 4


@pytest.mark.slow
def test_evaluate_without_a_run_is_one_line(workspace):
    assert_clean_failure(run_cli("evaluate", cwd=workspace), "kaggle-mnist train")
    assert_clean_failure(run_cli("report", cwd=workspace), "kaggle-mnist train")

