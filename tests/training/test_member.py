"""One member: every architecture trains, a resumed member (after a Ctrl-C, a kill mid-swap, a
damaged backup, a kill while saving) equals an uninterrupted one, the schedule, and the GPU settings
as XLA compiles them."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from competition import backend, storage
from competition.errors import UserError
from competition.runs.folder import Run
from competition.training.settings import TrainSettings
from tests.conftest import TINY, member_files

backend.select("tensorflow")

import keras  # noqa: E402

from competition.training import member  # noqa: E402
from competition.training import train as training  # noqa: E402


def zero(path: Path) -> None:
    path.write_bytes(bytes(path.stat().st_size))


class Interrupt(keras.callbacks.Callback):
    """Ctrl-C after the first epoch of the given fold, once BackupAndRestore has saved that epoch."""

    def __init__(self, fold: int, folder: Path):
        super().__init__()
        self.fold, self.folder = fold, folder

    def on_epoch_end(self, epoch, logs=None):
        if self.folder.name.startswith(f"f{self.fold}-") and epoch == 0:
            raise KeyboardInterrupt


def trained_member(folder: Path) -> tuple[list[int], np.ndarray, np.ndarray]:
    """A member's epochs as its history logs them, and its out-of-fold and test probabilities."""
    with np.load(folder / "oof.npz") as oof:
        return [row["epoch"] for row in Run.history(folder)], oof["probs"], np.load(folder / "test.npy")


def uninterrupted_f1(settings: TrainSettings) -> tuple[list[int], np.ndarray, np.ndarray]:
    if settings not in _UNINTERRUPTED:
        run_dir = training.train(settings, fresh=True, quiet=True, only=["f1-s0"])
        _UNINTERRUPTED[settings] = trained_member(run_dir / "members" / "f1-s0")
    return _UNINTERRUPTED[settings]


# Member f1-s0 trained in one go, by settings: the variants that share settings share it.
_UNINTERRUPTED: dict[TrainSettings, tuple[list[int], np.ndarray, np.ndarray]] = {}


@pytest.mark.parametrize("arch", ["lenet", "mlp"])  # bncnn, the default, trains in most tests
def test_each_architecture_builds_and_trains(tiny_data, arch):
    run_dir = training.train(TrainSettings(**{**TINY, "arch": arch, "subset": 200}), quiet=True)
    metrics = storage.read_json(run_dir / "metrics.json")
    # The CV figure is the accuracy of the saved out-of-fold probabilities on the saved labels.
    oof, labels = np.load(run_dir / "oof_probs.npy"), np.load(run_dir / "oof_labels.npy")
    assert metrics["cv_accuracy"] == pytest.approx(float(np.mean(oof.argmax(axis=1) == labels)))
    assert len(labels) == 200 and oof.shape == (200, 10)
    assert keras.models.load_model(run_dir / "members" / "f0-s0" / "model.keras").name == arch


@pytest.mark.parametrize(
    "variant",
    [
        # Stateful callbacks: their counters and best weights must come back too.
        pytest.param({"schedule": "plateau", "early_stopping": 1}, id="plateau+early-stopping"),
        pytest.param({"schedule": "exponential"}, id="exponential", marks=pytest.mark.slow),
        # Killed while swapping backup folders: the previous complete epoch is used.
        pytest.param({"mid_swap": True}, id="killed-mid-swap", marks=pytest.mark.slow),
        # A per-step schedule lives in the optimizer's state.
        pytest.param({"schedule": "cosine"}, id="cosine", marks=pytest.mark.slow),
        # The backup's weights damaged on disk: not loaded; the member starts again from epoch 1.
        pytest.param({"damaged_backup": True}, id="damaged-backup", marks=pytest.mark.slow),
    ],
)
def test_resume_after_interrupt_equals_an_uninterrupted_run(tiny_data, monkeypatch, variant):
    variant = dict(variant)
    mid_swap = variant.pop("mid_swap", False)
    damaged_backup = variant.pop("damaged_backup", False)
    settings = TrainSettings(**{**TINY, "epochs": 3, **variant})
    original = member.callbacks
    monkeypatch.setattr(
        member, "callbacks", lambda s, folder, *a: [*original(s, folder, *a), Interrupt(1, folder)]
    )
    with pytest.raises(KeyboardInterrupt):
        training.train(settings, fresh=True, quiet=True)
    monkeypatch.setattr(member, "callbacks", original)
    (run_dir,) = (tiny_data / "ensembles").glob("2*")
    assert not (run_dir / "metrics.json").exists()
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
    resumed_member = trained_member(run_dir / "members" / "f1-s0")
    assert resumed_member[0][0] == 0  # the history is the whole member's, from its first epoch
    reference = uninterrupted_f1(settings)
    assert resumed_member[0] == reference[0]
    for resumed_probs, reference_probs in zip(resumed_member[1:], reference[1:], strict=True):
        np.testing.assert_array_equal(resumed_probs, reference_probs)


def test_cosine_schedule_warms_up_and_ends_at_zero(tiny_data):
    settings = TrainSettings(**{**TINY, "epochs": 4, "schedule": "cosine", "learning_rate": 2e-3})
    run_dir = training.train(settings, quiet=True, only=["f0-s0"])
    rates = [row["learning_rate"] for row in Run.history(run_dir / "members" / "f0-s0")]
    # Logged at each epoch's end: the peak after the 1-epoch warmup, then down to zero at the last step.
    assert rates[0] == pytest.approx(2e-3, rel=1e-3)
    assert rates[1] > rates[2] > rates[3] and rates[3] == pytest.approx(0.0, abs=1e-9)


@pytest.mark.slow
def test_the_gpu_settings_train_on_a_cpu_as_xla_would_compile_them(tiny_data, monkeypatch):
    # What `resolved(gpu=True)` gives (mixed float16, batch 256, the fold scored after every epoch),
    # compiled the way Keras' jit_compile="auto" decides on a GPU: float16 is emulated here, so the
    # data is tiny.
    gpu = TrainSettings(folds=2, seeds=1, epochs=1, subset=300).resolved(gpu=True)
    assert (gpu.precision, gpu.batch_size, gpu.epoch_validation) == ("mixed", 256, True)
    from keras.src.trainers.trainer import model_supports_jit
    from tensorflow.python.framework import config as tf_config

    # As on a GPU, where ops are not made deterministic (Keras turns XLA off where they are), "auto"
    # compiles with XLA exactly when every layer says it can; then it must train.
    monkeypatch.setattr(backend, "make_deterministic", tf_config.disable_op_determinism)
    tf_config.disable_op_determinism()
    monkeypatch.setattr(member, "JIT_COMPILE", model_supports_jit(member.build(gpu)))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)  # "Model doesn't support jit_compile=True"
            # One member: float16 is emulated on a CPU, and the other member would take the same path.
            run_dir = training.train(gpu, quiet=True, only=["f0-s0"])
    finally:
        tf_config.enable_op_determinism()
    run = Run(run_dir)
    assert run.settings.precision == "mixed" and run.settings.batch_size == 256
    assert run.member_done(0, 0) and not run.member_done(1, 0)
    model = keras.models.load_model(run_dir / "members" / "f0-s0" / "model.keras")
    assert model.dtype_policy.name == "mixed_float16"
    history = (run_dir / "members" / "f0-s0" / "history.csv").read_text().splitlines()
    assert "val_accuracy" in history[0] and len(history) == 2  # a header and the scored epoch
    oof_rows, oof, test = run.member_predictions(0, 0)
    assert oof.shape == (len(oof_rows), 10) and test.shape == (40, 10)
    np.testing.assert_allclose(oof.sum(axis=1), 1.0, atol=1e-3)


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

