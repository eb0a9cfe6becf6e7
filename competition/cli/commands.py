"""The commands of `kaggle-mnist`: each parses its options and calls one plain function of its stage
(pipeline.py chains them for `run`). The options several share are options.py; how a command ends,
error or interrupt, is exits.py."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Annotated

import typer

from competition import environ, pipeline
from competition.cli.options import (
    AcceleratorOption,
    FreshOption,
    KernelsOption,
    OnOption,
    QuietOption,
    RunArgument,
    Weights,
    WeightsOption,
    Where,
    WorkersOption,
    settings_options,
)
from competition.errors import UserError
from competition.kaggle.machines import DEFAULT_ACCELERATOR
from competition.training.settings import TrainSettings

app = typer.Typer(
    name="kaggle-mnist",
    help="Top honest scores on Kaggle's digit-recognizer: fetch the data, train a k-fold ensemble of "
    "batch-norm CNNs, write submission.csv and submit it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        from competition import __version__

        typer.echo(f"kaggle-mnist {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    debug: Annotated[
        bool, typer.Option("--debug", help=f"Show the traceback behind an error (or set {environ.DEBUG}=1).")
    ] = False,
) -> None:
    """Top honest scores on Kaggle's digit-recognizer.

    Outputs go to the current folder (in a Kaggle notebook, /kaggle/working): data/, ensembles/,
    submissions/ and submission.csv.
    """
    if debug:
        os.environ[environ.DEBUG] = "1"  # for the worker processes too


@app.command()
def fetch(
    source: Annotated[
        Path | None,
        typer.Option(
            "--from",
            help="A local copy instead of the Kaggle API: the competition zip, or a folder holding "
            "train.csv and test.csv.",
            show_default=False,
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Fetch again even if valid data is already in place.")
    ] = False,
) -> None:
    """Get train.csv and test.csv into data/digit-recognizer/, validated and cached.

    Takes them from --from, else from the input mounted in a Kaggle notebook, else from the Kaggle API
    (credentials in ~/.kaggle/kaggle.json, KAGGLE_USERNAME/KAGGLE_KEY or KAGGLE_API_TOKEN).
    """
    from competition import data

    data.fetch(source=source, force=force, log=typer.echo)


@app.command()
@settings_options
def train(
    settings: TrainSettings,
    workers: WorkersOption = 0,
    members: Annotated[
        str | None,
        typer.Option(
            help="Train only these members, comma-separated (f0-s0 is fold 0, seed 0), e.g. to split a "
            "run over machines or to study one fold; the run is scored when its last member is trained.",
            show_default=False,
        ),
    ] = None,
    fresh: FreshOption = False,
    quiet: QuietOption = False,
    on: OnOption = Where.here,
    accelerator: AcceleratorOption = DEFAULT_ACCELERATOR,
    kernels: KernelsOption = 1,
) -> None:
    """Train the k-fold ensemble into ensembles/<run-id>/.

    Rerunning the same command continues an interrupted run: finished members are kept, a half-trained
    member resumes from its last finished epoch. Uses a GPU when the backend finds one.
    """
    only = [name.strip() for name in members.split(",") if name.strip()] if members else None
    with _output(on, quiet) as (log, status_line):
        pipeline.train(settings, on.value, accelerator, kernels, fresh, quiet, workers, only, log, status_line)


@contextlib.contextmanager
def _output(on: Where, quiet: bool):
    """(log, status line) for a command: on Kaggle in a terminal, a live status line that follows the
    kernels and log lines above it; elsewhere plain lines."""
    from competition.progress import live_terminal

    if on != Where.kaggle or quiet or not live_terminal():
        yield typer.echo, None
        return
    from rich.console import Console

    console = Console(highlight=False)
    with console.status("Kaggle: pushing") as status:
        yield console.print, lambda line: status.update(line)


@app.command("kernel-script")
@settings_options
def kernel_script(settings: TrainSettings) -> None:
    """Print the script that `train --on kaggle` runs, to paste into a Kaggle notebook by hand
    (add the competition as input and a GPU accelerator): `kaggle-mnist kernel-script > train.py`."""
    from competition.kaggle.script import kernel_script as script

    typer.echo(script(settings.resolved(gpu=True)), nl=False)


@app.command()
def predict(
    run: RunArgument = None,
    tta: Annotated[
        bool, typer.Option("--tta", help="Also average over one-pixel shifts of every image.")
    ] = False,
    weights: WeightsOption = Weights.mean,
) -> None:
    """Average the members' test probabilities into submissions/<run-id>.csv and ./submission.csv."""
    from competition import backend as backends

    if tta:  # only TTA runs the models; averaging saved probabilities needs no Keras (seconds faster)
        backends.select(_run_backend(run))
    from competition.scoring import predict as predicting

    predicting.predict(run, tta=tta, weights=weights.value, log=typer.echo)


@app.command()
def evaluate(
    run: RunArgument = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object instead of tables.")] = False,
) -> None:
    """Out-of-fold accuracy of the ensemble and each member, per-digit precision/recall, confusion matrix."""
    import json

    from rich.console import Console

    from competition.scoring import evaluate as evaluating

    console = Console(highlight=False)
    result = evaluating.evaluate(run)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    for table in evaluating.tables(result):
        console.print(table)


@app.command()
def report(
    run: RunArgument = None,
) -> None:
    """Pictures of a run in ensembles/<run-id>/report/: confusion matrix, confidently wrong digits,
    learning curves, augmentation preview, members against the ensemble, and report.md."""
    from competition import backend as backends

    backends.select(_run_backend(run))
    from competition.scoring import report as reporting

    for path in reporting.report(run):
        typer.echo(str(path))


@app.command("predict-images")
def predict_images(
    paths: Annotated[
        list[Path], typer.Argument(help="PNG/JPEG files, or folders of them.", show_default=False)
    ],
    run: Annotated[
        str | None, typer.Option("--run", help="Run id in ensembles/ (default: the latest finished run).")
    ] = None,
    csv: Annotated[
        Path | None, typer.Option("--csv", help="Also write path,label,probability to this CSV file.")
    ] = None,
) -> None:
    """Read your own digit pictures (any size, colour or polarity, digit anywhere) and predict them."""
    from competition import backend as backends

    backends.select(_run_backend(run))
    from competition.scoring import images

    images.show_predictions(images.predict_images(paths, run=run, csv=csv), log=lambda line: typer.echo(line, err=True))
    if csv is not None:
        typer.echo(f"Wrote {csv}")


@app.command()
def submit(
    file: Annotated[
        Path | None, typer.Option("--file", help="The CSV to submit (default: ./submission.csv).")
    ] = None,
    message: Annotated[
        str | None,
        typer.Option("--message", help="Submission description (default: run id and CV accuracy)."),
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait for Kaggle to score it and print the public score.")
    ] = False,
) -> None:
    """Validate a submission file and send it to Kaggle; every submission is recorded in submissions/ledger.csv."""
    from competition.kaggle import submission

    submission.submit(file, message, wait, log=typer.echo)


@app.command()
def submissions() -> None:
    """Show the ledger (CV accuracy and expected score of each submitted run) beside Kaggle's public scores."""
    from competition.kaggle import ledger

    ledger.show_submissions(log=typer.echo)


@app.command("run")
@settings_options
def run_all(
    settings: TrainSettings,
    source: Annotated[
        Path | None, typer.Option("--from", help="Local copy of the data instead of the API.")
    ] = None,
    tta: Annotated[bool, typer.Option("--tta", help="Test-time augmentation in predict.")] = False,
    weights: WeightsOption = Weights.mean,
    do_submit: Annotated[
        bool, typer.Option("--submit", help="Submit the result and wait for its score.")
    ] = False,
    message: Annotated[str | None, typer.Option("--message", help="Submission description.")] = None,
    workers: WorkersOption = 0,
    fresh: FreshOption = False,
    quiet: QuietOption = False,
    on: OnOption = Where.here,
    accelerator: AcceleratorOption = DEFAULT_ACCELERATOR,
    kernels: KernelsOption = 1,
) -> None:
    """Fetch, train, predict and (with --submit) submit: the whole job in one command. Takes every
    option of `train` that says how to train."""
    with _output(on, quiet) as (log, status_line):
        pipeline.run(
            settings, source, tta, weights.value, do_submit, message, on.value, accelerator, kernels, fresh,
            quiet, workers, log, status_line,
        )


def _run_backend(run: str | None) -> str:
    """The backend the run that the command will use was trained with, read without importing Keras."""
    from competition.runs.folder import Run

    try:
        return Run.open(run).backend
    except UserError:
        return "tensorflow"  # the command itself then says what is wrong, in its own words
