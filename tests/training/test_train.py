"""`kaggle-mnist train` on tiny synthetic data: the run folder, determinism, part runs, a kill -9,
the free-space check, the JAX backend."""

from __future__ import annotations

import dataclasses
import errno
import signal
import time

import numpy as np
import pytest

from competition import backend, data, storage
from competition.errors import UserError
from competition.runs.folder import Run
from competition.training.settings import TrainSettings
from tests.conftest import TINY, member_files, run_cli, start_cli

backend.select("tensorflow")

import keras  # noqa: E402

from competition.training import train as training  # noqa: E402


def test_run_folder_is_complete_and_loadable(tiny_data):
    # BatchNorm's inference statistics need ~60 steps to be useful: 2 folds x 300 rows, batch 16, 4 epochs.
    settings = TrainSettings(**{**TINY, "epochs": 4, "batch_size": 16, "subset": 0})
    run_dir = training.train(settings, quiet=True)
    assert run_dir.parent == tiny_data / "ensembles"
    for name in (
        "config.json",
        "manifest.json",
        "folds.npy",
        "metrics.json",
        "oof_probs.npy",
        "test_probs.npy",
    ):
        assert (run_dir / name).is_file(), name
    config = storage.read_json(run_dir / "config.json")
    resolved = settings.resolved(gpu=False, cpu_bfloat16=backend.cpu_bfloat16())
    # A tiny run trains in one process on every core; the thread and worker counts are part of the
    # run's identity.
    resolved = dataclasses.replace(resolved, cpu_threads=backend.cpu_cores(), cpu_workers=1)
    assert TrainSettings.from_dict(config["settings"]) == resolved
    assert config["settings"]["precision"] in ("float32", "bfloat16")
    assert config["settings"]["epoch_validation"] is False  # CPU default: the fold is scored once, at the end
    assert len(config["train_sha256"]) == 64
    manifest = storage.read_json(run_dir / "manifest.json")
    assert manifest["backend"] == "tensorflow" and "keras" in manifest["versions"]
    metrics = storage.read_json(run_dir / "metrics.json")
    assert len(metrics["members"]) == 2 and set(metrics["fold_accuracy"]) == {"0", "1"}
    # The synthetic digits are easy: this must learn far beyond chance (10%).
    assert metrics["cv_accuracy"] > 0.6, metrics["cv_accuracy"]
    for info in metrics["members"]:
        folder = run_dir / "members" / info["name"]
        model = keras.models.load_model(folder / "model.keras")
        with np.load(folder / "oof.npz") as oof:
            again = model.predict(data.load().train_images[oof["rows"]], verbose=0)
            assert len(oof["rows"]) == 300
            np.testing.assert_allclose(again, oof["probs"], atol=1e-5)
        assert np.load(folder / "test.npy").shape == (40, 10)
        history = Run.history(folder)
        assert len(history) == 4 and info["images_per_second"] > 0
        assert np.isnan(history[0]["val_accuracy"]) and not (folder / "best.keras").exists()
        assert not (folder / "backup").exists()
    oof, labels = np.load(run_dir / "oof_probs.npy"), np.load(run_dir / "oof_labels.npy")
    assert oof.shape == (600, 10) and np.allclose(oof.sum(axis=1), 1, atol=1e-4)
    # The CV figure is the accuracy of the saved out-of-fold probabilities on the saved labels.
    assert metrics["cv_accuracy"] == pytest.approx(float(np.mean(oof.argmax(axis=1) == labels)))
    assert Run.latest().dir == run_dir
    # The run records the cached arrays it was trained on, as verified when they were loaded.
    config = storage.read_json(run_dir / "config.json")
    assert config["arrays_sha256"] == data.load().arrays_sha256
    assert config["arrays_sha256"]["train_labels"] == storage.sha256_file(
        tiny_data / "data" / "digit-recognizer" / "cache" / "train_labels.npy"
    )
    assert not list((tiny_data / "ensembles").glob(".*partial*"))


@pytest.mark.slow
def test_a_run_in_parts_equals_one_in_one_go_and_a_rerun_trains_nothing(tiny_data, capsys):
    settings = TrainSettings(**TINY)
    run_dir = training.train(settings, quiet=True, only=["f1-s0"])  # `--members f1-s0`
    assert sorted(p.name for p in (run_dir / "members").iterdir()) == ["f1-s0"]
    assert not (run_dir / "metrics.json").exists()
    assert "1 of 2 members trained" in capsys.readouterr().out
    part = member_files(run_dir)
    assert "members/f1-s0/member.json" in part
    assert training.train(settings, quiet=True) == run_dir  # the rest: f0-s0, then the run is scored
    assert (run_dir / "metrics.json").is_file()
    assert {k: v for k, v in member_files(run_dir).items() if k.startswith("members/f1-s0/")} == part
    files = member_files(run_dir)
    assert training.train(settings, quiet=True) == run_dir  # the same command: already done
    assert member_files(run_dir) == files
    # The same seed from scratch, in one go: the same numbers to the last bit.
    whole = training.train(settings, fresh=True, quiet=True)
    assert whole != run_dir
    for name in ("test_probs.npy", "oof_probs.npy"):
        np.testing.assert_array_equal(np.load(run_dir / name), np.load(whole / name))
    other = training.train(dataclasses.replace(settings, seed=7), quiet=True, only=["f0-s0"])
    test = "members/f0-s0/test.npy"
    assert not np.array_equal(np.load(run_dir / test), np.load(other / test))
    with pytest.raises(UserError, match="no member f2-s0 in a 2x1 run"):
        training.train(settings, quiet=True, fresh=True, only=["f2-s0"])


@pytest.mark.slow
def test_kill_9_after_the_first_member_keeps_it(tiny_data):
    """The real thing: the CLI in its own process, killed with SIGKILL, then run again."""
    args = [
        "train",
        "--folds",
        "2",
        "--seeds",
        "1",
        "--epochs",
        "2",
        "--batch-size",
        "32",
        "--subset",
        "300",
        "--quiet",
    ]
    proc = start_cli(args, cwd=tiny_data)
    deadline = time.time() + 180
    first = None
    while time.time() < deadline and proc.poll() is None:
        done = list((tiny_data / "ensembles").glob("*/members/f0-s0/member.json"))
        if done:
            first = done[0].parent
            break
        time.sleep(0.2)
    assert first is not None, "the first member never finished"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    run_dir = first.parent.parent
    assert not (run_dir / "metrics.json").exists()
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in first.iterdir() if p.is_file()}
    rerun = run_cli(*args, cwd=tiny_data, timeout=300)
    assert rerun.returncode == 0, rerun.output
    assert "Continuing the unfinished run" in rerun.stdout
    assert (run_dir / "metrics.json").is_file()
    after = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in first.iterdir() if p.is_file()}
    assert after == before
    assert "member 1/2" not in rerun.stdout and "member 2/2" in rerun.stdout  # f0-s0 not trained again


def test_a_subset_larger_than_train_csv_is_refused_before_any_run_exists(tiny_data):
    # Training on 600 rows while config.json says 999,999 would make the run lie about itself.
    with pytest.raises(UserError, match="--subset 999,999 is more than train.csv's 600 rows"):
        training.train(TrainSettings(**{**TINY, "subset": 999_999}), quiet=True)
    assert not (tiny_data / "ensembles").exists() or not any((tiny_data / "ensembles").iterdir())


@pytest.mark.slow
def test_the_jax_backend_trains_and_predicts(tiny_data, tmp_path):
    pytest.importorskip("jax")
    result = run_cli(
        "train",
        "--backend",
        "jax",
        "--folds",
        "2",
        "--seeds",
        "1",
        "--epochs",
        "1",
        "--subset",
        "300",
        "--batch-size",  # 150 rows per fold in whole batches: one training step for XLA to compile
        "50",
        "--width",  # the wider members compile as the default's do
        "1.5",
        "--quiet",
        cwd=tiny_data,
        timeout=600,
    )
    assert result.returncode == 0, result.output
    (run_dir,) = (tiny_data / "ensembles").glob("2*")
    assert Run(run_dir).backend == "jax"
    # The first member's compiled training step is kept in the user's cache, for the second to load.
    assert list((tmp_path / "home" / ".cache" / "kaggle-mnist" / "jax").iterdir())
    predicted = run_cli("predict", cwd=tiny_data, timeout=600)
    assert predicted.returncode == 0, predicted.output
    assert (tiny_data / "submission.csv").is_file()


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

