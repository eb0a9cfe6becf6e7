"""The ensemble's arithmetic: pure functions on probability arrays, where mistakes hide."""

from __future__ import annotations

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
