"""`kaggle-mnist predict`: blends and TTA never below the plain mean, the run's backend, unfinished
runs named."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from competition import backend, data
from competition.kaggle import submission
from competition.runs.folder import Run
from competition.scoring import ensemble
from tests.conftest import assert_clean_failure, run_cli

backend.select("tensorflow")

from competition.scoring import predict as predicting  # noqa: E402


def test_tta_chosen_by_too_few_folds_writes_the_plain_mean(run_copy, monkeypatch):
    workspace, run_dir = run_copy
    # Two folds, one for TTA and one against: no majority, so the file is the plain mean, named so,
    # and the accuracy reported is the plain mean's.
    monkeypatch.setattr(
        predicting,
        "choose_per_fold",
        lambda candidates, labels, folds: (candidates["tta"], {"0": "tta", "1": "mean"}),
    )
    result = predicting.predict(run_dir.name, tta=True, log=lambda _: None)
    assert Path(result["file"]).name == f"{run_dir.name}.csv"
    assert result["oof_accuracy"] == result["plain_mean_accuracy"] and result["changed_vs_mean"] == 0
    assert "too few folds" in result["blend"]


@pytest.mark.slow
def test_predict_uses_the_backend_of_the_run_it_predicts_with(run_copy):
    workspace, run_dir = run_copy
    # A newer, unfinished run trained with another backend must not decide how this one is loaded.
    newer = workspace / "ensembles" / "29991231-000000-bncnn-2x2"
    newer.mkdir()
    config = json.loads((run_dir / "config.json").read_text())
    config["settings"]["backend"] = "jax"
    (newer / "config.json").write_text(json.dumps(config))
    result = run_cli("predict", "--tta", cwd=workspace, env={"KAGGLE_MNIST_WORKSPACE": str(workspace)})
    assert result.returncode == 0, result.output
    assert f"Wrote {workspace / 'submissions'}" in result.stdout


def test_predict_says_when_a_newer_run_is_unfinished(run_copy):
    workspace, run_dir = run_copy
    env = {"KAGGLE_MNIST_WORKSPACE": str(workspace)}
    quiet = run_cli("predict", cwd=workspace, env=env)
    assert quiet.returncode == 0 and "unfinished" not in quiet.output, quiet.output
    # Two interrupted `train --fresh` after it, alike: the command continues the newest, named alone.
    for name in ("29991230-000000-bncnn-2x2", "29991231-000000-bncnn-2x2"):
        newer = workspace / "ensembles" / name
        newer.mkdir()
        (newer / "config.json").write_text((run_dir / "config.json").read_text())
    result = run_cli("predict", cwd=workspace, env=env)
    assert result.returncode == 0, result.output
    assert f"note: {newer.name}, started after this run, is unfinished; `kaggle-mnist train" in result.stdout
    assert result.stdout.count("note:") == 1, result.stdout
    assert f"Wrote {workspace / 'submissions' / run_dir.name}.csv" in result.stdout
    named = run_cli("predict", run_dir.name, cwd=workspace, env=env)  # asked for by name: no note
    assert named.returncode == 0 and "unfinished" not in named.output, named.output


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

