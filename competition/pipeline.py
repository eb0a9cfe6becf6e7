"""`kaggle-mnist run` as a plain function: the data fetched, the run trained here or on Kaggle's GPUs,
its submission written, and (if asked) submitted, each stage's own function called in turn. The CLI's
`train` and `run` call it; so can a notebook or a test."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from competition import backend, data
from competition.errors import UserError
from competition.kaggle.machines import DEFAULT_ACCELERATOR
from competition.training.settings import TrainSettings

Log = Callable[[str], None]
PLACES = ("here", "kaggle")


def check_place(on: str, fresh: bool = False, only: list[str] | None = None) -> None:
    """What only training here can do, refused before any work when the run trains on Kaggle."""
    if on not in PLACES:
        raise UserError(f"--on must be here or kaggle, not {on!r}")
    if on == "kaggle" and fresh:
        raise UserError("--fresh is for training here; --on kaggle re-attaches to or installs the run")
    if on == "kaggle" and only:
        raise UserError("--members is for training here; --on kaggle trains the whole run")


def train(
    settings: TrainSettings,
    on: str = "here",
    accelerator: str = DEFAULT_ACCELERATOR,
    kernels: int = 1,
    fresh: bool = False,
    quiet: bool = False,
    workers: int = 0,
    only: list[str] | None = None,
    log: Log = print,
    status_line: Log | None = None,
) -> Path:
    """The run for `settings` trained (or continued) here, the backend chosen first, or on Kaggle's GPUs,
    with nothing of Keras loaded here; returns its folder."""
    check_place(on, fresh, only)
    if on == "kaggle":
        from competition.kaggle import kernels as kaggle_kernels

        return kaggle_kernels.train_on_kaggle(settings, accelerator, kernels, log=log, status_line=status_line)
    backend.select(settings.backend)
    from competition.training import train as training

    return training.train(settings, fresh=fresh, quiet=quiet, workers=workers, only=only)


def run(
    settings: TrainSettings,
    source: Path | None = None,
    tta: bool = False,
    weights: str = "mean",
    submit: bool = False,
    message: str | None = None,
    on: str = "here",
    accelerator: str = DEFAULT_ACCELERATOR,
    kernels: int = 1,
    fresh: bool = False,
    quiet: bool = False,
    workers: int = 0,
    log: Log = print,
    status_line: Log | None = None,
) -> dict:
    """Fetch, train, predict and (with `submit`) submit and wait for the score; returns what `predict`
    wrote (its file, the blend, the accuracy)."""
    if settings.holdout and submit:
        raise UserError(
            "--holdout predicts held-out rows of train.csv, not test.csv, so there is nothing to submit: "
            "drop --submit (or --holdout)"
        )
    check_place(on, fresh)
    data.fetch(source=source, log=log)
    run_dir = train(settings, on, accelerator, kernels, fresh, quiet, workers, log=log, status_line=status_line)
    if tta:
        backend.select(settings.backend)  # TTA runs the models (after --on kaggle, Keras is not loaded yet)
    from competition.kaggle import submission
    from competition.scoring import predict as predicting

    result = predicting.predict(run_dir.name, tta=tta, weights=weights, log=log)
    if submit:
        submission.submit(Path(result["file"]), message, wait=True, log=log)
    return result
