"""What the user sees while `kaggle-mnist train` runs: one live bar for the whole run, or log lines."""

from __future__ import annotations

import time

import keras
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

console = Console(stderr=False, highlight=False)


class RunProgress:
    """A single bar over every batch still to train in this run, with an ETA for the whole run."""

    def __init__(self, total_steps: int, quiet: bool):
        self.quiet = quiet
        self.progress = None
        if not quiet:
            self.progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.percentage:>3.0f}%"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=console,
                transient=False,
            )
            self.task = self.progress.add_task("starting", total=total_steps)

    def __enter__(self) -> RunProgress:
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.stop()

    def log(self, message: str) -> None:
        if self.progress is not None:
            self.progress.console.print(message)
        else:
            print(message, flush=True)

    def set(self, completed: int, description: str) -> None:
        """For progress measured elsewhere (worker processes): `completed` steps so far."""
        if self.progress is not None:
            self.progress.update(self.task, completed=completed, description=description)

    def callback(self, label: str, epochs: int, batch_size: int) -> keras.callbacks.Callback:
        return _MemberProgress(self, label, epochs, batch_size)


class _MemberProgress(keras.callbacks.Callback):
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


def results_table(members: list[dict], folds: dict[str, float], cv_accuracy: float) -> Table:
    table = Table(title="Ensemble members", show_lines=False)
    for column in ("member", "fold", "seed", "val acc", "epochs", "s/epoch", "img/s"):
        table.add_column(column, justify="right")
    for m in members:
        table.add_row(
            m["name"],
            str(m["fold"]),
            str(m["seed_index"]),
            f"{m['val_accuracy']:.4%}",
            str(m["epochs_run"]),
            f"{m['seconds_per_epoch']:.1f}",
            f"{m['images_per_second']:,.0f}",
        )
    for fold, acc in folds.items():
        table.add_row(f"fold {fold}", fold, "all", f"{acc:.4%}", "", "", "", style="cyan")
    table.add_row("CV", "", "", f"{cv_accuracy:.4%}", "", "", "", style="bold green")
    return table
