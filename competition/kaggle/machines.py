"""Kaggle's GPU machines as `train --on kaggle` sees them: the shapes it may push, what each is assumed to
train per second, how many sessions an account runs at once, and the estimate printed before a push.
Keras-free."""

from __future__ import annotations

import math
from collections.abc import Callable

from competition import environ
from competition.errors import UserError
from competition.kaggle.contract import STOP_MARGIN_SECONDS
from competition.training.settings import TrainSettings

DEFAULT_ACCELERATOR = "NvidiaTeslaT4"
# Kaggle's GPU machine shapes as `kaggle kernels push --accelerator` names them (Kaggle/kaggle-cli,
# docs/kernels.md). Every account has NvidiaTeslaT4 (two T4s); some shapes are only lent for some
# competitions or accounts, and Kaggle says so when it refuses the push.
GPU_SHAPES = (
    "NvidiaTeslaT4",
    "NvidiaTeslaT4Highmem",
    "NvidiaL4",
    "NvidiaL4X1",
    "NvidiaTeslaA100",
    "NvidiaH100",
    "NvidiaRtxPro6000",
)
RETIRED_SHAPES = {"NvidiaTeslaP100": "NvidiaTeslaT4"}  # Kaggle runs a T4 where a P100 is asked for
# Training images per second for the estimate before a push, per machine shape. ASSUMED, not
# measured: no session of this project has run on Kaggle's GPUs. 3,000 images/s per T4 (batch 256,
# mixed float16, XLA) is a cautious guess for a 15 M multiply-add network; the estimate errs long.
GPU_IMAGES_PER_SECOND = {"NvidiaTeslaT4": 2 * 3_000, "NvidiaTeslaT4Highmem": 2 * 3_000}
KERNEL_START_SECONDS = 180  # a kernel's start: the image, the imports, the data (also a guess)
# An account runs at most this many GPU sessions at once, batch kernels and open notebooks together;
# Kaggle refuses a push beyond it ("Maximum batch GPU session count of 2 reached").
GPU_SESSIONS = 2
WEEKLY_GPU_HOURS = 30  # what Kaggle lends a verified account, said beside the estimate


def _print(message: str) -> None:
    print(message, flush=True)


def machine_shape(accelerator: str, log: Callable[[str], None] = _print) -> str:
    """The shape to push for `--accelerator`: a GPU shape as it is, a retired one as what Kaggle runs in
    its place (said in one line); a TPU or unknown shape refused in one line."""
    if accelerator in GPU_SHAPES:
        return accelerator
    if accelerator in RETIRED_SHAPES:
        replacement = RETIRED_SHAPES[accelerator]
        log(f"{accelerator} is retired on Kaggle (it runs a T4 in its place): pushing {replacement}")
        return replacement
    if accelerator.lower().startswith("tpu"):
        raise UserError(
            f"--accelerator {accelerator} is a TPU: this Keras model would train on the TPU machine's CPU, "
            f"for hours; choose a GPU shape ({DEFAULT_ACCELERATOR}, two T4s, is every account's)"
        )
    raise UserError(
        f"--accelerator {accelerator} is not a Kaggle GPU shape: choose one of {', '.join(GPU_SHAPES)}"
    )


def gpu_seconds(settings: TrainSettings, train_rows: int, accelerator: str, parts: int = 1) -> float | None:
    """The GPU time a run should take on `accelerator` (None where no rate is known): its training
    images at GPU_IMAGES_PER_SECOND, plus each kernel's start (image, imports, data)."""
    rate = GPU_IMAGES_PER_SECOND.get(accelerator)
    if rate is None:
        return None
    # The rate is for today's width; a wider network costs width^2 the multiply-adds an image (every
    # layer but the first and last scales with both its inputs and its outputs: 1.5x is 2.24x the
    # training FLOPs, benchmarks/README.md), and a GPU that is busy at width 1 is slower by about that.
    rate /= settings.width**2
    return len(settings.members) * settings.epochs * train_rows / rate + parts * KERNEL_START_SECONDS


def estimate_line(estimate: float | None, accelerator: str, kernels: int, width: float = 1.0) -> str:
    if estimate is None:
        return (
            f"No GPU time estimate for {accelerator} (no training rate known for it); Kaggle stops a session "
            f"after {environ.session_seconds() / 3600:.0f} h, and this run then continues in a further kernel by itself"
        )
    per_kernel = estimate / kernels
    session = environ.session_seconds()
    sessions = math.ceil(per_kernel / (session - STOP_MARGIN_SECONDS))
    more = (
        f"; that is longer than one session ({session / 3600:.0f} h), so each kernel stops in "
        f"time and continues in a further one, about {sessions} in all"
        if sessions > 1
        else ""
    )
    wider = f" at width 1, over {width:g}^2 at width {width:g}" if width != 1 else ""
    return (
        f"Estimated GPU time: about {clock(estimate)} on {accelerator} "
        f"(at {GPU_IMAGES_PER_SECOND[accelerator]:,} training images/s{wider}: an assumed rate, not yet "
        f"measured on Kaggle), of the about {WEEKLY_GPU_HOURS} GPU hours Kaggle lends an account a week{more}"
    )



def clock(seconds: float) -> str:
    """Seconds as H:MM:SS."""
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"
