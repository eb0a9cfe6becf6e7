"""A run's folder: damaged files named in one line, repaired by the command that trained the run."""

from __future__ import annotations

import json
import shutil
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest

from competition import backend, locks
from competition.errors import UserError
from competition.runs.folder import Run
from competition.training.settings import TrainSettings
from tests.conftest import SAVED_BEFORE, SHARED_RUN, assert_clean_failure, run_cli

backend.select("tensorflow")

from competition.scoring import predict as predicting  # noqa: E402
from competition.training import train as training  # noqa: E402


@pytest.fixture
def trained_copy(run_copy) -> tuple[TrainSettings, Path]:
    """The copy of the shared run, and the settings that train it (to repair or continue it)."""
    return TrainSettings(**SHARED_RUN), run_copy[1]


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def zero(path: Path) -> None:
    path.write_bytes(bytes(path.stat().st_size))


@pytest.mark.parametrize(
    "damage, command, needle",
    [
        (lambda r: (r / "metrics.json").write_text("{not json"), ["evaluate"], "metrics.json is damaged"),
        (lambda r: (r / "metrics.json").write_text("{not json"), ["report"], "metrics.json is damaged"),
        (lambda r: zero(r / "test_probs.npy"), ["predict"], "test_probs.npy is damaged (its checksum"),
        (lambda r: zero(r / "oof_probs.npy"), ["evaluate"], "oof_probs.npy is damaged (its checksum"),
        (lambda r: truncate(r / "members/f1-s0/test.npy"), ["predict", "--weights", "oof"], "f1-s0/test.npy"),
        (lambda r: (r / "members/f0-s1/oof.npz").unlink(), ["predict", "--tta"], "f0-s1/oof.npz is missing"),
        (lambda r: (r / "folds.npy").unlink(), ["predict"], "folds.npy is missing"),
    ],
    ids=[
        "metrics-json",
        "metrics-json-report",
        "test-probs",
        "oof-probs",
        "member-test",
        "member-oof",
        "folds",
    ],
)
def test_damaged_run_files_are_named_in_one_line(run_copy, damage, command, needle):
    workspace, run_dir = run_copy
    damage(run_dir)
    result = run_cli(*command, cwd=workspace, env={"KAGGLE_MNIST_WORKSPACE": str(workspace)})
    # The file, and the command that repairs it (the run's own train command, retraining only the damage).
    assert_clean_failure(result, needle, "kaggle-mnist train --folds 2 --seeds 2 --epochs 2 --batch-size 16")
    assert "this is a bug" not in result.stderr


def test_a_lost_config_json_is_restored_from_the_manifest(run_copy):
    workspace, run_dir = run_copy
    original = (run_dir / "config.json").read_text()
    (run_dir / "config.json").unlink()
    assert Run.open(run_dir.name).settings.seeds == 2
    assert json.loads((run_dir / "config.json").read_text()) == json.loads(original)


def test_a_run_that_cannot_be_identified_is_refused_not_passed_over(run_copy):
    workspace, run_dir = run_copy
    (run_dir / "config.json").write_text("garbage")
    (run_dir / "manifest.json").unlink()
    (run_dir / "metrics.json").unlink()
    with pytest.raises(UserError, match=f"{run_dir / 'config.json'} is damaged .* move {run_dir} out of"):
        Run.open(run_dir.name)
    # train would otherwise quietly start a second run beside the broken one.
    with pytest.raises(UserError, match="cannot be identified"):
        training.train(TrainSettings(folds=2, seeds=2, epochs=2, batch_size=16), quiet=True)
    assert sorted(p.name for p in (workspace / "ensembles").iterdir() if not p.name.startswith(".")) == [
        run_dir.name
    ]


def test_train_repairs_only_what_is_damaged(trained_copy, capsys):
    settings, run_dir = trained_copy
    reference = np.load(run_dir / "test_probs.npy")
    cv = Run(run_dir).metrics["cv_accuracy"]
    model = run_dir / "members" / "f0-s0" / "model.keras"
    model_time = model.stat().st_mtime_ns
    zero(run_dir / "members" / "f0-s0" / "test.npy")  # predictions: predict again with its model
    (run_dir / "members" / "f1-s0" / "model.keras").write_bytes(b"not a model")  # the model: train again
    (run_dir / "metrics.json").write_text("{")
    capsys.readouterr()

    assert training.train(settings, quiet=True) == run_dir  # the same command: the same run
    out = " ".join(capsys.readouterr().out.split())  # the console wraps long lines
    assert (
        f"Member f0-s0 of {run_dir.name}: test.npy damaged or missing; predicting again with its model" in out
    )
    assert f"Member f1-s0 of {run_dir.name}: model.keras damaged or missing; training it again" in out
    assert model.stat().st_mtime_ns == model_time
    # Deterministic training: the repaired run is the run it was.
    np.testing.assert_array_equal(np.load(run_dir / "test_probs.npy"), reference)
    assert Run.open(run_dir.name).metrics["cv_accuracy"] == cv
    # And a healthy run is left alone.
    training.train(settings, quiet=True)
    assert "already trained" in capsys.readouterr().out


@pytest.mark.parametrize("damage", ["deleted", "zeroed"])
def test_a_lost_or_damaged_folds_npy_is_rebuilt_by_the_command_that_trained_the_run(trained_copy, capsys, damage):
    """The folds follow from split_seed and the labels, and manifest.json holds their checksum: the train
    command rebuilds them, checks them, and leaves the run as it was; predict works again."""
    settings, run_dir = trained_copy
    folds = run_dir / "folds.npy"
    before = {p.name: p.read_bytes() for p in run_dir.glob("*.npy")}
    folds.unlink() if damage == "deleted" else zero(folds)
    capsys.readouterr()
    assert training.train(settings, quiet=True) == run_dir
    out = " ".join(capsys.readouterr().out.split())
    assert "folds.npy" in out and "rebuilt from the run's settings and data" in out and "already trained" in out
    assert {p.name: p.read_bytes() for p in run_dir.glob("*.npy")} == before  # bit for bit
    predicting.predict(run_dir.name, log=lambda *a: None)


def test_folds_that_cannot_be_rebuilt_are_refused_in_one_line(trained_copy):
    """Rebuilt folds that do not match the recorded checksum (here: other labels) are not trusted."""
    settings, run_dir = trained_copy
    (run_dir / "folds.npy").unlink()
    run = Run(run_dir)
    labels = np.load(run_dir / "oof_labels.npy")
    with pytest.raises(UserError, match="folds.npy is missing, and the folds rebuilt .* do not match"):
        run.repair(np.roll(labels, 1), log=lambda *a: None)
    assert not (run_dir / "folds.npy").exists()


def test_a_deleted_config_json_resumes_the_same_run(trained_copy):
    settings, run_dir = trained_copy
    (run_dir / "config.json").unlink()
    assert training.train(settings, quiet=True) == run_dir
    assert len([p for p in run_dir.parent.iterdir() if not p.name.startswith(".")]) == 1


def test_a_second_train_on_the_same_run_is_refused(trained_copy):
    settings, run_dir = trained_copy
    (run_dir / "metrics.json").unlink()  # as if still training
    with locks.hold(run_dir / ".lock", "test"):
        with pytest.raises(UserError, match=r"another kaggle-mnist process \(pid \d+\) is working on run"):
            training.train(settings, quiet=True)
    # Nothing was touched meanwhile: the first process finishes the run as if alone.
    history = (run_dir / "members" / "f0-s0" / "history.csv").read_text().splitlines()
    assert len(history) == 1 + settings.epochs
    assert training.train(settings, quiet=True) == run_dir and (run_dir / "metrics.json").is_file()


def test_a_run_saved_by_an_earlier_version_works_with_every_command(saved_before, tmp_path):
    """A run folder written before the package's layout changed (tests/fixtures/saved-before): its
    models load by their registered layer names, and predict, evaluate, report, predict-images and the
    train command that continues it all work on it."""
    from competition import data, storage
    from tests import digits
    from tests.conftest import SAVED_LOCAL_RUN

    ws, run_id = saved_before, SAVED_LOCAL_RUN
    run = Run(ws / "ensembles" / run_id)
    assert run.identity()["train_sha256"] == data.load().train_sha256  # the data it was trained on
    predicted = run_cli("predict", run_id, cwd=ws)
    assert predicted.returncode == 0, predicted.output
    # The same probabilities, so the same submission as the earlier version wrote.
    before = (SAVED_BEFORE / "submissions" / f"{run_id}.csv").read_bytes()
    assert (ws / "submissions" / f"{run_id}.csv").read_bytes() == before
    evaluated = run_cli("evaluate", run_id, "--json", cwd=ws)
    assert evaluated.returncode == 0 and json.loads(evaluated.stdout)["rows"] == 300, evaluated.output
    reported = run_cli("report", run_id, cwd=ws)
    assert reported.returncode == 0 and (run.dir / "report" / "report.md").is_file(), reported.output
    from PIL import Image

    picture = tmp_path / "seven.png"
    Image.fromarray(digits.make_images(np.array([7]))[0]).save(picture)
    images = run_cli("predict-images", str(picture), "--run", run_id, cwd=ws)
    tta = run_cli("predict", run_id, "--tta", cwd=ws)
    saved_by = storage.read_json(run.dir / "manifest.json")["versions"]["keras"]
    if _version(version("keras")) >= _version(saved_by):
        assert images.returncode == 0, images.output
        assert tta.returncode == 0, tta.output
    else:  # Kaggle's image: an older Keras than the one that saved these models says so, in one line
        assert_clean_failure(images, f"was saved by Keras {saved_by}, newer than this Keras")
        assert_clean_failure(tta, f"was saved by Keras {saved_by}, newer than this Keras")
    # Continued: its second member and its scores removed, the command that trained it trains that
    # member again, leaves the first as it was, and finishes the run.
    if backend.cpu_cores() != run.settings.cpu_threads:
        pytest.skip("the saved run trained on 2 cores: its thread count is part of its identity")
    first = {p.name: p.read_bytes() for p in run.member_dir(0, 0).iterdir()}
    shutil.rmtree(run.member_dir(1, 0))
    (run.dir / "metrics.json").unlink()
    command = run.train_command().split()[1:]
    assert "--no-precise-bn" not in command
    continued = run_cli(*command, "--quiet", cwd=ws, timeout=300)
    assert continued.returncode == 0 and "Continuing the unfinished run" in continued.stdout, continued.output
    assert storage.read_json(run.dir / "metrics.json")["run_id"] == run_id
    assert {p.name: p.read_bytes() for p in run.member_dir(0, 0).iterdir()} == first


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".")[:3] if part.isdigit())

