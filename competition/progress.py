"""What the user sees while `kaggle-mnist train` runs: one live bar for the whole run, or log lines.

Free of Keras, so commands that only print start fast; the Keras callback that feeds the bar from
each training step is member.MemberProgress."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

console = Console(stderr=False, highlight=False)


class AverageTimeRemaining(ProgressColumn):
    """Time left at the run's average pace so far (elapsed / done x still to do).

    rich's TimeRemainingColumn extrapolates from the last 30 s of updates. With worker processes the bar
    moves a whole epoch at a time, often two at once when both workers end an epoch together, and
    that window then saw two epochs in a second: it told a 1 h 38 min run "ETA 0:11:08" after 2
    minutes. The average counts start-up and tracing as part of the pace, so early on it errs long,
    and it settles as the run goes. Until the first steps are counted (a worker run counts whole
    epochs), it counts down train's up-front estimate where there is one.
    """

    def render(self, task: Task) -> Text:
        if task.finished:
            return Text("0:00:00", style="progress.remaining")
        if not task.total or task.elapsed is None:
            return Text("-:--:--", style="progress.remaining")
        counted_at = task.fields.get("counted_at")
        if task.completed and counted_at:
            # Counted in jumps (a worker run's epochs): the pace at the last count, counting down since,
            # rather than a pace that slows between counts.
            pace = counted_at / task.completed
            left = max(0.0, pace * (task.total - task.completed) - (task.elapsed - counted_at))
        elif task.completed:
            left = task.elapsed / task.completed * (task.total - task.completed)
        elif task.fields.get("expected") is not None:
            left = max(0.0, task.fields["expected"] - task.elapsed)
        else:
            return Text("-:--:--", style="progress.remaining")
        minutes, seconds = divmod(int(left), 60)
        hours, minutes = divmod(minutes, 60)
        return Text(f"{hours:d}:{minutes:02d}:{seconds:02d}", style="progress.remaining")


class RunProgress:
    """A single bar over every batch still to train in this run, with an ETA for the whole run."""

    def __init__(self, total_steps: int, quiet: bool, get_time=None, expected_seconds: float | None = None):
        self.quiet = quiet
        self.progress = None
        if not quiet:
            self.progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.percentage:>3.0f}%"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                AverageTimeRemaining(),
                console=console,
                transient=False,
                get_time=get_time,
            )
            self.task = self.progress.add_task("starting", total=total_steps, expected=expected_seconds)

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
            task = self.progress.tasks[0]
            counted = {"counted_at": task.elapsed} if completed != task.completed else {}
            self.progress.update(self.task, completed=completed, description=description, **counted)


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


def duration(seconds: float) -> str:
    """Seconds as a person reads them: "45 s", "12 min", "1 h 05 min"."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"
