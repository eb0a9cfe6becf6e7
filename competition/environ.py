"""The environment variables kaggle-mnist reads: read here and nowhere else (their table is in
docs/robustness.md). Plain Python, no Keras: both sides of the Kaggle route import it.

Each is read when it is needed, not when a module is imported, so a parent process or a test that
sets one is heeded. A value that is not a number fails in one line naming the variable. Not here: the
kaggle client's own variables (KAGGLE_CONFIG_DIR, KAGGLE_USERNAME, ...), read where kaggle/api.py
mirrors the client's lookup, and CUDA_VISIBLE_DEVICES, which training/worker.py honours as the user set it.
"""

from __future__ import annotations

import os
from pathlib import Path

from competition.errors import UserError

WORKSPACE = "KAGGLE_MNIST_WORKSPACE"
KAGGLE_ROOT = "KAGGLE_MNIST_KAGGLE_ROOT"
DEBUG = "KAGGLE_MNIST_DEBUG"
NETWORK_TIMEOUT = "KAGGLE_MNIST_NETWORK_TIMEOUT"
KERNEL_POLL = "KAGGLE_MNIST_KERNEL_POLL"
KERNEL_STALE = "KAGGLE_MNIST_KERNEL_STALE"
SESSION_SECONDS = "KAGGLE_MNIST_SESSION_SECONDS"
DEADLINE = "KAGGLE_MNIST_DEADLINE"
# Set by Kaggle in every notebook and kernel.
KAGGLE_RUN_TYPE = "KAGGLE_KERNEL_RUN_TYPE"


def workspace() -> Path | None:
    """The workspace the user chose, if any (else paths.workspace decides)."""
    value = os.environ.get(WORKSPACE)
    return Path(value) if value else None


def kaggle_root() -> Path:
    """Where a Kaggle notebook's mount is (tests fake one)."""
    return Path(os.environ.get(KAGGLE_ROOT) or "/kaggle")


def kaggle_run_type() -> str:
    return os.environ.get(KAGGLE_RUN_TYPE, "")


def debugging() -> bool:
    return os.environ.get(DEBUG, "") not in ("", "0")


def network_timeout() -> float:
    """Seconds a Kaggle API call may go without an answer before it fails."""
    return _seconds(NETWORK_TIMEOUT, 60)


def kernel_poll() -> float:
    """Seconds between looks at a running kernel."""
    return _seconds(KERNEL_POLL, 30)


def kernel_stale() -> float:
    """Seconds after a push during which Kaggle's answers may still be about the previous version."""
    return _seconds(KERNEL_STALE, 120)


def session_seconds() -> float:
    """A Kaggle session's limit: 12 hours, or shorter for an account with one (and for tests)."""
    return _seconds(SESSION_SECONDS, 12 * 3600)


def deadline() -> float | None:
    """Inside a kernel: the time (epoch seconds) at which training stops at the next epoch's end."""
    return _seconds(DEADLINE, None)


def _seconds(name: str, default: float | None) -> float | None:
    value = os.environ.get(name, "").strip()
    if not value:
        return None if default is None else float(default)
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise UserError(f"{name}={value!r} is not a number of seconds above 0: unset it or give one")
    return seconds
