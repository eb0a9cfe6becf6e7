"""A finished run's scores, from its members' predictions: the out-of-fold CV, every fold's and
member's accuracy, the test probabilities the submission averages, and on a --holdout run the accuracy
on the held-out rows. `run_metrics` is arithmetic over arrays; `score_run` reads a run's verified
member files, computes them and has the run write them (`train`, and a run brought home from Kaggle)."""

from __future__ import annotations

import numpy as np

from competition.runs.folder import Run
from competition.scoring import ensemble
from competition.scoring.expected import expectation
from competition.training.settings import TrainSettings


def run_metrics(
    settings: TrainSettings,
    members: list[dict],
    oof_parts: list[tuple[np.ndarray, np.ndarray]],
    tests: list[np.ndarray],
    labels: np.ndarray,
    folds: np.ndarray,
    held_labels: np.ndarray | None = None,
) -> tuple[dict[str, np.ndarray], dict]:
    """(the run's arrays, its metrics) from each member's record (member.json), its (validation rows,
    probabilities) and its test probabilities; `labels`, `folds`: the run's rows; `held_labels`: a
    --holdout run's, which its test probabilities predict."""
    oof, covered = ensemble.out_of_fold(oof_parts, len(labels))
    assert covered.all(), "every row belongs to some fold"
    test_probs = ensemble.average(tests).astype(np.float32)
    cv = ensemble.accuracy(oof, labels)
    valid = [m for m in members if np.isfinite(m["seconds_per_epoch"])]
    metrics = {
        "cv_accuracy": cv,
        # The plain mean's expected score on the rows the members predicted (None: not measured).
        "expected_submission": expectation(settings, cv, len(test_probs)),
        "fold_accuracy": {
            str(f): ensemble.accuracy(oof[folds == f], labels[folds == f]) for f in range(settings.folds)
        },
        "mean_member_accuracy": float(np.mean([m["val_accuracy"] for m in members])),
        "members": members,
        "rows": int(len(labels)),
        "seconds_total": float(sum(m["seconds"] for m in members)),
        "seconds_per_epoch": float(np.mean([m["seconds_per_epoch"] for m in valid])) if valid else None,
        "images_per_second_per_member": float(np.mean([m["images_per_second"] for m in valid])) if valid else None,
    }
    if held_labels is not None:
        # The plain mean of all members on rows nothing trained or chose on: what the submission of this
        # recipe scores (`predict` reports its own blend's figure).
        metrics["holdout"] = ensemble.scored(test_probs, held_labels) | {"seed": settings.holdout_seed}
    arrays = {"oof_probs.npy": oof.astype(np.float32), "oof_labels.npy": labels, "test_probs.npy": test_probs}
    return arrays, metrics


def score_run(
    run: Run, labels: np.ndarray, folds: np.ndarray, wall: dict, held_labels: np.ndarray | None = None
) -> dict:
    """Scores `run` from its members' verified predictions and finishes it (metrics.json, with `wall`:
    the command's timing); returns the metrics."""
    members, oof_parts, tests = [], [], []
    for member in run.members:
        members.append(run.member_info(*member))
        rows, probs, test = run.member_predictions(*member)
        oof_parts.append((rows, probs))
        tests.append(test)
    arrays, metrics = run_metrics(run.settings, members, oof_parts, tests, labels, folds, held_labels)
    return run.finish(arrays, {**metrics, **wall})
