"""`kaggle-mnist train`: a stratified k-fold ensemble of seeded CNNs, one immutable folder per run.

    ensembles/<run-id>/
        config.json          every setting (TrainSettings) and the data checksums
        manifest.json        package versions, backend, devices, git commit
        folds.npy            the fold of every training row
        members/<f0-s0>/     model.keras, best.keras, history.csv, oof.npz, test.npy, member.json
        oof_probs.npy, test_probs.npy, metrics.json    written last: a run with metrics.json is complete

Import this after `backend.select(...)`. Rerunning the same command continues an unfinished run:
finished members are kept as they are, a half-trained one resumes from its last finished epoch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
from sklearn.model_selection import StratifiedKFold

from competition import backend, data, ensemble, locks, paths, resume, storage
from competition.errors import UserError
from competition.expected import explain
from competition.model import SmoothedCrossentropy, build_model
from competition.model import load as load_model
from competition.progress import RunProgress, console, results_table
from competition.resume import EpochBatches, EpochSeeds, ExactBackup, Rows, feed, predict_rows
from competition.runs import (
    MEMBER_FILES,
    RUN_ARRAYS,
    DamagedFile,
    Run,
    RunRows,
    checksums,
    member_name,
    run_rows,
    verify,
)
from competition.settings import TrainSettings

PREDICT_BATCH = 1024  # inference has no gradients to hold: big batches are free speed
MEMBER_BYTES = 16 << 20  # model.keras and best.keras of the bncnn (4 MB each), its predictions, a margin
# Inside a Kaggle kernel: the time (seconds since the epoch) after which training stops at the next
# epoch's end, before Kaggle ends the session and takes everything with it (kernels.run_in_kernel).
DEADLINE_VARIABLE = "KAGGLE_MNIST_DEADLINE"


# Keras' "auto": XLA on a GPU; off on a CPU, where it is several times slower. A test sets True to
# compile the GPU path's XLA graph (custom layers included) on a CPU.
JIT_COMPILE: bool | str = "auto"


class SessionDeadline(Exception):
    """Training stopped at an epoch's end because the session's deadline passed: the finished members
    and the half-trained one's backup are on disk in `run_dir`, and the same run continues from them."""

    def __init__(self, run_dir: Path | None = None):
        super().__init__(f"stopped at the session's deadline: {run_dir}")
        self.run_dir = run_dir


# ----------------------------------------------------------------------------------------------
# Public surface


def train(
    settings: TrainSettings,
    fresh: bool = False,
    quiet: bool = False,
    workers: int = 0,
    only: list[str] | None = None,
) -> Path:
    """Trains (or continues) the run for `settings`; returns its folder.

    `workers`: processes training members side by side; 0 = one per visible GPU, or on a CPU what
    `cpu_workers` chooses.
    `only`: train just these members (names like "f0-s1"); the run is finished, and its CV scored, by
    the call that trains its last member. For splitting a run over machines, or measuring one fold.
    """
    if workers < 0:
        raise UserError("--workers must be 0 (one per visible GPU) or a positive number")
    started = time.perf_counter()
    dataset = data.load()
    # What a worker process spends before its first member: the imports and this load again.
    worker_start = backend.import_seconds + time.perf_counter() - started
    gpus = backend.gpus()
    settings = settings.resolved(gpu=bool(gpus), cpu_bfloat16=backend.cpu_bfloat16())
    rows = run_rows(settings, dataset)
    labels = rows.labels
    _check_enough_rows(labels, settings.folds)
    if not gpus and not settings.cpu_threads:
        # From the whole run, not what is left of it, so a resumed run keeps its thread count.
        train_rows = len(labels) - len(labels) // settings.folds
        side_by_side = cpu_workers(settings, len(settings.members), train_rows)
        settings = dataclasses.replace(settings, cpu_threads=max(1, backend.cpu_cores() // side_by_side))
    _configure_device(settings, gpus)
    identity = {
        "settings": settings.to_dict(),
        "train_sha256": dataset.train_sha256,
        "test_sha256": dataset.test_sha256,
        "arrays_sha256": dataset.arrays_sha256,  # the cached arrays actually trained on
    }

    unknown = sorted(set(only or []) - {member_name(*m) for m in settings.members})
    if unknown:
        raise UserError(
            f"no member {', '.join(unknown)} in a {settings.folds}x{settings.seeds} run: "
            f"names run from f0-s0 to f{settings.folds - 1}-s{settings.seeds - 1}"
        )
    # Finding or creating the run is one step for one process at a time, so two commands started
    # together cannot both create it; the run itself is then held for as long as this command trains.
    with contextlib.ExitStack() as held:
        with locks.hold(paths.ensembles_dir() / ".lock", f"the runs in {paths.ensembles_dir()}", wait=True):
            run = None if fresh else Run.matching(identity)
            new = run is None
            if new:
                root = paths.ensembles_dir()
                root.mkdir(parents=True, exist_ok=True)
                _check_free_space(root, len(settings.members))  # before the run folder exists
                run = Run(_new_run(settings, identity, gpus, labels))
            held.enter_context(locks.hold(run.dir / ".lock", f"run {run.dir}"))
        return _train_run(run, new, rows, gpus, workers, only, quiet, started, worker_start)


def _train_run(run: Run, new, rows: RunRows, gpus, workers, only, quiet, started, worker_start) -> Path:
    images, labels = rows.images, rows.labels
    run_dir, settings = run.dir, run.settings
    was_finished = run.finished
    damaged = _repair(run, labels)
    if was_finished and not damaged:
        console.print(
            f"This exact run is already trained: {run_dir} (CV accuracy {run.metrics['cv_accuracy']:.4%}). "
            "Use --fresh to train it again in a new folder."
        )
        return run_dir
    if new:
        console.print(f"Training {len(settings.members)} members into {run_dir}")
    else:
        console.print(f"Continuing the {'damaged' if was_finished else 'unfinished'} run {run_dir}")
    folds = run.array("folds.npy")

    todo = [m for m in settings.members if not run.member_done(*m)]
    if only is not None:
        todo = [m for m in todo if member_name(*m) in only]
    _check_free_space(run_dir, len(todo))
    train_rows = int(np.sum(folds != 0))
    # On a CPU: as many processes of the run's thread count as the cores hold, at most the two measured
    # (a run resumed on a bigger machine keeps its thread count, so its numbers stay the same).
    auto = len(gpus) or max(1, min(2, backend.cpu_cores() // max(1, settings.cpu_threads)))
    workers = min(len(todo), workers or auto)
    steps_per_epoch = -(-train_rows // settings.batch_size)
    estimate = expected = None  # expected: training from here, the bar's ETA until steps are counted
    if todo and not gpus:
        start = worker_start if workers > 1 else 0.0
        expected = _warn_cpu_time(settings, len(todo), images, folds, len(rows.test_images), workers, start)
        if expected is not None:
            # The whole command, as `wall_seconds` counts it.
            estimate = expected + time.perf_counter() - started
    with RunProgress(
        len(todo) * settings.epochs * steps_per_epoch, quiet, expected_seconds=expected
    ) as progress:
        try:
            if workers > 1:
                train_in_workers(run, todo, workers, gpus, steps_per_epoch, progress)
            else:
                _train_members(run, todo, images, labels, rows.test_images, folds, progress)
        except SessionDeadline:
            raise SessionDeadline(run_dir) from None
    missing = [m for m in settings.members if not run.member_done(*m)]
    if missing:
        console.print(
            f"{len(settings.members) - len(missing)} of {len(settings.members)} members trained in "
            f"{run_dir}; the same command without --members trains the other {len(missing)}"
        )
        return run_dir
    # This command's own time; a run continued after an interruption also spent the earlier ones'.
    whole = len(todo) == len(settings.members)
    wall = {
        "wall_seconds": time.perf_counter() - started,
        "wall_seconds_is_whole_run": whole,
        "estimated_seconds": estimate,  # what the CPU estimate said before training, if it ran
        "workers": workers,
    }
    metrics = run.score(labels, folds, wall, rows.held_labels)
    console.print(results_table(metrics["members"], metrics["fold_accuracy"], metrics["cv_accuracy"]))
    console.print(
        f"CV accuracy {metrics['cv_accuracy']:.4%} over {len(labels):,} rows; trained in "
        f"{_duration(wall['wall_seconds'])}{'' if whole else ' (this session)'}; run saved in {run_dir}"
    )
    if "holdout" in metrics:
        console.print(
            ensemble.holdout_line(metrics["holdout"], f"the mean of all {len(settings.members)} members")
        )
    note = explain(metrics["expected_submission"], metrics["cv_accuracy"], settings.folds, settings.seeds)
    console.print(f"[dim]{note}.[/dim]")
    return run_dir


def work(run_dir: Path, names: list[str]) -> None:
    """A worker process's share of a run (see `train_in_workers`): trains the named members. The
    parent process holds the run's lock for it."""
    run = Run(Path(run_dir))
    dataset = data.load()
    if dataset.arrays_sha256 != run.config.get("arrays_sha256"):
        raise UserError(f"the data changed since {run.id} started: run `{run.train_command()}` again")
    _configure_device(run.settings, backend.gpus())
    rows = run.rows(dataset)
    members = [m for m in run.members if member_name(*m) in names]
    folds = run.array("folds.npy")
    with RunProgress(0, quiet=True) as progress:
        _train_members(run, members, rows.images, rows.labels, rows.test_images, folds, progress)


# ----------------------------------------------------------------------------------------------
# One member


def _train_members(run: Run, members, images, labels, test_images, folds, progress) -> None:
    settings = run.settings
    for fold, seed_index in members:
        number = settings.members.index((fold, seed_index)) + 1
        label = f"member {number}/{len(settings.members)} (fold {fold}, seed {seed_index})"
        result = _train_member(run, fold, seed_index, images, labels, test_images, folds, progress, label)
        progress.log(f"{label}: val acc {result['val_accuracy']:.4%} in {result['seconds']:.0f} s")


# Below this many training images (under a minute of training) starting processes, each importing
# TensorFlow and loading the data, would eat what side-by-side members gain.
CPU_WORKERS_MIN_IMAGES = 40_000
# Below this many, a run takes a few minutes at most: not worth timing steps for an estimate.
ESTIMATE_MIN_IMAGES = 300_000


def cpu_workers(settings: TrainSettings, members: int, train_rows: int) -> int:
    """Training processes for a CPU run: two side by side, each with half the cores, on a machine with
    two or more cores, for runs big enough to pay for starting them; else one. Measured on 2 cores (benchmarks/
    README.md, "Members side by side"): the batch-64 CNN spends much of each step in small ops that do
    not split well over threads, so two single-threaded members train more images per second than one
    member on both cores. More than two would multiply the memory (~1 GB each) for a gain not measured."""
    big = members * settings.epochs * train_rows >= CPU_WORKERS_MIN_IMAGES
    if settings.backend != "tensorflow" or members < 2 or not big or backend.cpu_cores() < 2:
        return 1
    return 2


# A worker's exit code when it stopped at the session's deadline (EX_TEMPFAIL: try again later).
DEADLINE_EXIT = 75


def train_in_workers(run: Run, todo, workers, gpus, steps_per_epoch, progress) -> None:
    """Members spread over `workers` processes, one GPU each (as on a Kaggle "T4 x2" notebook), or on
    a CPU the run's `cpu_threads` cores each: members are independent, so this scales without the
    gradient syncing of a data-parallel model. Each worker pins its GPU with CUDA_VISIBLE_DEVICES and
    writes a log in the run's logs/ folder; this process only watches the members' epoch logs to drive
    the progress bar."""
    run_dir, settings = run.dir, run.settings
    logs = run_dir / "logs"
    logs.mkdir(exist_ok=True)
    visible = [d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    devices = visible or [str(i) for i in range(len(gpus))]  # more workers than GPUs share them in turn
    started = {m: _epochs_logged(run.member_dir(*m)) for m in todo}
    procs = []
    stopped = set()  # workers that stopped at the session's deadline (the others soon follow)
    try:
        for w in range(workers):
            share = todo[w::workers]
            env = {**os.environ, "KAGGLE_MNIST_WORKSPACE": str(paths.workspace())}
            if gpus:
                env["CUDA_VISIBLE_DEVICES"] = devices[w % len(devices)]
            log_path = logs / f"worker-{w}.log"
            with open(log_path, "ab") as log:
                command = [sys.executable, "-m", "competition.worker", str(run_dir)]
                command += [member_name(*m) for m in share]
                # stdin: a pipe this process holds open and never writes to; the worker stops when it
                # closes, which is when this process ends, even by a SIGKILL (worker.stop_when_parent_goes).
                proc = subprocess.Popen(
                    command, env=env, stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT
                )
            procs.append((w, proc, log_path))
        progress.log(f"{len(todo)} members on {workers} workers; their logs are in {logs}")
        reported = set()
        while True:
            done = sum(_epochs_logged(run.member_dir(*m)) - started[m] for m in todo)
            progress.set(done * steps_per_epoch, f"{len(todo) - len(reported)} members training")
            for m in todo:
                if m not in reported and run.member_done(*m):
                    reported.add(m)
                    result = run.member_info(*m)
                    progress.log(
                        f"member {settings.members.index(m) + 1}/{len(settings.members)} (fold {m[0]}, "
                        f"seed {m[1]}): val acc {result['val_accuracy']:.4%} in {result['seconds']:.0f} s"
                    )
            stopped |= {w for w, p, _ in procs if p.poll() == DEADLINE_EXIT}
            failed = [(w, p, log) for w, p, log in procs if p.poll() not in (None, 0, DEADLINE_EXIT)]
            if failed:
                w, proc, log_path = failed[0]
                lines = log_path.read_text(errors="replace").strip().splitlines() or ["(no output)"]
                raise UserError(
                    f"training worker {w} stopped (exit {proc.returncode}): {lines[-1]} "
                    f"(its log: {log_path}); rerun the same command to continue"
                )
            if all(p.poll() is not None for _, p, _ in procs):
                if stopped:
                    raise SessionDeadline()
                return
            time.sleep(1)
    finally:
        for _, proc, _ in procs:
            if proc.poll() is None:
                proc.terminate()
        for _, proc, _ in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30)
            proc.stdin.close()


def _train_member(run: Run, fold, seed_index, images, labels, test_images, folds, progress, label) -> dict:
    settings = run.settings
    folder = run.member_dir(fold, seed_index)
    folder.mkdir(parents=True, exist_ok=True)
    train_rows, val_rows = np.flatnonzero(folds != fold), np.flatnonzero(folds == fold)
    seed = settings.member_seed(fold, seed_index)
    started = time.perf_counter()
    timing = None

    if (folder / "model.keras").is_file():
        # Trained but interrupted before its predictions were saved: predict, don't retrain.
        model = load_model(folder / "model.keras")
    else:
        keras.utils.set_random_seed(seed)
        model = _build(settings)
        batches = EpochBatches(images[train_rows], labels[train_rows], settings.batch_size, seed)
        model.compile(
            optimizer=_optimizer(settings, len(batches)),
            loss=_loss(settings),
            metrics=["accuracy"],
            jit_compile=JIT_COMPILE,
        )
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
            callbacks=member_callbacks(settings, folder, batches, seed, timing) + _deadline(settings),
            verbose=0,
        )
        storage.write_atomic(folder / "model.keras", model.save)
    # Only now: a kill before model.keras was in place resumes from the last epoch's backup.
    shutil.rmtree(folder / "backup", ignore_errors=True)

    oof = predict_rows(model, images[val_rows], PREDICT_BATCH).astype(np.float32)
    test = predict_rows(model, test_images, PREDICT_BATCH).astype(np.float32)
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
        "files": checksums(folder, MEMBER_FILES),  # what every later read checks
    }
    storage.write_json(folder / "member.json", result)  # last: its presence means the member is done
    return result


def _build(settings: TrainSettings) -> keras.Model:
    return build_model(
        settings.arch,
        settings.dropout_rate,
        settings.augment,
        settings.rotation_degrees,
        settings.zoom,
        settings.shift,
    )


def _optimizer(settings: TrainSettings, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    rate = settings.learning_rate
    if settings.schedule == "cosine":
        # Per step, inside the optimizer: its step counter is saved with the weights, so a resumed
        # member continues the curve exactly.
        warmup = settings.warmup_epochs * steps_per_epoch
        rate = keras.optimizers.schedules.CosineDecay(
            0.0,
            decay_steps=settings.epochs * steps_per_epoch - warmup,
            alpha=0.0,
            warmup_target=settings.learning_rate,
            warmup_steps=warmup,
        )
    # With use_ema, fit ends by overwriting the weights with their moving average, so everything after
    # (model.keras, the out-of-fold and test predictions) uses the average.
    return keras.optimizers.Adam(rate, use_ema=settings.ema, ema_momentum=settings.ema_momentum)


def _loss(settings: TrainSettings):
    if settings.label_smoothing:
        return SmoothedCrossentropy(settings.label_smoothing)
    return "sparse_categorical_crossentropy"


def member_callbacks(settings: TrainSettings, folder: Path, batches: EpochBatches, seed: int, timing) -> list:
    if settings.schedule == "plateau":
        schedule = keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=2, min_lr=1e-5)
    elif settings.schedule == "cosine":
        schedule = LogLearningRate()
    else:
        rate, decay = settings.learning_rate, settings.lr_decay
        schedule = keras.callbacks.LearningRateScheduler(lambda epoch: rate * decay**epoch)
    callbacks = [EpochSeeds(batches, seed), schedule]
    checkpoint = None
    if settings.epoch_validation:
        # Best-by-validation weights, for inspection; predictions use the final weights, because choosing
        # weights on the validation fold would make the out-of-fold accuracy optimistic.
        checkpoint = keras.callbacks.ModelCheckpoint(
            folder / "best.keras", monitor="val_accuracy", save_best_only=True
        )
        callbacks.append(checkpoint)
    callbacks += [keras.callbacks.CSVLogger(str(folder / "history.csv"), append=True), timing]
    if settings.early_stopping:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_accuracy", patience=settings.early_stopping, restore_best_weights=True
            )
        )
    # Last, so an epoch is only backed up after everything above has seen it. It restores weights,
    # optimizer and the counters of the stateful callbacks when the member is started again.
    stateful = [c for c in callbacks if hasattr(c, "wait") or c is checkpoint]
    callbacks.append(ExactBackup(folder / "backup", stateful))
    return callbacks


def _deadline(settings: TrainSettings) -> list:
    """The session's deadline as a callback, after the backup (which must have saved the epoch first),
    when one is set."""
    deadline = os.environ.get(DEADLINE_VARIABLE)
    return [StopAtDeadline(float(deadline), settings.epochs)] if deadline else []


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
        if self.run.progress is None or self.batches % 5:
            return
        logs = logs or {}
        elapsed = time.perf_counter() - self.started
        self._images_per_second = self.batches * self.batch_size / max(elapsed, 1e-9)
        self.run.progress.update(
            self.run.task,
            advance=5,
            description=(
                f"{self.label} epoch {self.epoch + 1}/{self.epochs} "
                f"loss {logs.get('loss', 0):.4f} acc {logs.get('accuracy', 0):.4f} "
                f"{self._images_per_second:,.0f} img/s"
            ),
        )

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self.started
        self.epoch_seconds.append(seconds)
        logs = logs or {}
        if self.run.progress is not None:
            self.run.progress.update(self.run.task, advance=self.batches % 5)
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


def _epochs_logged(folder: Path) -> int:
    """Complete rows in a member's epoch log, read while another process may be appending to it."""
    try:
        return max(0, (folder / "history.csv").read_bytes().count(b"\n") - 1)
    except OSError:
        return 0


# ----------------------------------------------------------------------------------------------
# The run


def _repair(run: Run, labels: np.ndarray) -> bool:
    """Checks a run's files before they are trusted again; returns whether anything was damaged.

    A member whose predictions are damaged predicts again from its model; one whose model is damaged is
    trained again from scratch; a finished run whose own files are damaged is scored again from its
    members (metrics.json is removed, so the run reads as unfinished until that is done)."""
    damaged = run.damaged_members()
    for member, files in damaged.items():
        folder = run.member_dir(*member)
        retrain = "model.keras" in files
        if not retrain and "member.json" in files:
            try:  # no record left to check the model against: check that it opens
                verify(folder / "model.keras", None, "")
            except DamagedFile:
                retrain = True
        (folder / "member.json").unlink(missing_ok=True)
        if retrain:
            shutil.rmtree(folder)
            console.print(
                f"Member {folder.name} of {run.id}: {', '.join(files)} damaged or missing; training it again"
            )
        else:
            for name in ("oof.npz", "test.npy"):
                (folder / name).unlink(missing_ok=True)
            console.print(
                f"Member {folder.name} of {run.id}: {', '.join(files)} damaged or missing; predicting again with its model"
            )
    if not run.finished:
        return bool(damaged)
    try:
        metrics = run.metrics
        arrays = {name: run.array(name) for name in RUN_ARRAYS}
        if len(arrays["oof_labels.npy"]) != len(labels) or metrics.get("run_id") != run.id:
            raise DamagedFile(run.dir / "metrics.json", "does not match the run", "")
    except DamagedFile as damage:
        console.print(f"{damage.path} is damaged or missing; scoring the run again from its members")
        damaged = damaged or {"run": [damage.path.name]}
    if damaged:
        (run.dir / "metrics.json").unlink(missing_ok=True)
        run.__dict__.pop("metrics", None)  # the cached copy, if read
    return bool(damaged)


def _new_run(settings: TrainSettings, identity: dict, gpus: list[str], labels: np.ndarray) -> Path:
    root = paths.ensembles_dir()
    root.mkdir(parents=True, exist_ok=True)
    stem = f"{time.strftime('%Y%m%d-%H%M%S')}-{settings.arch}-{settings.folds}x{settings.seeds}"
    run_dir, n = root / stem, 1
    while run_dir.exists():
        n += 1
        run_dir = root / f"{stem}-{n}"
    staging = root / f".{run_dir.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    splitter = StratifiedKFold(n_splits=settings.folds, shuffle=True, random_state=settings.split_seed)
    folds = np.empty(len(labels), dtype=np.int8)
    for fold, (_, val_rows) in enumerate(splitter.split(np.zeros(len(labels)), labels)):
        folds[val_rows] = fold
    storage.save_npy(staging / "folds.npy", folds)
    storage.write_json(staging / "config.json", identity)
    manifest_extra = {"identity": identity, "folds_sha256": storage.sha256_file(staging / "folds.npy")}
    storage.write_json(
        staging / "manifest.json",
        {
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "versions": backend.versions(),
            "backend": keras.backend.backend(),
            "devices": gpus or ["cpu"],
            "precision": keras.mixed_precision.dtype_policy().name,
            "git_commit": _git_commit(),
            # A copy of config.json (the run's identity, repaired from here if that file is lost) and
            # the checksum of folds.npy, checked whenever the folds are read back.
            **manifest_extra,
        },
    )
    staging.rename(run_dir)  # the folder appears complete with its config, or not at all
    return run_dir


POLICIES = {"float32": "float32", "mixed": "mixed_float16", "bfloat16": "mixed_bfloat16"}


def _configure_device(settings: TrainSettings, gpus: list[str]) -> None:
    """The Keras dtype policy for the run's (resolved) precision; on a CPU, deterministic kernels and the
    run's thread count. Every process that trains members of the run (this one, or its workers) calls
    it before its first op."""
    # Runs saved before precision was resolved into config.json say "auto".
    policy = POLICIES.get(settings.precision, "mixed_float16" if gpus else "float32")
    keras.mixed_precision.set_global_policy(policy)
    if not gpus:
        backend.make_deterministic()
        if settings.cpu_threads:
            # Members share the cores instead of each using them all (see cpu_workers).
            backend.limit_cpu_threads(settings.cpu_threads)


def estimate_seconds(
    members: int,
    epochs: int,
    train_rows: int,
    scored_rows: int,
    train_rate: float,
    predict_rate: float,
    member_overhead: float,
    workers: int = 1,
) -> float:
    """Seconds to train `members` members: their epochs at `train_rate` images/s, the rows each one
    scores (its fold after every validated epoch and at the end, and the test set) at `predict_rate`,
    and a fixed cost per member (building the model, tracing its functions, saving it). With `workers`
    processes side by side (each at these rates), the run lasts as long as the busiest one's share."""
    per_member = epochs * train_rows / train_rate + scored_rows / predict_rate + member_overhead
    return -(-members // workers) * per_member


def _warn_cpu_time(
    settings: TrainSettings,
    members: int,
    images: np.ndarray,
    folds: np.ndarray,
    test_rows: int,
    workers: int = 1,
    worker_start: float = 0.0,
) -> float | None:
    """Says up front how long a CPU run takes from here (the workers' `worker_start` seconds, then their
    members), from a few timed steps of a throwaway model of the run's own kind (architecture,
    augmentation, precision, batch size), in this process, whose threads are already capped to one
    worker's share of the cores. Returns the seconds it said."""
    train_rows, val_rows = int(np.sum(folds != 0)), int(np.sum(folds == 0))
    if members * settings.epochs * train_rows < ESTIMATE_MIN_IMAGES:
        return None
    started = time.perf_counter()
    keras.utils.set_random_seed(settings.seed)
    model = _build(settings)
    steps, size = 96, settings.batch_size  # about 3 s of steps on one core at batch 64
    # Full batches even from a small --subset (rows repeat): the rate is per step.
    x = images[np.resize(np.arange(len(images)), max(steps * size, 4 * PREDICT_BATCH))]
    y = np.zeros(steps * size, dtype=np.uint8)
    model.compile(optimizer=_optimizer(settings, steps), loss=_loss(settings), metrics=["accuracy"])
    model.fit(feed(EpochBatches(x[: 2 * size], y[: 2 * size], size, 0)), shuffle=False, verbose=0)
    predict_rows(model, x[:PREDICT_BATCH], PREDICT_BATCH)
    overhead = time.perf_counter() - started  # build and trace: what every member pays once
    # Rates from the end of the first batch to the end of the last, as an epoch runs them, leaving out
    # what starting and ending a `fit` or `predict` call costs.
    clock = BatchClock()
    model.fit(feed(EpochBatches(x[: len(y)], y, size, 0)), shuffle=False, verbose=0, callbacks=[clock])
    train_rate = size * (len(clock.train) - 1) / (clock.train[-1] - clock.train[0])
    predict_rows(model, x[: 4 * PREDICT_BATCH], PREDICT_BATCH, callbacks=[clock])
    predict_rate = PREDICT_BATCH * (len(clock.predict) - 1) / (clock.predict[-1] - clock.predict[0])
    validated_epochs = settings.epochs if settings.epoch_validation else 0
    seconds = worker_start + estimate_seconds(
        members,
        settings.epochs,
        train_rows,
        (validated_epochs + 1) * val_rows + test_rows,
        train_rate,
        predict_rate,
        overhead,
        workers,
    )
    side_by_side = f" in {workers} processes side by side" if workers > 1 else ""
    console.print(
        f"[yellow]No GPU found: {members} members x {settings.epochs} epochs on this CPU take about "
        f"{_duration(seconds)} ({workers * train_rate:,.0f} training images/s{side_by_side}). Interrupt any time and rerun to "
        "continue; for a quick look use --folds 2 --seeds 1 --epochs 3, or train on a GPU (in a Kaggle "
        "notebook: Accelerator > GPU).[/]"
    )
    return seconds


class BatchClock(keras.callbacks.Callback):
    """When each training and prediction batch ended."""

    def __init__(self):
        super().__init__()
        self.train: list[float] = []
        self.predict: list[float] = []

    def on_train_batch_end(self, batch, logs=None):
        self.train.append(time.perf_counter())

    def on_predict_batch_end(self, batch, logs=None):
        self.predict.append(time.perf_counter())


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


def _check_free_space(folder: Path, members: int) -> None:
    """Each member keeps a model or two and its predictions: say now, not hours in, if they cannot fit."""
    storage.ensure_free_space(folder, MEMBER_BYTES * members + resume.BACKUP_MARGIN_BYTES)


def _check_enough_rows(labels: np.ndarray, folds: int) -> None:
    smallest = int(np.bincount(labels, minlength=10).min())
    if smallest < folds:
        raise UserError(
            f"{folds} folds need at least {folds} rows of every digit, but one digit has {smallest}: "
            "use a larger --subset or fewer --folds"
        )


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None
