"""`kaggle-mnist train --on kaggle`: the run trained on Kaggle's GPUs, followed from here, brought home.

Runs on the USER'S machine and stays free of Keras (`--on kaggle` loads none of it); what runs inside
the kernel is job.py. This module tells the story in order; each step is a module of its own:
machines.py (the shape and the estimate), script.py (what is pushed), follow.py (pushing and following),
record.py (the kernels pushed), home.py (the output checked, merged and installed).

A private *script* kernel is pushed with the competition as its data source, the accelerator set
explicitly (`enable_gpu` alone gets a P100, which the image's PyTorch no longer supports), and this
package embedded in the script, so nothing is installed from the internet and the image's own
TensorFlow and Keras are used. Inside, the script runs the same `train` (both GPUs of a T4 x2 through
the usual worker processes) and leaves the run in /kaggle/working as one zip beside a receipt with its
sha256 (contract.py). Here, the kernel is followed with a live status line; Ctrl-C only detaches, and
the same command re-attaches (kernels are recorded per run identity in ensembles/.kaggle-kernels.json).
The output is verified (checksum, the run's settings and data identical to the local ones, every member
file present) before it is moved into ensembles/<run-id>/, where predict, evaluate, report and submit
use it like a local run.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from competition import data, environ, locks, paths
from competition.errors import UserError
from competition.kaggle import api as kaggle_api
from competition.kaggle.follow import Follow, Plan, shares
from competition.kaggle.home import bring_home, installed_run
from competition.kaggle.machines import DEFAULT_ACCELERATOR, estimate_line, gpu_seconds, machine_shape
from competition.kaggle.record import KernelRecord
from competition.runs.identity import make_identity
from competition.runs.rows import run_rows
from competition.training.settings import TrainSettings

Log = Callable[[str], None]


def _print(message: str) -> None:
    print(message, flush=True)


def train_on_kaggle(
    settings: TrainSettings,
    accelerator: str = DEFAULT_ACCELERATOR,
    kernels: int = 1,
    log: Log = _print,
    status_line: Callable[[str], None] | None = None,
    poll_seconds: float | None = None,
) -> Path:
    """Trains the run for `settings` on Kaggle (split over `kernels` kernels, at most GPU_SESSIONS at a
    time, each continued in a further kernel if Kaggle's session limit stops it); returns its folder."""
    if kernels < 1:
        raise UserError("--kernels must be 1 or more")
    accelerator = machine_shape(accelerator, log)
    poll = poll_seconds if poll_seconds is not None else environ.kernel_poll()
    dataset = data.load(log=log)  # the run is checked against this data when it comes back
    expected = settings.resolved(gpu=True)
    identity = make_identity(expected, dataset)
    # Not from the cached arrays' checksums: the key names the kernels recorded for this command.
    keyed = {k: identity[k] for k in ("settings", "train_sha256", "test_sha256")}
    key = hashlib.sha256(
        json.dumps({**keyed, "accelerator": accelerator, "kernels": kernels}, sort_keys=True).encode()
    ).hexdigest()[:12]
    root = paths.ensembles_dir()
    root.mkdir(parents=True, exist_ok=True)
    with locks.hold(root / f".kaggle-{key}.lock", f"the Kaggle run {key}"):
        done = installed_run(identity)
        if done is not None:
            log(
                f"This exact run is already trained on Kaggle and installed: {done.dir} "
                f"(CV accuracy {done.metrics['cv_accuracy']:.4%})."
            )
            return done.dir
        members = shares(expected, kernels)
        labels = run_rows(expected, dataset).labels
        estimate = gpu_seconds(expected, len(labels) - len(labels) // expected.folds, accelerator, kernels)
        log(estimate_line(estimate, accelerator, kernels, expected.width))
        record = KernelRecord(root)
        entry = record.entry(key, accelerator)
        if entry.kernels:
            refs = ", ".join(k.ref for k in entry.live())
            log(f"Re-attaching to the kernels already pushed for this run{': ' + refs if refs else ''}")
        plan = Plan(key, expected, members, accelerator, estimate, record)
        follow = Follow(plan, log, status_line)
        try:
            follow.run(poll)
        except KeyboardInterrupt:
            urls = ", ".join(kaggle_api.kernel_url(k.ref) for k in entry.live())
            raise UserError(
                f"detached; the kernels keep running on Kaggle ({urls or 'none running'}; the API cannot "
                "stop one, its page can): run the same command again to re-attach",
                exit_code=130,
            ) from None
        finally:
            follow.streams.close()
        run = bring_home(entry, identity, dataset, root, key, log)
    log(
        f"CV accuracy {run.metrics['cv_accuracy']:.4%} over {run.metrics['rows']:,} rows, trained on Kaggle; "
        f"run saved in {run.dir}"
    )
    return run.dir

