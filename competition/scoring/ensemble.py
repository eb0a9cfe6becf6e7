"""The ensemble's arithmetic: pure functions on probability arrays, where mistakes hide."""

from __future__ import annotations

import math

import numpy as np


def average(probabilities: list[np.ndarray] | np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Mean of softmax outputs (members, N, classes) -> (N, classes); optionally weighted."""
    stack = np.asarray(probabilities, dtype=np.float64)
    if weights is None:
        return stack.mean(axis=0)
    weights = np.asarray(weights, dtype=np.float64)
    return np.tensordot(weights / weights.sum(), stack, axes=1)


def accuracy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(probabilities, axis=1) == labels))


def standard_error(accuracy: float, rows: int) -> float:
    """One standard error of an accuracy measured on `rows` independent rows (binomial)."""
    return math.sqrt(accuracy * (1.0 - accuracy) / rows)


def scored(probabilities: np.ndarray, labels: np.ndarray) -> dict:
    """Accuracy on labelled rows with its standard error, as recorded in metrics.json."""
    value = accuracy(probabilities, labels)
    return {"rows": int(len(labels)), "accuracy": value, "standard_error": standard_error(value, len(labels))}


def out_of_fold(member_oof: list[tuple[np.ndarray, np.ndarray]], num_rows: int, num_classes: int = 10):
    """Averages members' out-of-fold predictions per row.

    `member_oof` holds (row indices, probabilities) per member. Returns (probabilities (N, C), covered),
    where `covered` marks rows that some member predicted (all rows once every fold is trained).
    """
    total = np.zeros((num_rows, num_classes), dtype=np.float64)
    count = np.zeros(num_rows, dtype=np.int64)
    for rows, probs in member_oof:
        total[rows] += probs
        count[rows] += 1
    covered = count > 0
    total[covered] /= count[covered, None]
    return total, covered


def greedy_weights(true_class_probs: np.ndarray, max_rounds: int = 25) -> np.ndarray:
    """Ensemble selection with replacement (Caruana et al., 2004) minimising log loss.

    `true_class_probs` is (components, rows): each component's probability for the true label of each
    row (all that log loss needs, so the search is cheap). Starts from the best single component and
    adds, one at a time, the component that lowers the loss most; stops when none does. Returns weights
    (components,) summing to 1: how often each was picked.
    """
    probs = np.clip(np.asarray(true_class_probs, dtype=np.float64), 1e-12, 1.0)
    counts = np.zeros(len(probs), dtype=np.int64)
    total = np.zeros(probs.shape[1])
    best_loss = np.inf
    for _ in range(max_rounds):
        n = counts.sum()
        losses = -np.log((total + probs) / (n + 1)).mean(axis=1)
        pick = int(np.argmin(losses))
        if losses[pick] >= best_loss - 1e-12:
            break
        best_loss = float(losses[pick])
        counts[pick] += 1
        total += probs[pick]
    return counts / counts.sum()


def cross_fitted_blend(
    components: np.ndarray, labels: np.ndarray, folds: np.ndarray
) -> tuple[np.ndarray, dict[str, list[float]]]:
    """Out-of-fold probabilities of a weighted blend whose weights never saw the rows they score.

    `components` is (K, N, C), each a complete out-of-fold prediction. For every fold the weights are
    fitted on the other folds' rows and applied to this fold's rows. Returns the stitched (N, C)
    probabilities and the weights used for each fold.
    """
    true_class = components[:, np.arange(len(labels)), labels]
    blended = np.empty(components.shape[1:], dtype=np.float64)
    used = {}
    for fold in np.unique(folds):
        inside = folds == fold
        weights = greedy_weights(true_class[:, ~inside])
        blended[inside] = average(components[:, inside], weights)
        used[str(int(fold))] = weights.round(4).tolist()
    return blended, used


def holdout_line(score: dict, predictor: str) -> str:
    """How a --holdout run's predictor scored on its held-out rows (`score` as `scored` gives it)."""
    return (
        f"Holdout: {predictor} scores {score['accuracy']:.3%} +/- {score['standard_error']:.3%} (one "
        f"standard error) on {score['rows']:,} labelled rows of train.csv that nothing trained or chose "
        f"on (holdout seed {score['seed']})"
    )
