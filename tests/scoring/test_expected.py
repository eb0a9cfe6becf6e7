"""The expected submission accuracy: only a measured gap gives one, and its range covers the draws."""

from __future__ import annotations

import numpy as np
import pytest

from competition.scoring import expected
from competition.training.settings import RECIPES, TrainSettings


def test_the_cv_alone_gives_no_expected_score_only_a_measured_gap_does(monkeypatch):
    settings = TrainSettings(cpu_threads=1, precision="bfloat16", batch_size=64)
    monkeypatch.setattr(expected, "MEASURED", [])
    assert expected.expectation(settings, 0.996, 28_000) is None
    line = expected.explain(None, 0.996, 5, 2)
    assert "scored by 2 members, each test row by all 10" in line and "--holdout" in line

    draws = (-0.0013, -0.0007, -0.0010)  # mean -0.1 pt, spread 0.03 pt
    monkeypatch.setattr(expected, "MEASURED", [expected.Measured({}, "mean", draws, "measured here")])
    found = expected.expectation(settings, 0.996, 28_000)
    assert found["accuracy"] == pytest.approx(0.995) and found["draws"] == 3
    error = np.std(draws, ddof=1) * np.sqrt(1 + 1 / 3)  # one new run's gap, not only the mean's
    half = 2 * np.sqrt(error**2 + 0.995 * 0.005 / 28_000)
    assert (found["low"], found["high"]) == (pytest.approx(0.995 - half), pytest.approx(0.995 + half))
    # Fewer rows scored (a holdout), a wider range; another predictor or recipe, no figure.
    assert expected.expectation(settings, 0.996, 8_400)["low"] < found["low"]
    assert expected.expectation(settings, 0.996, 28_000, predictor="tta") is None
    assert expected.expectation(TrainSettings(epochs=30), 0.996, 28_000) is None
    assert expected.expectation(TrainSettings(holdout=8400, backend="jax"), 0.996, 8_400) is not None
    line = expected.explain(found, 0.996, 5, 2)
    assert "Expected submission accuracy 99.50%" in line and "-0.10%" in line and "over 3 runs" in line
    assert expected.public_noise(0.996) == pytest.approx(np.sqrt(0.996 * 0.004 / 7_000))


def test_every_measured_gap_names_a_recipe_a_predictor_and_where_it_was_measured():
    for measured in expected.MEASURED:
        TrainSettings(**measured.recipe)
        assert measured.predictor in ("mean", "tta", "oof", "oof-tta") and len(measured.draws) >= 2
        assert abs(measured.gap) < 0.01 and 0 < measured.error < 0.01
        assert measured.source.startswith("benchmarks/README.md#")
    # The default recipe is measured: a fresh user's run gets a figure, not only advice, and so does one
    # trained before batch-norm statistics were recomputed.
    assert expected.expectation(TrainSettings(cpu_threads=1), 0.996, 28_000) is not None
    assert expected.expectation(TrainSettings(cpu_threads=1, precise_bn=False), 0.996, 28_000) is not None


def test_the_expected_range_covers_every_measured_draw_of_ten_members_at_1x():
    """The range for 10 members at 1x width (the default until session 20) covers each submission it
    was measured on: the four holdout runs (their own CV) and the two scored on the true test labels."""
    measured = [(0.995565, 0.997381, 8_400), (0.996220, 0.995119, 8_400), (0.995565, 0.997500, 8_400)]
    measured += [(0.995923, 0.996667, 8_400)]
    measured += [(0.996405, 0.99536, 28_000), (0.996381, 0.99532, 28_000)]
    for cv, truth, rows in measured:
        found = expected.expectation(TrainSettings(cpu_threads=1, seeds=2, width=1.0), cv, rows)
        assert found["low"] <= truth <= found["high"], (cv, truth, found)


def test_the_expected_range_covers_the_default_recipes_holdout_runs():
    """The default, 5 members at 1.5x width: its range covers its three holdout runs."""
    for cv, truth in [(0.995506, 0.997857), (0.996220, 0.996071), (0.995923, 0.997500)]:
        found = expected.expectation(TrainSettings(cpu_threads=1), cv, 8_400)
        assert found is not None and found["low"] <= truth <= found["high"], (cv, truth, found)


def test_the_expected_range_covers_the_quick_recipes_holdout_runs():
    """`--recipe quick`, 3 members at 1x: its range covers its three holdout runs."""
    quick = TrainSettings(cpu_threads=1, **RECIPES["quick"])
    for cv, truth in [(0.994940, 0.997024), (0.995179, 0.995238), (0.995298, 0.995714)]:
        found = expected.expectation(quick, cv, 8_400)
        assert found is not None and found["low"] <= truth <= found["high"], (cv, truth, found)


def test_the_expected_range_covers_five_members_at_1x():
    """5 members at 1x (`--width 1`): its range covers its two holdout runs."""
    five = TrainSettings(cpu_threads=1, width=1.0)
    for cv, truth in [(0.995327, 0.997381), (0.995565, 0.995357)]:
        found = expected.expectation(five, cv, 8_400)
        assert found is not None and found["low"] <= truth <= found["high"], (cv, truth, found)
