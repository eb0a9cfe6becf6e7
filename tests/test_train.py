"""`kaggle-mnist train` on tiny synthetic data: run folder, architectures, determinism, resume."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from competition import backend, data, storage
from competition.errors import UserError
from competition.runs import Run
from competition.settings import TrainSettings
from tests import digits
from tests.conftest import ROOT, assert_clean_failure, run_cli, start_cli

backend.select("tensorflow")

import keras  # noqa: E402

from competition import train as training  # noqa: E402

TINY = dict(folds=2, seeds=1, epochs=1, batch_size=32, subset=300)


@pytest.fixture
def tiny_data(workspace, tmp_path):
    digits.write_csvs(tmp_path / "csvs", n_train=600, n_test=40)
    data.fetch(tmp_path / "csvs", log=lambda _: None)
    return workspace


def member_files(run_dir: Path) -> dict[str, int]:
    return {
        str(p.relative_to(run_dir)): p.stat().st_mtime_ns
        for p in (run_dir / "members").rglob("*")
        if p.is_file()
    }


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
    # A tiny run trains in one process on every core; the thread count is part of the run's identity.
    resolved = dataclasses.replace(resolved, cpu_threads=backend.cpu_cores())
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
    for member in metrics["members"]:
        folder = run_dir / "members" / member["name"]
        model = keras.models.load_model(folder / "model.keras")
        with np.load(folder / "oof.npz") as oof:
            again = model.predict(data.load().train_images[oof["rows"]], verbose=0)
            assert len(oof["rows"]) == 300
            np.testing.assert_allclose(again, oof["probs"], atol=1e-5)
        assert np.load(folder / "test.npy").shape == (40, 10)
        history = Run.history(folder)
        assert len(history) == 4 and member["images_per_second"] > 0
        assert np.isnan(history[0]["val_accuracy"]) and not (folder / "best.keras").exists()
        assert not (folder / "backup").exists()
    oof = np.load(run_dir / "oof_probs.npy")
    assert oof.shape == (600, 10) and np.allclose(oof.sum(axis=1), 1, atol=1e-4)
    assert Run.latest().dir == run_dir
    # The run records the cached arrays it was trained on, as verified when they were loaded.
    config = storage.read_json(run_dir / "config.json")
    assert config["arrays_sha256"] == data.load().arrays_sha256
    assert config["arrays_sha256"]["train_labels"] == storage.sha256_file(
        tiny_data / "data" / "digit-recognizer" / "cache" / "train_labels.npy"
    )
    assert not list((tiny_data / "ensembles").glob(".*partial*"))


@pytest.mark.parametrize("arch", ["bncnn", "m5", "lenet", "mlp"])
def test_each_architecture_builds_and_trains(tiny_data, arch):
    run_dir = training.train(TrainSettings(**{**TINY, "arch": arch, "subset": 200}), quiet=True)
    metrics = storage.read_json(run_dir / "metrics.json")
    # The CV figure is the accuracy of the saved out-of-fold probabilities on the saved labels.
    oof, labels = np.load(run_dir / "oof_probs.npy"), np.load(run_dir / "oof_labels.npy")
    assert metrics["cv_accuracy"] == pytest.approx(float(np.mean(oof.argmax(axis=1) == labels)))
    assert len(labels) == 200 and oof.shape == (200, 10)
    assert keras.models.load_model(run_dir / "members" / "f0-s0" / "model.keras").name == arch


def test_same_seed_same_predictions_and_a_rerun_trains_nothing(tiny_data):
    first = training.train(TrainSettings(**TINY), quiet=True)
    files = member_files(first)
    again = training.train(TrainSettings(**TINY), quiet=True)  # the same command: already done
    assert again == first and member_files(first) == files
    second = training.train(TrainSettings(**TINY), fresh=True, quiet=True)
    assert second != first
    np.testing.assert_array_equal(np.load(first / "test_probs.npy"), np.load(second / "test_probs.npy"))
    np.testing.assert_array_equal(np.load(first / "oof_probs.npy"), np.load(second / "oof_probs.npy"))
    other = training.train(TrainSettings(**{**TINY, "seed": 7}), quiet=True)
    assert not np.array_equal(np.load(first / "test_probs.npy"), np.load(other / "test_probs.npy"))


class Interrupt(keras.callbacks.Callback):
    """Ctrl-C after the first epoch of the given fold, once BackupAndRestore has saved that epoch."""

    def __init__(self, fold: int, folder: Path):
        super().__init__()
        self.fold, self.folder = fold, folder

    def on_epoch_end(self, epoch, logs=None):
        if self.folder.name.startswith(f"f{self.fold}-") and epoch == 0:
            raise KeyboardInterrupt


@pytest.mark.parametrize(
    "variant",
    [
        {"schedule": "exponential"},
        # Stateful callbacks: their counters and best weights must come back too.
        {"schedule": "plateau", "early_stopping": 1},
        # Killed while swapping backup folders: the previous complete epoch is used.
        {"mid_swap": True},
        # A per-step schedule and the weight average live in the optimizer's state.
        {"schedule": "cosine", "ema": True, "ema_momentum": 0.9, "label_smoothing": 0.1},
        # The backup's weights damaged on disk: not loaded; the member starts again from epoch 1.
        {"damaged_backup": True},
    ],
    ids=[
        "exponential",
        "plateau+early-stopping",
        "killed-mid-swap",
        "cosine+ema+smoothing",
        "damaged-backup",
    ],
)
def test_resume_after_interrupt_equals_an_uninterrupted_run(tiny_data, monkeypatch, variant):
    variant = dict(variant)
    mid_swap = variant.pop("mid_swap", False)
    damaged_backup = variant.pop("damaged_backup", False)
    settings = TrainSettings(**{**TINY, "epochs": 3, **variant})
    reference = training.train(settings, quiet=True)
    reference_probs = np.load(reference / "test_probs.npy")

    original = training.member_callbacks
    monkeypatch.setattr(
        training, "member_callbacks", lambda s, folder, *a: [*original(s, folder, *a), Interrupt(1, folder)]
    )
    with pytest.raises(KeyboardInterrupt):
        training.train(settings, fresh=True, quiet=True)
    monkeypatch.setattr(training, "member_callbacks", original)
    run_dir = max((tiny_data / "ensembles").glob("*/"), key=lambda p: p.name)
    assert run_dir != reference and not (run_dir / "metrics.json").exists()
    assert (run_dir / "members" / "f0-s0" / "member.json").is_file()
    backup = run_dir / "members" / "f1-s0" / "backup"
    assert (backup / "current" / "state.json").is_file()  # half-trained, resumable
    if mid_swap:
        (backup / "current").rename(backup / "previous")
        (backup / "next").mkdir()
        (backup / "next" / "latest.weights.h5").write_bytes(b"cut short")
    if damaged_backup:
        weights = backup / "current" / "latest.weights.h5"
        weights.write_bytes(bytes(weights.stat().st_size))
    # An unfinished run is not offered to later steps; the message says how to finish it.
    with pytest.raises(UserError, match=f"run {run_dir} is unfinished: run `kaggle-mnist train .*--epochs 3"):
        Run.open(run_dir.name)
    finished = {k: v for k, v in member_files(run_dir).items() if k.startswith("members/f0-s0/")}
    assert "members/f0-s0/test.npy" in finished

    resumed = training.train(settings, quiet=True)  # the same command again
    assert resumed == run_dir
    assert {k: v for k, v in member_files(run_dir).items() if k.startswith("members/f0-s0/")} == finished
    epochs = [row["epoch"] for row in Run.history(run_dir / "members" / "f1-s0")]
    reference_epochs = [row["epoch"] for row in Run.history(reference / "members" / "f1-s0")]
    assert epochs == reference_epochs and epochs[0] == 0
    np.testing.assert_array_equal(np.load(run_dir / "test_probs.npy"), reference_probs)


def test_members_spread_over_worker_processes_give_the_same_run(tiny_data):
    """The multi-GPU path (one process per GPU), run here with two CPU worker processes."""
    sequential = training.train(TrainSettings(**TINY), quiet=True)
    parallel = training.train(TrainSettings(**TINY), fresh=True, quiet=True, workers=2)
    assert parallel != sequential
    logs = sorted(p.name for p in (parallel / "logs").iterdir())
    assert logs == ["worker-0.log", "worker-1.log"]
    for name in ("oof_probs.npy", "test_probs.npy"):
        np.testing.assert_array_equal(np.load(sequential / name), np.load(parallel / name))


def rerun_continues(args: list[str], cwd: Path, env: dict[str, str]) -> None:
    """The same `kaggle-mnist` command again, as the user is told to: it continues the run and ends."""
    rerun = subprocess.run(
        [sys.executable, "-m", "competition", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert rerun.returncode == 0 and "Continuing the unfinished run" in rerun.stdout, (
        rerun.stdout + rerun.stderr
    )


def test_a_worker_stops_when_its_parent_is_gone():
    from competition import worker

    code = "from competition import worker; worker.stop_when_parent_goes(); import time; time.sleep(60)"
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    time.sleep(1)
    assert proc.poll() is None  # the parent is still there: the worker goes on
    proc.stdin.close()  # what the OS does when the parent dies
    assert proc.wait(timeout=30) == worker.ORPHANED
    assert "is gone: stopping" in proc.stdout.read()


def _processes_naming(text: str) -> list[int]:
    """Processes whose command line contains `text` (Linux's /proc)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text.encode() in cmdline.read_bytes():
                found.append(int(cmdline.parent.name))
        except OSError:
            continue  # it ended while we looked
    return found


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="lists processes through /proc")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_killing_train_stops_its_workers_and_the_run_continues(tiny_data, sig):
    """`kill`, a scheduler's SIGTERM or a dead notebook reach the parent alone, unlike Ctrl-C in a
    terminal: its workers must not train on without it, racing the rerun for the same files."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    args = ["train", "--folds", "2", "--seeds", "1", "--epochs", "4", "--batch-size", "32"]
    args += ["--subset", "300", "--workers", "2", "--quiet"]
    proc = start_cli(args, cwd=tiny_data, env=env)
    deadline = time.time() + 180
    histories = []
    while time.time() < deadline and not histories:
        histories = list((tiny_data / "ensembles").glob("*/members/*/history.csv"))
        time.sleep(0.2)
    run_dir = histories[0].parent.parent.parent
    assert len(_processes_naming(str(run_dir))) == 2  # both workers are training
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    if sig == signal.SIGTERM:
        assert proc.returncode == 143, out + err
        assert err.strip().splitlines()[-1].startswith("interrupted: run the same command again"), err
        assert "Traceback" not in out + err
    deadline = time.time() + 30
    while time.time() < deadline and _processes_naming(str(run_dir)):
        time.sleep(0.2)
    assert _processes_naming(str(run_dir)) == []
    if sig == signal.SIGKILL:  # the workers saw their parent go and said so in their logs
        for log in (run_dir / "logs").iterdir():
            assert log.read_text().strip().splitlines()[-1].endswith("is gone: stopping")
    assert not (run_dir / "metrics.json").exists()
    rerun_continues(args, tiny_data, env)
    assert (run_dir / "metrics.json").is_file()


def test_a_failing_worker_stops_the_run_with_one_line(tiny_data, monkeypatch, tmp_path):
    fake_python = tmp_path / "python"
    fake_python.write_text("#!/bin/sh\necho 'something broke on the GPU'\nexit 3\n")
    fake_python.chmod(0o755)
    monkeypatch.setattr(training.sys, "executable", str(fake_python))
    with pytest.raises(training.UserError, match="something broke on the GPU.*rerun the same command"):
        training.train(TrainSettings(**TINY), quiet=True, workers=2)


def test_automatic_batch_size_and_learning_rate():
    cpu, gpu = TrainSettings().resolved(gpu=False), TrainSettings().resolved(gpu=True)
    assert (cpu.batch_size, cpu.learning_rate) == (64, 2e-3)  # the cosine schedule's peak
    assert gpu.batch_size == 256 and gpu.learning_rate == pytest.approx(4e-3)
    old = TrainSettings(schedule="exponential").resolved(gpu=False)
    assert (old.batch_size, old.learning_rate) == (64, 1e-3)  # the 2018 recipe
    mine = TrainSettings(batch_size=32, learning_rate=5e-4).resolved(gpu=True)
    assert (mine.batch_size, mine.learning_rate) == (32, 5e-4)  # given values are kept
    assert TrainSettings(batch_size=16).resolved(gpu=False).learning_rate == pytest.approx(1e-3)
    # No room for a warmup epoch in a 1-epoch run; given longer warmups are cut to leave one epoch.
    assert TrainSettings(epochs=1).resolved(gpu=False).warmup_epochs == 0
    assert TrainSettings(epochs=3, warmup_epochs=5).resolved(gpu=False).warmup_epochs == 2
    with pytest.raises(ValueError, match="--warmup-epochs must be 0 or more"):
        TrainSettings(warmup_epochs=-1)
    with pytest.raises(ValueError, match="--dropout must be at least 0 and below 1"):
        TrainSettings(dropout_rate=1.0)
    # A changed dropout is part of the command that trains the run again (config.json -> options).
    assert "--dropout 0.25" in TrainSettings(dropout_rate=0.25).cli_options()


def test_automatic_precision_and_epoch_validation():
    cpu = TrainSettings().resolved(gpu=False, cpu_bfloat16=False)
    assert (cpu.precision, cpu.epoch_validation) == ("float32", False)
    assert TrainSettings().resolved(gpu=False, cpu_bfloat16=True).precision == "bfloat16"
    # Only oneDNN (the TensorFlow backend) makes bfloat16 fast on a CPU.
    assert TrainSettings(backend="jax").resolved(gpu=False, cpu_bfloat16=True).precision == "float32"
    gpu = TrainSettings().resolved(gpu=True, cpu_bfloat16=True)
    assert (gpu.precision, gpu.epoch_validation) == ("mixed", True)
    assert TrainSettings(precision="float32").resolved(gpu=True).precision == "float32"  # given: kept
    assert TrainSettings(epoch_validation=True).resolved(gpu=False).epoch_validation is True
    assert TrainSettings(epoch_validation=False).resolved(gpu=True).epoch_validation is False
    # The plateau schedule and early stopping read every epoch's validation score.
    assert TrainSettings(schedule="plateau", epoch_validation=False).resolved(gpu=False).epoch_validation
    assert TrainSettings(early_stopping=3).resolved(gpu=False).epoch_validation is True
    with pytest.raises(ValueError, match="--precision must be one of"):
        TrainSettings(precision="float16")


def test_cosine_schedule_warms_up_and_ends_at_zero(tiny_data):
    settings = TrainSettings(**{**TINY, "epochs": 4, "schedule": "cosine", "learning_rate": 2e-3})
    run_dir = training.train(settings, quiet=True)
    rates = [row["learning_rate"] for row in Run.history(run_dir / "members" / "f0-s0")]
    # Logged at each epoch's end: the peak after the 1-epoch warmup, then down to zero at the last step.
    assert rates[0] == pytest.approx(2e-3, rel=1e-3)
    assert rates[1] > rates[2] > rates[3] and rates[3] == pytest.approx(0.0, abs=1e-9)


def test_weight_average_is_what_the_member_predicts_with(tiny_data):
    plain = training.train(TrainSettings(**{**TINY, "epochs": 2}), quiet=True)
    averaged = training.train(
        TrainSettings(**{**TINY, "epochs": 2, "ema": True, "ema_momentum": 0.9}), quiet=True
    )
    a = keras.models.load_model(plain / "members" / "f0-s0" / "model.keras")
    b = keras.models.load_model(averaged / "members" / "f0-s0" / "model.keras")
    # Same seed, same batches, same updates: only the averaging at the end differs.
    differs = [not np.allclose(x, y) for x, y in zip(a.get_weights(), b.get_weights(), strict=True)]
    assert any(differs)
    with np.load(averaged / "members" / "f0-s0" / "oof.npz") as oof:
        again = b.predict(data.load().train_images[oof["rows"]], verbose=0)
        np.testing.assert_allclose(again, oof["probs"], atol=1e-5)


def test_label_smoothing_loss():
    from competition.model import SmoothedCrossentropy

    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], dtype=np.float32)
    labels = np.array([0, 2])
    loss = SmoothedCrossentropy(0.3, num_classes=3)
    targets = np.array([[0.8, 0.1, 0.1], [0.1, 0.1, 0.8]])  # 1 - 0.3 + 0.3 / 3 on the label
    expected = -(targets * np.log(probs)).sum(axis=1).mean()
    assert float(loss(labels, probs)) == pytest.approx(expected, rel=1e-5)
    assert float(SmoothedCrossentropy(0.0, 3)(labels, probs)) == pytest.approx(
        -np.log([0.7, 0.8]).mean(), rel=1e-5
    )


def test_time_estimate_adds_epochs_predictions_and_fixed_costs():
    # 2 members x (3 epochs x 1,000 rows at 100/s + 500 scored rows at 250/s + 4 s) = 2 x 36 s
    assert training.estimate_seconds(2, 3, 1000, 500, 100.0, 250.0, 4.0) == pytest.approx(72.0)


def test_the_cpu_estimate_is_printed_and_kept_beside_the_real_time(tiny_data, monkeypatch, capsys):
    # Normally only for runs of 300,000 images or more; here on 150 rows per member, repeated into full
    # timed batches.
    monkeypatch.setattr(training, "ESTIMATE_MIN_IMAGES", 0)
    run_dir = training.train(TrainSettings(**{**TINY, "subset": 300}), quiet=True)
    assert "No GPU found: 2 members x 1 epochs on this CPU take about" in capsys.readouterr().out
    metrics = storage.read_json(run_dir / "metrics.json")
    assert 0 < metrics["estimated_seconds"] < 600


def test_members_option_trains_part_of_a_run_and_the_rest_later(tiny_data, capsys):
    settings = TrainSettings(**TINY)
    run_dir = training.train(settings, quiet=True, only=["f1-s0"])
    assert sorted(p.name for p in (run_dir / "members").iterdir()) == ["f1-s0"]
    assert not (run_dir / "metrics.json").exists()
    assert "1 of 2 members trained" in capsys.readouterr().out
    part = member_files(run_dir)
    assert "members/f1-s0/member.json" in part
    assert training.train(settings, quiet=True) == run_dir  # the rest: f0-s0, then the run is scored
    assert (run_dir / "metrics.json").is_file()
    assert {k: v for k, v in member_files(run_dir).items() if k.startswith("members/f1-s0/")} == part
    whole = training.train(settings, fresh=True, quiet=True)  # the same members, trained in one go
    np.testing.assert_array_equal(np.load(run_dir / "test_probs.npy"), np.load(whole / "test_probs.npy"))
    with pytest.raises(training.UserError, match="no member f2-s0 in a 2x1 run"):
        training.train(settings, quiet=True, fresh=True, only=["f2-s0"])


def test_kill_9_after_the_first_member_keeps_it(tiny_data):
    """The real thing: the CLI in its own process, killed with SIGKILL, then run again."""
    env = {k: v for k, v in os.environ.items()}
    env.update({"PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"})
    args = [
        sys.executable,
        "-m",
        "competition",
        "train",
        "--folds",
        "3",
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
    proc = subprocess.Popen(
        args, cwd=tiny_data, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
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
    rerun = subprocess.run(args, cwd=tiny_data, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "Continuing the unfinished run" in rerun.stdout
    assert (run_dir / "metrics.json").is_file()
    after = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in first.iterdir() if p.is_file()}
    assert after == before
    assert "member 1/3" not in rerun.stdout  # the finished member was not trained again


def test_ctrl_c_says_how_to_continue(tiny_data):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    args = [
        "train",
        "--folds",
        "2",
        "--seeds",
        "1",
        "--epochs",
        "3",
        "--batch-size",
        "32",
        "--subset",
        "300",
        "--quiet",
    ]
    proc = start_cli(args, cwd=tiny_data, env=env)
    deadline = time.time() + 180
    while time.time() < deadline and not list((tiny_data / "ensembles").glob("*/members/f0-s0/history.csv")):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, out + err
    assert (
        err.strip().splitlines()[-1] == "interrupted: run the same command again to continue where it stopped"
    )
    assert err.count("interrupted:") == 1, err
    assert "Traceback" not in out + err
    rerun_continues(args, tiny_data, env)


def test_train_errors_are_one_line(workspace, tmp_path):
    assert_clean_failure(run_cli("train", "--folds", "2", cwd=workspace), "kaggle-mnist fetch")
    assert_clean_failure(
        run_cli("train", "--arch", "resnet", cwd=workspace), "'resnet' is not one of 'bncnn'"
    )
    assert_clean_failure(run_cli("train", "--folds", "1", cwd=workspace), "--folds must be at least 2")
    assert_clean_failure(run_cli("train", "--backend", "theano", cwd=workspace), "'theano' is not one of")
    assert_clean_failure(run_cli("train", "--batch-size", "-1", cwd=workspace), "--batch-size and --lr")
    assert_clean_failure(
        run_cli("train", "--early-stopping", "-3", cwd=workspace), "--early-stopping must be 0 (off)"
    )


def test_a_subset_larger_than_train_csv_is_refused_before_any_run_exists(tiny_data):
    # Training on 600 rows while config.json says 999,999 would make the run lie about itself.
    with pytest.raises(training.UserError, match="--subset 999,999 is more than train.csv's 600 rows"):
        training.train(TrainSettings(**{**TINY, "subset": 999_999}), quiet=True)
    assert not (tiny_data / "ensembles").exists() or not any((tiny_data / "ensembles").iterdir())


@pytest.mark.parametrize("visible, expected", [(None, ["0", "1"]), ("2,3", ["2", "3"])])
def test_each_worker_gets_its_own_gpu(tiny_data, monkeypatch, tmp_path, visible, expected):
    fake_python = tmp_path / "python"
    record = tmp_path / "seen"
    # Records the GPU it was given and the members it was asked for, then exits as a worker would.
    fake_python.write_text(f'#!/bin/sh\necho "$CUDA_VISIBLE_DEVICES $4 $5" >> {record}\n')
    fake_python.chmod(0o755)
    monkeypatch.setattr(training.sys, "executable", str(fake_python))
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    run_dir = tiny_data / "ensembles" / "fake-run"
    settings = TrainSettings(**{**TINY, "folds": 2, "seeds": 2}).resolved(gpu=True)
    storage.write_json(run_dir / "config.json", {"settings": settings.to_dict()})
    with training.RunProgress(10, quiet=True) as progress:
        training.train_in_workers(Run(run_dir), settings.members, 2, ["gpu0", "gpu1"], 1, progress)
    seen = sorted(record.read_text().split("\n")[:-1])
    # Members alternate over the workers: f0-s0 and f0-s1 on the first GPU, f1-s0 and f1-s1 on the second.
    assert seen == [f"{expected[0]} f0-s0 f0-s1", f"{expected[1]} f1-s0 f1-s1"]


def test_time_estimate_with_workers_lasts_as_long_as_the_busiest_share():
    # 3 members on 2 workers: one worker trains 2 of them, so the run takes 2 members' time.
    assert training.estimate_seconds(3, 3, 1000, 500, 100.0, 250.0, 4.0, workers=2) == pytest.approx(72.0)
    assert training.estimate_seconds(4, 3, 1000, 500, 100.0, 250.0, 4.0, workers=4) == pytest.approx(36.0)


@pytest.mark.parametrize(
    ("cores", "members", "epochs", "backend_name", "expected"),
    [
        (2, 5, 15, "tensorflow", 2),  # the default run
        (8, 5, 15, "tensorflow", 2),  # more cores: still two, the measured case
        (1, 5, 15, "tensorflow", 1),  # one core: nothing to share
        (2, 1, 15, "tensorflow", 1),  # one member
        (2, 2, 1, "tensorflow", 1),  # 2 x 15,000 images: start-up would eat the gain
        (2, 5, 15, "jax", 1),  # thread caps are TensorFlow's
    ],
)
def test_cpu_workers_side_by_side_only_where_they_pay(
    monkeypatch, cores, members, epochs, backend_name, expected
):
    monkeypatch.setattr(training.backend, "cpu_cores", lambda: cores)
    settings = TrainSettings(epochs=epochs, backend=backend_name)
    assert training.cpu_workers(settings, members, 15_000 if epochs == 1 else 33_600) == expected


def test_the_eta_follows_the_runs_average_pace_not_its_last_burst():
    from competition.progress import RunProgress

    now = [0.0]
    progress = RunProgress(100, quiet=False, get_time=lambda: now[0])
    eta, task = progress.progress.columns[-1], progress.progress.tasks[0]
    assert eta.render(task).plain == "-:--:--"  # nothing done yet and no estimate: no guess
    estimated = RunProgress(100, quiet=False, get_time=lambda: now[0], expected_seconds=500.0)
    now[0] = 20.0
    assert eta.render(estimated.progress.tasks[0]).plain == "0:08:00"  # the estimate, counting down
    now[0] = 60.0
    progress.set(10, "2 members training")
    now[0] = 61.0
    progress.set(12, "2 members training")  # both workers ended an epoch within a second
    # 12 steps in 61 s, 88 to go: 447 s. (The last second's pace would say 44 s.)
    assert eta.render(task).plain == "0:07:27"
    now[0] = 71.0
    progress.set(12, "2 members training")  # no new steps: it counts down from the last count
    assert eta.render(task).plain == "0:07:17"
    progress.set(100, "done")
    assert eta.render(task).plain == "0:00:00"


def test_augmentation_ranges_are_options_of_train_and_run(tmp_path):
    # A run trained with other ranges says so in the command that trains it again.
    options = TrainSettings(rotation_degrees=5.0, zoom=0.05, shift=0.05).cli_options()
    assert {"--rotation 5.0", "--zoom 0.05", "--shift 0.05"} <= set(options)
    assert not any(o.startswith(("--rotation", "--zoom", "--shift")) for o in TrainSettings().cli_options())
    with pytest.raises(ValueError, match="--zoom and --shift at least 0 and below 1"):
        TrainSettings(shift=1.0)
    # Both commands take them, and refuse a bad range in one line before anything is loaded or fetched.
    for command in ("train", "run"):
        result = run_cli(command, "--rotation", "5", "--zoom", "0.05", "--shift", "-0.1", cwd=tmp_path)
        assert result.returncode == 1
        assert_clean_failure(result)
        assert result.stderr.strip() == (
            "error: --rotation must be 0 or more, --zoom and --shift at least 0 and below 1"
        )
        assert not (tmp_path / "data").exists()


# ----------------------------------------------------------------------------------------------
# The GPU path and the other backend, as far as this CPU goes


@pytest.fixture
def float32_after():
    yield
    keras.mixed_precision.set_global_policy("float32")


def test_the_gpu_settings_train_on_a_cpu_as_xla_would_compile_them(tiny_data, monkeypatch, float32_after):
    # What `resolved(gpu=True)` gives (mixed float16, batch 256, the fold scored after every epoch),
    # compiled the way Keras' jit_compile="auto" decides on a GPU: float16 is emulated here, so the
    # data is tiny.
    gpu = TrainSettings(folds=2, seeds=1, epochs=2, subset=300).resolved(gpu=True)
    assert (gpu.precision, gpu.batch_size, gpu.epoch_validation) == ("mixed", 256, True)
    from keras.src.trainers.trainer import model_supports_jit
    from tensorflow.python.framework import config as tf_config

    from competition.model import build_model

    # As on a GPU, where ops are not made deterministic (Keras turns XLA off where they are), "auto"
    # compiles with XLA exactly when every layer says it can; then it must train.
    monkeypatch.setattr(training.backend, "make_deterministic", tf_config.disable_op_determinism)
    tf_config.disable_op_determinism()
    monkeypatch.setattr(training, "JIT_COMPILE", model_supports_jit(build_model()))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)  # "Model doesn't support jit_compile=True"
            run_dir = training.train(gpu, quiet=True)
    finally:
        tf_config.enable_op_determinism()
    run = Run(run_dir)
    assert run.settings.precision == "mixed" and run.settings.batch_size == 256
    model = keras.models.load_model(run_dir / "members" / "f0-s0" / "model.keras")
    assert model.dtype_policy.name == "mixed_float16"
    for member in ("f0-s0", "f1-s0"):
        history = (run_dir / "members" / member / "history.csv").read_text().splitlines()
        assert "val_accuracy" in history[0] and len(history) == 3  # a header and two scored epochs
    assert 0.0 <= run.metrics["cv_accuracy"] <= 1.0


def test_one_worker_per_gpu_pinned_with_cuda_visible_devices(tiny_data, monkeypatch, float32_after):
    # Two GPUs as the backend would report them on a Kaggle T4 x2; the worker processes, finding no GPU
    # behind the device number they are given, train on this CPU with the GPU settings.
    monkeypatch.setattr(training.backend, "gpus", lambda: ["GPU:0", "GPU:1"])
    pinned = []
    popen = subprocess.Popen

    def recording_popen(command, env=None, **kwargs):
        if "competition.worker" in command:
            pinned.append(env.get("CUDA_VISIBLE_DEVICES"))
        return popen(command, env=env, **kwargs)

    monkeypatch.setattr(training.subprocess, "Popen", recording_popen)
    run_dir = training.train(TrainSettings(folds=2, seeds=1, epochs=1, subset=300), quiet=True)
    assert sorted(pinned) == ["0", "1"]
    run = Run(run_dir)
    assert (run.settings.precision, run.settings.batch_size) == ("mixed", 256)
    assert sorted((run_dir / "logs").iterdir()) and run.finished


def test_the_jax_backend_trains_and_predicts(tiny_data):
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
        "--quiet",
        cwd=tiny_data,
        timeout=600,
    )
    assert result.returncode == 0, result.output
    (run_dir,) = (tiny_data / "ensembles").glob("2*")
    assert Run(run_dir).backend == "jax"
    predicted = run_cli("predict", cwd=tiny_data, timeout=600)
    assert predicted.returncode == 0, predicted.output
    assert (tiny_data / "submission.csv").is_file()
