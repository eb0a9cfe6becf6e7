"""`kaggle-mnist predict`: the blend arithmetic, TTA and OOF weights on a real tiny run."""

from __future__ import annotations

import numpy as np
import pytest

from competition import backend, data
from competition.kaggle import submission
from competition.runs.folder import Run
from competition.scoring import ensemble, expected
from competition.training.settings import TrainSettings
from tests.conftest import assert_clean_failure, run_cli

backend.select("tensorflow")

from competition.scoring import predict as predicting  # noqa: E402


def test_greedy_weights_prefer_the_better_component():
    good = np.full(100, 0.9)
    bad = np.full(100, 0.2)
    weights = ensemble.greedy_weights(np.stack([bad, good]))
    assert weights.tolist() == [0.0, 1.0]
    # Two complementary components: each is sure where the other is not; the blend beats both alone.
    a = np.r_[np.full(50, 0.99), np.full(50, 0.3)]
    b = np.r_[np.full(50, 0.3), np.full(50, 0.99)]
    weights = ensemble.greedy_weights(np.stack([a, b]))
    assert weights.sum() == pytest.approx(1) and min(weights) > 0


def test_cross_fitted_blend_never_fits_on_the_rows_it_reports():
    labels = np.array([0, 1, 0, 1])
    folds = np.array([0, 0, 1, 1])
    good, bad = np.eye(2)[labels] * 0.9 + 0.05, np.eye(2)[1 - labels] * 0.9 + 0.05
    # "a" is right only on fold 0, "b" only on fold 1: weights fitted on the other fold pick the wrong one.
    a = np.where(folds[:, None] == 0, good, bad)
    b = np.where(folds[:, None] == 1, good, bad)
    blended, used = ensemble.cross_fitted_blend(np.stack([a, b]), labels, folds)
    assert used == {"0": [0.0, 1.0], "1": [1.0, 0.0]}
    assert ensemble.accuracy(blended, labels) == 0.0


@pytest.mark.parametrize("tta, weights", [(True, "mean"), (False, "oof"), (True, "oof")])
def test_tta_and_weights_never_report_below_the_plain_mean(in_run, tta, weights):
    workspace, run_dir = in_run
    result = predicting.predict(run_dir.name, tta=tta, weights=weights, log=lambda _: None)
    assert result["oof_accuracy"] >= result["plain_mean_accuracy"]
    assert result["members"] == 4
    assert submission.validation_errors(workspace / "submission.csv", 40) == []
    assert (workspace / "submission.csv").read_bytes() == open(result["file"], "rb").read()


def test_tta_views_are_the_mean_over_shifted_images(in_run):
    import keras

    workspace, run_dir = in_run
    components = predicting.member_components(Run(run_dir), tta=True, log=lambda _: None)
    assert sorted(components) == ["s0", "s0-tta", "s1", "s1-tta"]
    folder = run_dir / "members" / "f0-s1"
    model = keras.models.load_model(folder / "model.keras")
    test_images = data.load().test_images
    views = [
        model.predict(predicting.shift_images(test_images, dy, dx), verbose=0)
        for dy, dx in predicting.TTA_SHIFTS
    ]
    expected = ensemble.average([np.load(folder / "test.npy"), *views])
    other = run_dir / "members" / "f1-s1"
    other_model = keras.models.load_model(other / "model.keras")
    other_views = [
        other_model.predict(predicting.shift_images(test_images, dy, dx), verbose=0)
        for dy, dx in predicting.TTA_SHIFTS
    ]
    expected_other = ensemble.average([np.load(other / "test.npy"), *other_views])
    np.testing.assert_allclose(components["s1-tta"][1], (expected + expected_other) / 2, atol=1e-5)
    # The plain components are exactly the members' saved predictions.
    np.testing.assert_allclose(
        ensemble.average([components["s0"][0], components["s1"][0]]),
        np.load(run_dir / "oof_probs.npy"),
        atol=1e-6,
    )


def test_a_worse_blend_falls_back_to_the_plain_mean(in_run, monkeypatch):
    _, run_dir = in_run
    monkeypatch.setattr(
        ensemble, "cross_fitted_blend", lambda stack, labels, folds: (np.eye(10)[(labels + 1) % 10], {})
    )
    result = predicting.predict(run_dir.name, weights="oof", log=lambda _: None)
    assert "did not beat it" in result["blend"]
    assert result["oof_accuracy"] == result["plain_mean_accuracy"] and result["changed_vs_mean"] == 0


def test_unknown_weights_is_one_line(in_run):
    workspace, _ = in_run
    assert_clean_failure(
        run_cli("predict", "--weights", "magic", cwd=workspace), "'magic' is not one of 'mean', 'oof'"
    )


def test_choose_per_fold_never_fits_on_the_fold_it_reports():
    from competition.scoring.predict import choose_per_fold

    labels = np.array([0, 1, 0, 1])
    folds = np.array([0, 0, 1, 1])
    good = np.eye(2)[labels].astype(float)
    bad = np.eye(2)[1 - labels].astype(float)
    # "a" is right only on fold 0, "b" only on fold 1: a choice made on the other fold is wrong each time.
    a = np.where(folds[:, None] == 0, good, bad)
    b = np.where(folds[:, None] == 1, good, bad)
    chosen, choice = choose_per_fold({"a": a, "b": b}, labels, folds)
    assert choice == {"0": "b", "1": "a"}
    assert (np.argmax(chosen, 1) == labels).mean() == 0.0


def test_shift_images_moves_and_fills_black():
    from competition.scoring.predict import shift_images

    image = np.zeros((1, 4, 4), dtype=np.uint8)
    image[0, 0, 0] = 255
    assert shift_images(image, 1, 0)[0, 1, 0] == 255 and shift_images(image, 1, 0)[0, 0, 0] == 0
    assert shift_images(image, 0, -1).sum() == 0  # moved out of the frame


def test_submit_finds_the_blend_and_its_own_accuracy(in_run):
    workspace, run_dir = in_run
    result = predicting.predict(run_dir.name, weights="oof", log=lambda _: None)
    run_id, accuracy, _ = submission.run_of(workspace / "submission.csv")
    assert run_id == run_dir.name and accuracy == pytest.approx(result["oof_accuracy"])


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
    # The default recipe is measured: a fresh user's run gets a figure, not only advice.
    assert expected.expectation(TrainSettings(cpu_threads=1), 0.996, 28_000) is not None


def test_the_expected_range_covers_every_measured_draw_of_the_default():
    """The range `run` prints for the default recipe covers each submission it was measured on: the
    two holdout runs (their own CV) and the two runs scored on the true test labels."""
    measured = [(0.995565, 0.997381, 8_400), (0.996220, 0.995119, 8_400)]
    measured += [(0.996405, 0.99536, 28_000), (0.996381, 0.99532, 28_000)]
    for cv, truth, rows in measured:
        found = expected.expectation(TrainSettings(cpu_threads=1), cv, rows)
        assert found["low"] <= truth <= found["high"], (cv, truth, found)


def test_the_expected_range_covers_the_wider_members_holdout_runs():
    """5 members at 1.5x width (`--seeds 1 --width 1.5`): its range covers both its holdout runs."""
    for cv, truth in [(0.995506, 0.997857), (0.996220, 0.996071)]:
        found = expected.expectation(TrainSettings(cpu_threads=1, seeds=1, width=1.5), cv, 8_400)
        assert found is not None and found["low"] <= truth <= found["high"], (cv, truth, found)
