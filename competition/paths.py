"""Where things live: the project's folders (the workspace, data/, ensembles/, submissions/, the
notebook's mount), each defined here once. The files inside them are named by the module that writes
them (a run's by runs/folder.py, the cache's by data.py, the kernels record by kaggle/record.py).

The workspace is the current directory, or `/kaggle/working` inside a Kaggle notebook.
`KAGGLE_MNIST_KAGGLE_ROOT` (environ.py) moves the notebook mount root (default `/kaggle`) so tests can fake one.
"""

from __future__ import annotations

import os
from pathlib import Path

from competition import COMPETITION, environ


def kaggle_root() -> Path:
    return environ.kaggle_root()


def in_kaggle_notebook() -> bool:
    # Kaggle sets KAGGLE_KERNEL_RUN_TYPE in every notebook; the mount is the fallback sign.
    return bool(environ.kaggle_run_type()) or (kaggle_root() / "input").is_dir()


def workspace() -> Path:
    override = environ.workspace()
    if override:
        return override
    working = kaggle_root() / "working"
    # In a notebook the current directory is usually /kaggle/working already, but a `%cd` elsewhere
    # (often into read-only /kaggle/input) must not send outputs there.
    if in_kaggle_notebook() and working.is_dir():
        return working
    return Path.cwd()


def data_dir() -> Path:
    """The CSVs and their cache. In a Kaggle notebook they go to /kaggle/temp, not /kaggle/working:
    Kaggle saves the latter as the notebook's output, and 175 MB of copies of its input are not
    output anyone wants (they come back from /kaggle/input in seconds)."""
    if not environ.workspace() and workspace() == kaggle_root() / "working":
        return kaggle_root() / "temp" / "data" / COMPETITION
    return workspace() / "data" / COMPETITION


def ensembles_dir() -> Path:
    return workspace() / "ensembles"


def submissions_dir() -> Path:
    return workspace() / "submissions"


def compile_cache_dir() -> Path:
    """JAX's cache of compiled programs: the user's own (it is trusted code), outside any workspace."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kaggle-mnist" / "jax"
