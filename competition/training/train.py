"""`kaggle-mnist train`: a stratified k-fold ensemble of seeded CNNs, one immutable folder per run.

The story of one command: load the data, resolve the settings for this device, find the run with the
same identity or create it (runs/), repair what is damaged, say how long it will take on a CPU
(estimate.py), train the members that are not done, in this process or in workers side by side
(member.py, worker.py), then score the run. Rerunning the same command continues an unfinished run:
finished members are kept as they are, a half-trained one resumes from its last finished epoch.
Import this after `backend.select(...)`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from pathlib import Path

import numpy as np

from competition import backend, data, locks, paths
from competition.errors import SessionDeadline, UserError
from competition.progress import RunProgress, console, duration, results_table
from competition.runs import folder as runs
from competition.runs.folder import Run, member_name
from competition.runs.identity import make_identity
from competition.runs.rows import RunRows, run_rows
from competition.scoring import ensemble
from competition.scoring.expected import explain
from competition.scoring.score import score_run
from competition.training import estimate, member, worker
from competition.training.settings import TrainSettings


def train(
    settings: TrainSettings,
    fresh: bool = False,
    quiet: bool = False,
    workers: int = 0,
    only: list[str] | None = None,
) -> Path:
    """Trains (or continues) the run for `settings`; returns its folder.

    `workers`: processes training members side by side; 0 = one per visible GPU, or on a CPU what
    `worker.cpu_workers` chooses.
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
    _check_enough_rows(rows.labels, settings.folds)
    if not gpus and not settings.cpu_threads:
        # From the whole run, not what is left of it, so a resumed run keeps its thread count.
        train_rows = len(rows.labels) - len(rows.labels) // settings.folds
        side_by_side = worker.cpu_workers(settings, len(settings.members), train_rows)
        threads = max(1, backend.cpu_cores() // side_by_side)
        settings = dataclasses.replace(settings, cpu_threads=threads, cpu_workers=side_by_side)
    member.configure_device(settings, gpus)
    identity = make_identity(settings, dataset)
    unknown = sorted(set(only or []) - {member_name(*m) for m in settings.members})
    if unknown:
        raise UserError(
            f"no member {', '.join(unknown)} in a {settings.folds}x{settings.seeds} run: "
            f"names run from {member_name(0, 0)} to {member_name(settings.folds - 1, settings.seeds - 1)}"
        )
    # Finding or creating the run is one step for one process at a time, so two commands started
    # together cannot both create it; the run itself is then held for as long as this command trains.
    with contextlib.ExitStack() as held:
        with locks.hold(paths.ensembles_dir() / ".lock", f"the runs in {paths.ensembles_dir()}", wait=True):
            run = None if fresh else Run.matching(identity)
            new = run is None
            if new:
                run = runs.create(settings, identity, rows.labels, gpus)
            held.enter_context(locks.hold(run.dir / ".lock", f"run {run.dir}"))
        was_finished = run.finished
        damaged = run.repair(rows.labels, log=console.print)
        if was_finished and not damaged:
            console.print(
                f"This exact run is already trained: {run.dir} (CV accuracy "
                f"{run.metrics['cv_accuracy']:.4%}). Use --fresh to train it again in a new folder."
            )
            return run.dir
        if new:
            console.print(f"Training {len(settings.members)} members into {run.dir}")
        else:
            console.print(f"Continuing the {'damaged' if was_finished else 'unfinished'} run {run.dir}")
        todo = [m for m in settings.members if not run.member_done(*m)]
        if only is not None:
            todo = [m for m in todo if member_name(*m) in only]
        wall = _train_members(run, todo, rows, gpus, workers, quiet, started, worker_start)
        missing = [m for m in settings.members if not run.member_done(*m)]
        if missing:
            console.print(
                f"{len(settings.members) - len(missing)} of {len(settings.members)} members trained in "
                f"{run.dir}; the same command without --members trains the other {len(missing)}"
            )
            return run.dir
        _score(run, rows, wall, whole=len(todo) == len(settings.members))
        return run.dir


def _train_members(run: Run, todo, rows: RunRows, gpus, workers, quiet, started, worker_start) -> dict:
    """Trains `todo` under one progress bar, after the CPU estimate; returns the command's timing."""
    settings = run.settings
    folds = run.array("folds.npy")
    runs.check_free_space(run.dir, len(todo))
    # On a CPU: as many processes of the run's thread count as the cores hold, at most the two measured
    # (a run resumed on a bigger machine keeps its thread count, so its numbers stay the same).
    auto = len(gpus) or max(1, min(2, backend.cpu_cores() // max(1, settings.cpu_threads)))
    workers = min(len(todo), workers or auto)
    steps_per_epoch = -(-int(np.sum(folds != 0)) // settings.batch_size)
    estimated = expected = None  # expected: training from here, the bar's ETA until steps are counted
    if todo and not gpus:
        start = worker_start if workers > 1 else 0.0
        expected = estimate.cpu_estimate(
            settings, todo, rows.images, folds, len(rows.test_images), workers, start
        )
        if expected is not None:
            estimated = expected + time.perf_counter() - started  # the whole command, as wall_seconds
    total_steps = len(todo) * settings.epochs * steps_per_epoch
    with RunProgress(total_steps, quiet, expected_seconds=expected) as progress:
        try:
            # A last round's members train in processes of their own thread count (worker.phases).
            if workers > 1 or any(map(settings.trains_alone, todo)):
                worker.spawn(run, todo, workers, gpus, steps_per_epoch, progress)
            else:
                member.train_members(run, todo, rows, folds, progress)
        except SessionDeadline:
            raise SessionDeadline(run.dir) from None
    return {
        "wall_seconds": time.perf_counter() - started,  # this command's; a continued run spent more
        "estimated_seconds": estimated,  # what the CPU estimate said before training, if it ran
        "workers": workers,
    }


def _score(run: Run, rows: RunRows, wall: dict, whole: bool) -> None:
    """The finished run's CV (and held-out accuracy, expected submission score) into metrics.json."""
    settings = run.settings
    wall = {**wall, "wall_seconds_is_whole_run": whole}
    metrics = score_run(run, rows.labels, run.array("folds.npy"), wall, rows.held_labels)
    console.print(results_table(metrics["members"], metrics["fold_accuracy"], metrics["cv_accuracy"]))
    console.print(
        f"CV accuracy {metrics['cv_accuracy']:.4%} over {len(rows.labels):,} rows; trained in "
        f"{duration(wall['wall_seconds'])}{'' if whole else ' (this session)'}; run saved in {run.dir}"
    )
    if "holdout" in metrics:
        console.print(
            ensemble.holdout_line(metrics["holdout"], f"the mean of all {len(settings.members)} members")
        )
    note = explain(metrics["expected_submission"], metrics["cv_accuracy"], settings.folds, settings.seeds)
    console.print(f"[dim]{note}.[/dim]")


def _check_enough_rows(labels: np.ndarray, folds: int) -> None:
    smallest = int(np.bincount(labels, minlength=10).min())
    if smallest < folds:
        raise UserError(
            f"{folds} folds need at least {folds} rows of every digit, but one digit has {smallest}: "
            "use a larger --subset or fewer --folds"
        )
