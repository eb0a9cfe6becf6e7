"""Finding trained runs in ensembles/: the latest finished one, or one named by the user.

Kept free of Keras so that commands that only read a run's files (evaluate, submit) start fast.
"""

from __future__ import annotations

from pathlib import Path

from competition import paths
from competition.errors import UserError


def latest_run(required: str = "metrics.json") -> Path:
    """The most recently finished run (the one later commands use when not told)."""
    runs = sorted(
        (p for p in paths.ensembles_dir().glob("*/") if (p / required).is_file()),
        key=lambda p: (p / required).stat().st_mtime,
    )
    if not runs:
        raise UserError(f"no trained run in {paths.ensembles_dir()}: run `kaggle-mnist train` first")
    return runs[-1]


def resolve_run(run: str | None) -> Path:
    if run is None:
        return latest_run()
    candidate = Path(run)
    for path in (candidate, paths.ensembles_dir() / run):
        if (path / "metrics.json").is_file():
            return path
        if (path / "config.json").is_file():
            raise UserError(
                f"run {path} is unfinished: rerun the train command that started it to complete it"
            )
    raise UserError(
        f"no run '{run}' in {paths.ensembles_dir()}: give a run id from there, or omit it for the latest"
    )
