"""What the user sees while `kaggle-mnist train` runs: one live bar for the whole run in a terminal;
elsewhere (a notebook cell, `| cat`, `nohup`, CI) plain lines with the share done and the time left.
The lines' format is defined here once: `train --on kaggle` finds them in a kernel's log by
`is_progress_line`.

Free of Keras, so commands that only print start fast; the Keras callback that feeds the bar from
each training step is member.MemberProgress."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

console = Console(stderr=False, highlight=False)


def live_terminal() -> bool:
    """Whether the output is a terminal that a live bar can redraw itself in. Not rich's is_terminal
    alone: Jupyter's kernel sets FORCE_COLOR for the commands a notebook cell runs (to keep their
    colours), which rich takes for a terminal, and a redrawn bar in a cell's output is a pile of
    control sequences."""
    isatty = getattr(console.file, "isatty", None)
    try:
        return console.is_terminal and bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


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
        left = None
        if task.total and task.elapsed is not None:
            left = time_left(
                task.elapsed, task.completed, task.total, task.fields.get("counted_at"), task.fields.get("expected")
            )
        if left is None:
            return Text("-:--:--", style="progress.remaining")
        minutes, seconds = divmod(int(left), 60)
        hours, minutes = divmod(minutes, 60)
        return Text(f"{hours:d}:{minutes:02d}:{seconds:02d}", style="progress.remaining")


def time_left(
    elapsed: float, completed: float, total: float, counted_at: float | None, expected: float | None
) -> float | None:
    """Seconds left at the run's average pace: `completed` of `total` steps in `elapsed` seconds (the
    bar's ETA and the plain lines' "left" both come from here). `counted_at`: when the count last moved,
    for counts that move in jumps; `expected`: the up-front estimate, counted down until steps are
    counted. None: nothing to go on yet."""
    if completed and counted_at:
        # Counted in jumps (a worker run's epochs): the pace at the last count, counting down since,
        # rather than a pace that slows between counts.
        return max(0.0, counted_at / completed * (total - completed) - (elapsed - counted_at))
    if completed:
        return elapsed / completed * (total - completed)
    if expected is not None:
        return max(0.0, expected - elapsed)
    return None


# How progress names a member ("member 3/10 (fold 2, seed 0)") and starts a plain line: what
# `is_progress_line` looks for in a kernel's log.
MEMBER_LABEL = re.compile(r"member \d+/\d+")
PLAIN_PREFIX = "progress: "


def member_label(members: list[tuple[int, int]], member: tuple[int, int]) -> str:
    """`member` (fold, seed index) as the run's `members`, in training order, number it."""
    fold, seed_index = member
    return f"member {members.index(member) + 1}/{len(members)} (fold {fold}, seed {seed_index})"


def member_done_line(label: str, info: dict) -> str:
    """The line progress prints as a member finishes, wherever it trained."""
    return f"{label}: val acc {info['val_accuracy']:.4%} in {info['seconds']:.0f} s"


def is_progress_line(line: str) -> bool:
    """A plain progress line (share done, time left) or a finished member's line."""
    return line.strip().startswith(PLAIN_PREFIX) or MEMBER_LABEL.search(line) is not None


PLAIN_FIRST = 5.0  # seconds: the first plain line after the start one, so a short run shows its pace
PLAIN_EVERY = 30.0  # seconds between plain lines once the run is under way


class PlainLines:
    """Progress for output that is not a terminal, where a live bar cannot redraw itself: a line as
    training starts, then one a few seconds in and every `PLAIN_EVERY` seconds, each with the share
    done, the time elapsed and the time left, and no control characters. A notebook cell or a log file
    shows them as they come."""

    def __init__(self, total: int, expected: float | None, write: Callable[[str], None], get_time=time.monotonic):
        self.total, self.expected, self.write, self.get_time = total, expected, write, get_time
        self.completed, self.counted_at, self.description = 0, None, ""
        self.started = self.get_time()
        self.next_line = PLAIN_FIRST  # seconds since the start
        self.say()

    def update(self, completed: int, description: str = "") -> None:
        elapsed = self.get_time() - self.started
        if completed != self.completed:
            self.completed, self.counted_at = completed, elapsed
        self.description = description or self.description
        if elapsed >= self.next_line:
            self.say()
            self.next_line = min(2 * max(elapsed, PLAIN_FIRST), elapsed + PLAIN_EVERY)

    def say(self) -> None:
        elapsed = self.get_time() - self.started
        left = time_left(elapsed, self.completed, self.total, self.counted_at, self.expected)
        estimate = " (estimate)" if left is not None and not self.completed else ""
        left_text = f"about {duration(left)} left{estimate}" if left is not None else "time left: after the first steps"
        share = self.completed / self.total if self.total else 0.0
        doing = f" ({self.description})" if self.description else ""
        self.write(f"{PLAIN_PREFIX}{share:.0%} done, {duration(elapsed)} elapsed, {left_text}{doing}")


class RunProgress:
    """A single bar over every batch still to train in this run, with an ETA for the whole run; where
    the output is not a terminal, plain lines (PlainLines) instead. `terminal`: None = ask the console."""

    def __init__(
        self,
        total_steps: int,
        quiet: bool,
        get_time=None,
        expected_seconds: float | None = None,
        terminal: bool | None = None,
    ):
        self.quiet = quiet
        self.progress = None
        self.plain = None
        if not quiet and not (live_terminal() if terminal is None else terminal):
            write = lambda line: print(line, flush=True)  # noqa: E731
            self.plain = PlainLines(total_steps, expected_seconds, write, get_time or time.monotonic)
        elif not quiet:
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
        elif self.plain is not None:
            self.plain.update(completed, description)

    def advance(self, steps: int, description: str = "") -> None:
        """For progress counted here (a member's `fit`): `steps` more done."""
        if self.progress is not None:
            self.progress.update(self.task, advance=steps, **({"description": description} if description else {}))
        elif self.plain is not None:
            self.plain.update(self.plain.completed + steps, description)


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
