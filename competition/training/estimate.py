"""How long a CPU run takes, said before it starts: a few timed steps of a throwaway member of the run's
own kind (architecture, augmentation, precision, batch size) give the rates, and `estimate_seconds`
turns them into the run's time. Import after `backend.select(...)`."""

from __future__ import annotations

import time

import keras
import numpy as np

from competition import backend
from competition.progress import console, duration
from competition.training import member
from competition.training.resume import EpochBatches, feed, predict_rows
from competition.training.settings import TrainSettings

# Below this many training images a run takes a few minutes at most: not worth timing steps for.
ESTIMATE_MIN_IMAGES = 300_000


# How much faster a member trains alone on two threads than on one: 1.53x at 1x width, 1.68x at 1.5x
# on a 2-core AMD EPYC (benchmarks/README.md, "A last round alone"); the lower one.
ALONE_SPEEDUP = 1.5


def estimate_seconds(
    members: int,
    epochs: int,
    train_rows: int,
    scored_rows: int,
    train_rate: float,
    predict_rate: float,
    member_overhead: float,
    workers: int = 1,
    alone: int = 0,
) -> float:
    """Seconds to train `members` members: their epochs at `train_rate` images/s, the rows each one
    scores (its fold after every validated epoch and at the end, and the test set) at `predict_rate`,
    and a fixed cost per member (building the model, tracing its functions, saving it). With `workers`
    processes side by side (each at these rates), the run lasts as long as the busiest one's share;
    then `alone` of the members (a last round that the workers do not fill) train side by side with
    the idle workers' threads too, ALONE_SPEEDUP times as fast."""
    per_member = epochs * train_rows / train_rate + scored_rows / predict_rate + member_overhead
    return -(-(members - alone) // workers) * per_member + (per_member / ALONE_SPEEDUP if alone else 0.0)


def cpu_estimate(
    settings: TrainSettings,
    members: list,
    images: np.ndarray,
    folds: np.ndarray,
    test_rows: int,
    workers: int = 1,
    worker_start: float = 0.0,
) -> float | None:
    """Says up front how long a CPU run takes from here (the workers' `worker_start` seconds, then their
    members), timed in this process, whose threads are already capped to one worker's share of the
    cores. Returns the seconds it said, or None for a run too small to be worth it."""
    train_rows, val_rows = int(np.sum(folds != 0)), int(np.sum(folds == 0))
    alone = [m for m in members if settings.trains_alone(m)]
    members = len(members)
    if members * settings.epochs * train_rows < ESTIMATE_MIN_IMAGES:
        return None
    started = time.perf_counter()
    backend.seed(settings.seed)
    model = member.build(settings)
    steps, size, batch = 96, settings.batch_size, member.PREDICT_BATCH  # ~3 s of steps on one core
    # Full batches even from a small --subset (rows repeat): the rate is per step.
    x = images[np.resize(np.arange(len(images)), max(steps * size, 4 * batch))]
    y = np.zeros(steps * size, dtype=np.uint8)
    member.compile(model, settings, steps, jit_compile="auto")
    model.fit(feed(EpochBatches(x[: 2 * size], y[: 2 * size], size, 0)), shuffle=False, verbose=0)
    predict_rows(model, x[:batch], batch)
    overhead = time.perf_counter() - started  # build and trace: what every member pays once
    # Rates from the end of the first batch to the end of the last, as an epoch runs them, leaving out
    # what starting and ending a `fit` or `predict` call costs.
    clock = BatchClock()
    model.fit(feed(EpochBatches(x[: len(y)], y, size, 0)), shuffle=False, verbose=0, callbacks=[clock])
    train_rate = size * (len(clock.train) - 1) / (clock.train[-1] - clock.train[0])
    predict_rows(model, x[: 4 * batch], batch, callbacks=[clock])
    predict_rate = batch * (len(clock.predict) - 1) / (clock.predict[-1] - clock.predict[0])
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
        len(alone),
    )
    side_by_side = f" in {workers} processes side by side" if workers > 1 else ""
    if alone:
        each = " each" if len(alone) > 1 else ""
        side_by_side += f", the last {len(alone)} on {settings.member_threads(alone[0])} threads{each}"
    console.print(
        f"[yellow]No GPU found: {members} members x {settings.epochs} epochs on this CPU take about "
        f"{duration(seconds)} ({workers * train_rate:,.0f} training images/s{side_by_side}). Interrupt any "
        "time and rerun to continue; --recipe quick takes under a third of the default's time, --folds 2 "
        "--epochs 1 is a look in minutes; or train on a "
        "GPU (`--on kaggle`, or in a Kaggle notebook: Accelerator > GPU).[/]"
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
