"""One ensemble member: a network built, compiled and fitted from the run's settings with the callbacks
that make it resumable, then saved with its predictions. `train`, the CPU time estimate and the
benchmarks all make their models here. Import after `backend.select(...)`.

    build(settings)                      the network (model.py) the settings name
    compile(model, settings, steps)      its optimizer, schedule and loss
    train_member(run, member, rows, ...) one member of a run trained (or resumed), predicted and saved
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import keras
import numpy as np

from competition import backend, environ, storage
from competition.errors import SessionDeadline
from competition.progress import RunProgress, member_done_line, member_label
from competition.runs.files import checksums
from competition.runs.folder import MEMBER_FILES, Run
from competition.runs.rows import RunRows
from competition.scoring import ensemble
from competition.training import precise_bn
from competition.training.model import build_model
from competition.training.model import load as load_model
from competition.training.resume import EpochBatches, EpochSeeds, ExactBackup, Rows, feed, predict_rows
from competition.training.settings import TrainSettings

PREDICT_BATCH = 1024  # inference has no gradients to hold: big batches are free speed
# Keras' "auto": XLA on a GPU; off on a CPU, where it is several times slower. A test sets True to
# compile the GPU path's XLA graph (custom layers included) on a CPU.
JIT_COMPILE: bool | str = "auto"
POLICIES = {"float32": "float32", "mixed": "mixed_float16", "bfloat16": "mixed_bfloat16"}


def configure_device(settings: TrainSettings, gpus: list[str], threads: int | None = None) -> None:
    """The Keras dtype policy for the run's (resolved) precision; on a CPU, deterministic kernels and the
    run's thread count (or `threads`: a worker whose members are a last round's, `member_threads`).
    Every process that trains members of the run (the command, or its workers) calls it before its
    first op: TensorFlow fixes its thread pools then, so a process trains members of one thread count."""
    # Runs saved before precision was resolved into config.json say "auto".
    policy = POLICIES.get(settings.precision, "mixed_float16" if gpus else "float32")
    keras.mixed_precision.set_global_policy(policy)
    if not gpus:
        backend.make_deterministic()
        threads = settings.cpu_threads if threads is None else threads
        if threads:
            # Members share the cores instead of each using them all (see worker.cpu_workers).
            backend.limit_cpu_threads(threads)


def build(settings: TrainSettings) -> keras.Model:
    return build_model(
        settings.arch,
        settings.dropout_rate,
        settings.augment,
        settings.rotation_degrees,
        settings.zoom,
        settings.shift,
        settings.width,
    )


def compile(model: keras.Model, settings: TrainSettings, steps_per_epoch: int, jit_compile=None) -> None:
    """Adam with the settings' schedule (the cosine one per step, inside the optimizer: its step counter
    is saved with the weights, so a resumed member continues the curve exactly) and cross-entropy."""
    rate = settings.learning_rate
    if settings.schedule == "cosine":
        warmup = settings.warmup_epochs * steps_per_epoch
        rate = keras.optimizers.schedules.CosineDecay(
            0.0,
            decay_steps=settings.epochs * steps_per_epoch - warmup,
            alpha=0.0,
            warmup_target=settings.learning_rate,
            warmup_steps=warmup,
        )
    model.compile(
        optimizer=keras.optimizers.Adam(rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        jit_compile=JIT_COMPILE if jit_compile is None else jit_compile,
    )


def train_member(
    run: Run, member: tuple[int, int], rows: RunRows, folds: np.ndarray, progress: RunProgress, label: str
) -> dict:
    """Member (fold, seed index) of `run`: trained on every fold but its own (or resumed from its last
    finished epoch), then its fold and the test rows predicted; returns what member.json records."""
    settings = run.settings
    fold, seed_index = member
    images, labels = rows.images, rows.labels
    folder = run.member_dir(fold, seed_index)
    folder.mkdir(parents=True, exist_ok=True)
    train_rows, val_rows = np.flatnonzero(folds != fold), np.flatnonzero(folds == fold)
    seed = settings.member_seed(fold, seed_index)
    started = time.perf_counter()
    timing = precise_bn_seconds = None

    if (folder / "model.keras").is_file():
        # Trained but interrupted before its predictions were saved: predict, don't retrain.
        model = load_model(folder / "model.keras")
    else:
        backend.seed(seed)
        model = build(settings)
        batches = EpochBatches(images[train_rows], labels[train_rows], settings.batch_size, seed)
        compile(model, settings, len(batches))
        timing = MemberProgress(progress, label, settings.epochs, settings.batch_size)
        validation = {}
        if settings.epoch_validation:
            validation = dict(validation_data=feed(Rows(images[val_rows], PREDICT_BATCH, labels[val_rows])))
        model.fit(
            feed(batches),
            **validation,
            epochs=settings.epochs,
            # EpochBatches already shuffles by (seed, epoch); Keras' own shuffle of the batch order uses
            # Python's global `random`, which a resumed process cannot reproduce.
            shuffle=False,
            callbacks=callbacks(settings, folder, batches, seed, timing) + _deadline(settings),
            verbose=0,
        )
        if settings.precise_bn:
            recompute_started = time.perf_counter()
            # Before model.keras exists: a kill in here resumes from the last epoch's backup (no epoch
            # left to train) and recomputes the same statistics.
            precise_bn.recompute(model, images[train_rows], seed, settings.epochs)
            precise_bn_seconds = time.perf_counter() - recompute_started
        storage.write_atomic(folder / "model.keras", model.save)
    # Only now: a kill before model.keras was in place resumes from the last epoch's backup.
    shutil.rmtree(folder / "backup", ignore_errors=True)

    oof = predict_rows(model, images[val_rows], PREDICT_BATCH).astype(np.float32)
    test = predict_rows(model, rows.test_images, PREDICT_BATCH).astype(np.float32)
    storage.write_atomic(folder / "oof.npz", lambda tmp: np.savez(tmp, rows=val_rows, probs=oof))
    storage.save_npy(folder / "test.npy", test)
    epoch_seconds = timing.epoch_seconds if timing else []
    # A resumed member only timed its last epochs; the mean of those is still seconds per epoch.
    per_epoch = float(np.mean(epoch_seconds)) if epoch_seconds else float("nan")
    result = {
        "name": folder.name,
        "fold": fold,
        "seed_index": seed_index,
        "seed": seed,
        "val_accuracy": ensemble.accuracy(oof, labels[val_rows]),
        "val_rows": int(len(val_rows)),
        "train_rows": int(len(train_rows)),
        "epochs_run": len(Run.history(folder)),
        "seconds": time.perf_counter() - started,
        "seconds_per_epoch": per_epoch,
        "epoch_seconds": [round(t, 3) for t in epoch_seconds],  # epoch 1 includes tracing the model
        "images_per_second": len(train_rows) / per_epoch if epoch_seconds else float("nan"),
        "precise_bn_seconds": precise_bn_seconds,  # None: not recomputed in this session (or off)
        "files": checksums(folder, MEMBER_FILES),  # what every later read checks
    }
    storage.write_json(folder / "member.json", result)  # last: its presence means the member is done
    return result


def train_members(run: Run, members, rows: RunRows, folds: np.ndarray, progress: RunProgress) -> None:
    """`members` of `run` one after the other in this process."""
    settings = run.settings
    for member in members:
        label = member_label(settings.members, member)
        result = train_member(run, member, rows, folds, progress, label)
        progress.log(member_done_line(label, result))


# ----------------------------------------------------------------------------------------------
# Callbacks


def callbacks(settings: TrainSettings, folder: Path, batches: EpochBatches, seed: int, timing) -> list:
    """The schedule, the epoch log and the backup that a member's `fit` runs with, in the order they
    must see each epoch."""
    if settings.schedule == "plateau":
        schedule = keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=2, min_lr=1e-5)
    elif settings.schedule == "cosine":
        schedule = LogLearningRate()
    else:
        rate, decay = settings.learning_rate, settings.lr_decay
        schedule = keras.callbacks.LearningRateScheduler(lambda epoch: rate * decay**epoch)
    found = [EpochSeeds(batches, seed), schedule]
    checkpoint = None
    if settings.epoch_validation:
        # Best-by-validation weights, for inspection; predictions use the final weights, because choosing
        # weights on the validation fold would make the out-of-fold accuracy optimistic.
        checkpoint = keras.callbacks.ModelCheckpoint(
            folder / "best.keras", monitor="val_accuracy", save_best_only=True
        )
        found.append(checkpoint)
    found += [keras.callbacks.CSVLogger(str(folder / "history.csv"), append=True), timing]
    if settings.early_stopping:
        found.append(
            keras.callbacks.EarlyStopping(
                monitor="val_accuracy", patience=settings.early_stopping, restore_best_weights=True
            )
        )
    # Last, so an epoch is only backed up after everything above has seen it. It restores weights,
    # optimizer and the counters of the stateful callbacks when the member is started again.
    stateful = [c for c in found if hasattr(c, "wait") or c is checkpoint]
    found.append(ExactBackup(folder / "backup", stateful))
    return found


def _deadline(settings: TrainSettings) -> list:
    """The session's deadline as a callback, after the backup (which must have saved the epoch first),
    when one is set: inside a Kaggle kernel, the time after which training stops at the next epoch's
    end, before Kaggle ends the session and takes everything with it (kaggle/job.py)."""
    deadline = environ.deadline()
    return [StopAtDeadline(deadline, settings.epochs)] if deadline else []


class StopAtDeadline(keras.callbacks.Callback):
    """Ends training at the first epoch's end past `deadline`, unless that was the member's last epoch
    (then it finishes: saving and predicting take seconds). Every session trains at least one epoch."""

    def __init__(self, deadline: float, epochs: int):
        super().__init__()
        self.deadline, self.epochs = deadline, epochs

    def on_epoch_end(self, epoch, logs=None):
        if time.time() >= self.deadline and epoch + 1 < self.epochs:
            raise SessionDeadline()


class MemberProgress(keras.callbacks.Callback):
    """Feeds the run's progress bar from every few training steps; times each epoch."""

    def __init__(self, run: RunProgress, label: str, epochs: int, batch_size: int):
        super().__init__()
        self.run, self.label, self.epochs, self.batch_size = run, label, epochs, batch_size
        self.epoch_seconds: list[float] = []
        self._images_per_second = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self.started = time.perf_counter()
        self.batches = 0

    def on_train_batch_end(self, batch, logs=None):
        self.batches += 1
        if self.run.quiet or self.batches % 5:
            return
        logs = logs or {}
        elapsed = time.perf_counter() - self.started
        self._images_per_second = self.batches * self.batch_size / max(elapsed, 1e-9)
        self.run.advance(
            5,
            f"{self.label} epoch {self.epoch + 1}/{self.epochs} "
            f"loss {logs.get('loss', 0):.4f} acc {logs.get('accuracy', 0):.4f} "
            f"{self._images_per_second:,.0f} img/s",
        )

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self.started
        self.epoch_seconds.append(seconds)
        logs = logs or {}
        self.run.advance(self.batches % 5)
        validation = f" val_acc {logs['val_accuracy']:.4f}" if "val_accuracy" in logs else ""
        line = (
            f"{self.label} epoch {epoch + 1}/{self.epochs}: loss {logs.get('loss', 0):.4f} "
            f"acc {logs.get('accuracy', 0):.4f}{validation} ({seconds:.0f} s)"
        )
        if self.run.quiet:
            self.run.log(line)


class LogLearningRate(keras.callbacks.Callback):
    """Puts the rate of a per-step schedule into the epoch log (the other schedules' callbacks do)."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
