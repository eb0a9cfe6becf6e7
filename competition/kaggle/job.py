"""What runs INSIDE a Kaggle kernel that `kaggle-mnist train --on kaggle` pushed (script.py builds the
script that calls `run_in_kernel`; home.py, on the user's machine, brings its output home).

Runs on Kaggle's image, with its versions (the oldest supported: TensorFlow 2.20, Keras 3.13); may
import Keras, through `train`. This module's text is part of every pushed script (the package is
embedded in it), so an edit here changes every kernel's script. What the output holds, and how the other
side checks it, is contract.py.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from competition import data, environ, paths, storage
from competition.errors import SessionDeadline, UserError
from competition.kaggle.contract import ARCHIVE, RECEIPT, STOP_MARGIN_SECONDS, Receipt, extract
from competition.runs.folder import Run, member_name
from competition.training.settings import TrainSettings


def run_in_kernel(
    settings_values: dict, members: list[str] | None, session_ends: float | None = None
) -> Path:
    """Inside the kernel: fetch from the mounted input, continue a stopped run found there, train until
    done or until the session nearly ends, and pack the run (and a receipt saying which) for download."""
    from competition import backend

    settings = TrainSettings.from_dict(settings_values)
    data.fetch(log=_print)
    continue_from_input()
    backend.select(settings.backend)
    from competition.training import train

    if session_ends is not None:
        margin = min(STOP_MARGIN_SECONDS, (session_ends - time.time()) / 10)
        # An environment variable, so the worker processes (one per GPU) see it too.
        os.environ[environ.DEADLINE] = str(session_ends - margin)

    try:
        # Not quiet: the kernel's log is no terminal, so train prints plain progress lines (share done,
        # time left) that `--on kaggle` reads from the live log into its status line.
        run_dir, finished = train.train(settings, quiet=False, only=members), True
    except SessionDeadline as stop:
        run_dir, finished = stop.run_dir, False
    run = Run(run_dir)
    done = [member_name(*m) for m in run.members if run.member_done(*m)]
    working = paths.workspace()
    archive = working / ARCHIVE
    with storage.atomic_path(archive) as tmp:
        shutil.make_archive(str(tmp.with_suffix("")), "zip", run_dir.parent, run_dir.name)
    receipt = Receipt(run_dir.name, storage.sha256_file(archive), members, finished, done)
    receipt.save(working / RECEIPT)
    # Only the archive and its receipt are output worth downloading.
    shutil.rmtree(paths.data_dir().parent, ignore_errors=True)
    shutil.rmtree(run_dir.parent, ignore_errors=True)
    how = "packed" if finished else "stopped before the session's end and packed to continue"
    _print(f"kaggle-mnist: run {run_dir.name} {how} into {archive} (sha256 {receipt.sha256})")
    return archive


def continue_from_input() -> None:
    """A run an earlier kernel stopped, mounted as this one's input: put back in ensembles/, where
    `train` finds it and continues it (finished members kept, the half-trained one from its backup)."""
    for receipt_path in sorted((paths.kaggle_root() / "input").rglob(RECEIPT)):
        try:
            receipt = Receipt.load(receipt_path)
        except ValueError:
            raise UserError(f"{receipt_path} is damaged: the earlier kernel's output cannot be continued") from None
        archive = receipt_path.with_name(ARCHIVE)
        if receipt.finished or not archive.is_file():
            continue
        if storage.sha256_file(archive) != receipt.sha256:
            raise UserError(f"{archive} does not match its receipt: the earlier kernel's output is damaged")
        target = paths.ensembles_dir()
        if not (target / receipt.run_id).exists():
            target.mkdir(parents=True, exist_ok=True)
            extract(archive, receipt.run_id, target, str(archive))
        _print(f"kaggle-mnist: continuing run {receipt.run_id} ({len(receipt.done)} members done before)")


def _print(message: str) -> None:
    print(message, flush=True)
