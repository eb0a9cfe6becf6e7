"""What a run's submission can be expected to score: shown by `train`, `predict` and `run`, and kept in
metrics.json and the submissions ledger beside Kaggle's public score.

The CV is not that figure. An out-of-fold row is scored by the `--seeds` members that did not see its
fold, a test row by all of them, and the recipe's choices were made on those same folds. What the
submission scores was measured instead with `--holdout` (benchmarks/holdout.py): the recipe run end to
end on train.csv less a held-out set, its submission scored on the held-out rows. The gap between
that and the run's own CV, averaged over every such measured run (holdout seeds, and runs scored
against the test rows' true labels), is what turns a CV into an expectation here, with the runs'
spread as its error; a recipe whose gap was never measured gets no figure, only the advice to measure
it.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from dataclasses import dataclass

from competition.training.settings import RECIPES, TrainSettings

# Kaggle's public leaderboard for digit-recognizer scores about a quarter of the 28,000 test rows.
PUBLIC_ROWS = 7_000
# Settings that do not change what a recipe predicts (or change it only by seed noise): ignored when a
# run is matched to a measured recipe. precise_bn: on a whole run one image of 8,400 (benchmarks/README.md,
# "Precise batch norm"), and the draws below were measured without it.
NOT_RECIPE = (
    "backend", "precision", "epoch_validation", "cpu_threads", "cpu_workers", "seed", "holdout", "holdout_seed",
    "precise_bn",
)


@dataclass(frozen=True)
class Measured:
    """A recipe's measured gap: each draw is one run of it whose submission was scored on labelled rows
    that nothing trained or chose on (a `--holdout` run's held-out rows, or the true labels of the test
    rows), minus that run's own CV. Each new measurement adds a draw."""

    recipe: dict  # TrainSettings overrides
    predictor: str  # as `predict` names it
    draws: tuple[float, ...]  # submission accuracy minus CV, one per measured run
    source: str
    shift: float = 0.0  # added to the draws' mean: a recipe measured paired against another's draws

    @property
    def gap(self) -> float:
        return statistics.mean(self.draws) + self.shift

    @property
    def error(self) -> float:
        """The standard error of one new run's gap (not only of the mean): the draws' spread, times
        sqrt(1 + 1/n) for the mean's own uncertainty. Which rows are scored moves the gap by far more
        than any one draw's binomial noise, so the spread is the figure that counts."""
        return statistics.stdev(self.draws) * math.sqrt(1 + 1 / len(self.draws))


# 10 members at 1x width (`--seeds 2 --width 1`, the default until session 20), plain mean: holdout
# seeds 0, 1 and 2 (8,400 rows each; held out 99.738% against CV 99.5565%, 99.512% against 99.6220%,
# 99.667% against 99.5923%), seed 0 again with precise BN (99.750% against 99.5565%:
# benchmarks/holdout.jsonl), and two
# `run --folds 5` runs scored against the true labels of the 28,000 test rows outside the project
# (99.536% against CV 99.6405% in bfloat16, 99.532% against 99.6381% in float32; issue 33).
TEN_AT_1X_DRAWS = (0.0018155, -0.0011010, -0.0010450, -0.0010610, 0.0019345, 0.0007440)
TEN_AT_1X = {"seeds": 2, "width": 1.0}
MEASURED: list[Measured] = [
    Measured(TEN_AT_1X, "mean", TEN_AT_1X_DRAWS, "benchmarks/README.md#the-submissions-accuracy"),
    # The default, 5 members at 1.5x width: three holdout runs (seeds 0 and 1 on a Xeon, seed 0 on an
    # EPYC), each paired with a 10-member run on the same rows; its gap minus theirs: +0.054, +0.095 and
    # -0.036 pt. So its gap is their draws (which include the test rows' true labels) shifted by the mean
    # difference: one member scores each out-of-fold row, all five each test row, so the CV lags further.
    Measured({}, "mean", TEN_AT_1X_DRAWS, "benchmarks/README.md#the-submissions-accuracy", 0.00038),
    # `--recipe quick`, 3 members at 1x: holdout seeds 0, 1 and 2, paired with 10-member runs on the
    # same rows, its gap minus theirs: +0.015, +0.116 and -0.033 pt (its CV, from members on two thirds
    # of the rows, lags further behind its submission).
    Measured(RECIPES["quick"], "mean", TEN_AT_1X_DRAWS, "benchmarks/README.md#the-submissions-accuracy", 0.00033),
    # 5 members at 1x (`--width 1`): holdout seeds 0 and 1, paired with 10-member runs on the same
    # rows, its gap minus theirs: +0.012 and +0.089 pt.
    Measured({"width": 1.0}, "mean", TEN_AT_1X_DRAWS, "benchmarks/README.md#the-submissions-accuracy", 0.00050),
    # `--recipe best`, holdout seed 0 only: its gap there (+0.217 pt) is the 10-member run's (+0.182 pt)
    # on the same rows plus 0.036 pt, so its gap is their draws shifted by that difference.
    Measured(RECIPES["best"], "mean", TEN_AT_1X_DRAWS, "benchmarks/README.md#the-submissions-accuracy", 0.00036),
]


def _recipe(settings: TrainSettings) -> TrainSettings:
    """The settings that shape a predictor, with automatic choices resolved as on a CPU."""
    resolved = settings.resolved(gpu=False)
    return dataclasses.replace(resolved, **{name: getattr(TrainSettings(), name) for name in NOT_RECIPE})


def measured_gap(settings: TrainSettings, predictor: str = "mean") -> Measured | None:
    """The measured gap of the recipe of `settings` predicting with `predictor` ("mean", "tta", "oof"),
    or None if never measured."""
    recipe = _recipe(settings)
    for measured in MEASURED:
        if measured.predictor == predictor and _recipe(TrainSettings(**measured.recipe)) == recipe:
            return measured
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
    accuracy = min(1.0, cv_accuracy + found.gap)
    half = 2 * math.sqrt(found.error**2 + accuracy * (1 - accuracy) / rows)
    return {
        "accuracy": accuracy,
        "low": max(0.0, accuracy - half),
        "high": min(1.0, accuracy + half),
        "rows": rows,
        "gap_to_cv": found.gap,
        "draws": len(found.draws),
        "predictor": predictor,
        "measured": found.source,
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
        f"{expected['gap_to_cv']:+.2%}, the gap measured for this recipe on rows nothing trained on, "
        f"over {expected.get('draws', 2)} runs ({why}). "
        f"Kaggle's public score uses about {PUBLIC_ROWS:,} test rows, so it alone wanders about "
        f"+/-{noise:.2%} around that: two submissions closer than that are not told apart"
    )
