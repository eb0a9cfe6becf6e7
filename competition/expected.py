"""What a run's submission can be expected to score: shown by `train`, `predict` and `run`, and kept in
metrics.json and the submissions ledger beside Kaggle's public score.

The CV is not that figure. An out-of-fold row is scored by the `--seeds` members that did not see its
fold, a test row by all of them, and the recipe's choices were made on those same folds. What the
submission scores was measured instead with `--holdout` (benchmarks/holdout.py): the recipe run end to
end on train.csv less a held-out set, its submission scored on the held-out rows. The gap between
that and the run's own CV, averaged over holdout seeds, is what turns a CV into an expectation here;
a recipe whose gap was never measured gets no figure, only the advice to measure it.
"""

from __future__ import annotations

import dataclasses
import math

from competition.settings import RECIPES, TrainSettings

# Kaggle's public leaderboard for digit-recognizer scores about a quarter of the 28,000 test rows.
PUBLIC_ROWS = 7_000
# Settings that do not change what a recipe predicts (or change it only by seed noise): ignored when a
# run is matched to a measured recipe.
NOT_RECIPE = ("backend", "precision", "epoch_validation", "cpu_threads", "seed", "holdout", "holdout_seed")

# Measured gaps: (the recipe as TrainSettings overrides, its predictor as `predict` names it, held-out
# accuracy minus CV averaged over the holdout seeds, the standard error of that average, where the
# measurements are).
# The default recipe, plain mean, 8,400 rows held out, holdout seeds 0 and 1: gaps +0.18 and -0.11 pt
# (benchmarks/holdout.jsonl); the error is their spread, far above either draw's binomial noise.
# `--recipe best`, plain mean, holdout seed 0 only: gap +0.217 pt, against the default's +0.182 pt on
# the same rows. Seed 0's rows are easier than the average draw, so the gap is the default's mean plus
# the difference the two recipes show on those shared rows (+0.036 + 0.036 pt), with the default's
# spread as its error (one seed has none of its own).
MEASURED: list[tuple[dict, str, float, float, str]] = [
    ({}, "mean", 0.00036, 0.00146, "benchmarks/README.md#the-submissions-accuracy"),
    (RECIPES["best"], "mean", 0.00072, 0.00146, "benchmarks/README.md#the-submissions-accuracy"),
]


def _recipe(settings: TrainSettings) -> TrainSettings:
    """The settings that shape a predictor, with automatic choices resolved as on a CPU."""
    resolved = settings.resolved(gpu=False)
    return dataclasses.replace(resolved, **{name: getattr(TrainSettings(), name) for name in NOT_RECIPE})


def measured_gap(settings: TrainSettings, predictor: str = "mean") -> tuple[float, float, str] | None:
    """(gap, its standard error, source) for the recipe of `settings` predicting with `predictor`
    ("mean", "tta", "oof"), or None if never measured."""
    recipe = _recipe(settings)
    for overrides, measured_predictor, gap, error, source in MEASURED:
        if measured_predictor == predictor and _recipe(TrainSettings(**overrides)) == recipe:
            return gap, error, source
    return None


def expectation(
    settings: TrainSettings, cv_accuracy: float, rows: int, predictor: str = "mean"
) -> dict | None:
    """The expected accuracy of the run's submission on `rows` scored rows (28,000 test rows; a
    --holdout run's held-out rows) with a range of about 95% (two standard errors: the measured gap's
    and the binomial noise of that many rows), or None for a recipe never measured."""
    found = measured_gap(settings, predictor)
    if found is None:
        return None
    gap, error, source = found
    accuracy = min(1.0, cv_accuracy + gap)
    half = 2 * math.sqrt(error**2 + accuracy * (1 - accuracy) / rows)
    return {
        "accuracy": accuracy,
        "low": max(0.0, accuracy - half),
        "high": min(1.0, accuracy + half),
        "rows": rows,
        "gap_to_cv": gap,
        "predictor": predictor,
        "measured": source,
    }


def public_noise(accuracy: float) -> float:
    """One standard error of Kaggle's public score at this accuracy (it scores PUBLIC_ROWS rows)."""
    return math.sqrt(accuracy * (1 - accuracy) / PUBLIC_ROWS)


def explain(expected: dict | None, cv_accuracy: float, folds: int, seeds: int) -> str:
    """One line for the user: the expected score and its range, or why the CV alone gives none."""
    per_row = "1 member" if seeds == 1 else f"{seeds} members"
    why = (
        f"each training row is scored by {per_row}, each test row by all {folds * seeds}, and the recipe's "
        "choices were made on CV"
    )
    if expected is None:
        return (
            f"The CV is not the leaderboard ({why}); this recipe's submission was never measured: "
            "`kaggle-mnist run --holdout 8400` measures it on rows held out from everything"
        )
    noise = 2 * public_noise(expected["accuracy"])
    return (
        f"Expected submission accuracy {expected['accuracy']:.2%} (about 95%: {expected['low']:.2%} to "
        f"{expected['high']:.2%} on {expected['rows']:,} rows): the CV {cv_accuracy:.2%} "
        f"{expected['gap_to_cv']:+.2%}, the gap measured for this recipe on held-out rows ({why}). "
        f"Kaggle's public score uses about {PUBLIC_ROWS:,} test rows, so it alone wanders about "
        f"+/-{noise:.2%} around that: two submissions closer than that are not told apart"
    )
