"""Nothing damaged is trusted: every file of a run is checked when read back, named in one line when it
fails, and repaired by the train command where that is safe; one train per run folder at a time."""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from competition import backend, locks
from competition.errors import UserError
from competition.runs.folder import Run
from competition.runs.identity import same_run
from competition.training.settings import TrainSettings
from tests.conftest import SHARED_RUN, TINY, assert_clean_failure, run_cli

backend.select("tensorflow")
from competition.scoring import predict as predicting  # noqa: E402
from competition.training import train as training  # noqa: E402


@pytest.fixture
def run_copy(trained_run, tmp_path, monkeypatch) -> tuple[Path, Path]:
    """A private copy of the shared trained run (2 folds x 2 seeds), free to damage."""
    workspace, run_dir = trained_run
    copy = tmp_path / "ws"
    shutil.copytree(workspace, copy)
    monkeypatch.setenv("KAGGLE_MNIST_WORKSPACE", str(copy))
    monkeypatch.chdir(copy)
    return copy, copy / "ensembles" / run_dir.name


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
    assert_clean_failure(result, needle, "kaggle-mnist train --folds 2 --epochs 2 --batch-size 16")
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


@pytest.mark.slow
def test_a_kill_while_saving_the_model_resumes_from_the_backup(workspace, tmp_path, monkeypatch):
    from competition import data, storage
    from tests import digits

    digits.write_csvs(tmp_path / "csvs", n_train=600, n_test=40)
    data.fetch(tmp_path / "csvs", log=lambda _: None)
    settings = TrainSettings(**{**TINY, "epochs": 2})
    real = storage.write_atomic

    def killed_saving_model(path, writer):
        if Path(path).name == "model.keras":
            raise KeyboardInterrupt
        return real(path, writer)

    monkeypatch.setattr(storage, "write_atomic", killed_saving_model)
    # One member is enough: the other would take the same path.
    with pytest.raises(KeyboardInterrupt):
        training.train(settings, quiet=True, only=["f0-s0"])
    monkeypatch.undo()
    monkeypatch.chdir(workspace)
    (run_dir,) = (workspace / "ensembles").glob("2*")
    backup = run_dir / "members" / "f0-s0" / "backup" / "current" / "state.json"
    assert json.loads(backup.read_text())["epochs_done"] == settings.epochs  # every epoch kept
    assert training.train(settings, quiet=True, only=["f0-s0"]) == run_dir
    assert len(Run.history(run_dir / "members" / "f0-s0")) == settings.epochs
    uninterrupted = training.train(settings, fresh=True, quiet=True, only=["f0-s0"])
    test = "members/f0-s0/test.npy"
    np.testing.assert_array_equal(np.load(run_dir / test), np.load(uninterrupted / test))


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


def test_predict_images_skips_a_huge_picture_and_quotes_paths(run_copy, tmp_path, monkeypatch):
    from PIL import Image

    from competition.scoring import images

    workspace, _ = run_copy
    folder = tmp_path / "pics, mine"
    folder.mkdir()
    digit = np.zeros((28, 28), dtype=np.uint8)
    digit[6:22, 12:16] = 255
    Image.fromarray(digit).save(folder / 'a "one".png')
    Image.fromarray(np.zeros((200, 200), dtype=np.uint8)).save(folder / "huge.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # 200 x 200 is over twice that: a "bomb"
    out = tmp_path / "out.csv"
    predictions = images.predict_images([folder], csv=out)
    by_name = {p.path.name: p for p in predictions}
    assert by_name["huge.png"].error.startswith("too large to read")
    assert by_name['a "one".png'].label is not None
    import csv

    with open(out, newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[1][0] == str(folder / 'a "one".png') and len(rows) == 2


def test_train_checks_the_free_space_before_training(workspace, tmp_path, monkeypatch):
    from collections import namedtuple

    from competition import data, storage
    from tests import digits

    digits.write_csvs(tmp_path / "csvs", n_train=600, n_test=40)
    data.fetch(tmp_path / "csvs", log=lambda _: None)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(storage.shutil, "disk_usage", lambda path: usage(10 << 30, 10 << 30, 5 << 20))
    with pytest.raises(OSError) as info:
        training.train(TrainSettings(**TINY), quiet=True)
    assert info.value.errno == errno.ENOSPC and "5 MB free" in str(info.value)
    assert not list((workspace / "ensembles").glob("*/"))  # refused before any run folder was made


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


def test_a_value_error_while_submitting_is_not_called_a_cut_download(monkeypatch, tmp_path):
    from competition.kaggle import api as kaggle_api

    class Client:
        def competition_submit(self, *args, **kwargs):
            raise ValueError("Invalid value for `ref`")

    monkeypatch.setattr(kaggle_api, "client", lambda: Client())
    with pytest.raises(UserError) as info:
        kaggle_api.submit(tmp_path / "s.csv", "m")
    assert "cut short" not in info.value.message
    assert info.value.message == "the kaggle client failed while submitting: Invalid value for `ref`"


def test_a_run_saved_with_a_retired_setting_at_its_neutral_value_is_the_same_run():
    today = {"settings": TrainSettings().to_dict(), "train_sha256": "a", "test_sha256": "b"}
    saved = {**today, "settings": {**today["settings"], "elastic": 0.0, "ema": False}}
    assert same_run(saved, today)
    bent = {**today, "settings": {**today["settings"], "elastic": 8.0}}  # trained otherwise than today's code
    assert not same_run(bent, today)


def test_a_run_saved_before_precise_bn_existed_is_continued_without_it():
    # Its config.json has no precise_bn: it was trained with the moving averages, and is continued so.
    today = {"settings": TrainSettings().to_dict(), "train_sha256": "a", "test_sha256": "b", "arrays_sha256": "c"}
    before = {**today, "settings": {k: v for k, v in today["settings"].items() if k != "precise_bn"}}
    old = TrainSettings.from_dict(before["settings"])
    assert old.precise_bn is False and TrainSettings().precise_bn is True
    assert "--no-precise-bn" in old.cli_options()
    assert not same_run(before, today) and not same_run(before, today, exact=True)
    off = {**today, "settings": {**today["settings"], "precise_bn": False}}
    assert same_run(before, off) and same_run(before, off, exact=True)
    # Continuing on this machine also takes the same thread count and cached arrays.
    assert not same_run(before, {**off, "arrays_sha256": "d"}, exact=True)
    assert not same_run(before, {**off, "settings": {**off["settings"], "cpu_threads": 7}}, exact=True)
    assert same_run(before, {**off, "settings": {**off["settings"], "cpu_threads": 7}})

