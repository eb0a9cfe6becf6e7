"""`kaggle-mnist`: a thin Typer adapter. Each command parses options and calls one plain function."""

from __future__ import annotations

import errno
import functools
import inspect
import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Annotated

import typer

try:  # typer >= 0.25 carries its own copy of click, and its errors derive from TyperException
    from typer.exceptions import Abort, TyperException
except ModuleNotFoundError:  # typer <= 0.24 (Kaggle's image) raises click's own
    from click.exceptions import Abort
    from click.exceptions import ClickException as TyperException

from competition import environ
from competition.errors import UserError
from competition.kaggle.machines import DEFAULT_ACCELERATOR, GPU_SHAPES
from competition.training.settings import CHOICES, OPTIONS, RECIPES, Choice, Recipe, TrainSettings

DEFAULTS = TrainSettings()
WEIGHTS_HELP = (
    "mean (plain average of the members) or oof (blend weights from greedy selection, fitted fold by fold "
    "on the other folds' out-of-fold rows; kept only if not below the plain mean)."
)
WORKERS_HELP = (
    "Processes training members side by side; 0 = automatic: one per visible GPU; on a CPU with 2 or "
    "more cores, 2 processes sharing the cores for runs that train 40,000 images or more in all (members x epochs x rows), else 1."
)

# Options that several commands share, declared once.
RunArgument = Annotated[
    str | None, typer.Argument(help="Run id in ensembles/ (default: the latest finished run).")
]
QuietOption = Annotated[
    bool, typer.Option("--quiet", help="Plain log lines instead of the live progress bar.")
]
WorkersOption = Annotated[int, typer.Option(help=WORKERS_HELP)]
FreshOption = Annotated[
    bool, typer.Option("--fresh", help="Start a new run even if this one was trained or interrupted before.")
]
RecipeOption = Annotated[
    Recipe,
    typer.Option(
        help="default, or best: 3 seeds x 40 epochs with lighter augmentation, about 3x the training, "
        "sized for a GPU (docs/training.md). Options given explicitly override the recipe's."
    ),
]
Where = Choice("Where", {"here": "here", "kaggle": "kaggle"})
OnOption = Annotated[
    Where,
    typer.Option(
        "--on",
        help="here (this machine) or kaggle: push the run to a private Kaggle script kernel on Kaggle's GPUs, "
        "follow it, and bring the run home into ensembles/ (needs kaggle.json and the data fetched here).",
    ),
]
AcceleratorOption = Annotated[
    str,
    typer.Option(
        help=f"Kaggle GPU shape with --on kaggle: {DEFAULT_ACCELERATOR} (two T4s, every account's), or where "
        f"your account has them {', '.join(s for s in GPU_SHAPES if s != DEFAULT_ACCELERATOR)}. TPUs are "
        "refused (this model would train on their CPU)."
    ),
]
KernelsOption = Annotated[
    int,
    typer.Option(
        help="With --on kaggle: split the members over this many kernels, run two at a time (Kaggle's "
        "limit of GPU sessions per account); the rest wait here and are pushed as those end."
    ),
]
Weights = Choice("Weights", {"mean": "mean", "oof": "oof"})
WeightsOption = Annotated[Weights, typer.Option(help=WEIGHTS_HELP)]


def _settings(ctx: typer.Context, recipe: str, values: dict) -> TrainSettings:
    """TrainSettings from CLI options over the recipe's; its validation errors become one-line errors."""
    for name, value in RECIPES[recipe].items():
        source = ctx.get_parameter_source(name)
        if source is None or source.name in ("DEFAULT", "DEFAULT_MAP"):  # not given: the recipe's
            values[name] = value
    try:
        return TrainSettings(**values)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def settings_options(command):
    """Gives `command` --recipe and an option for every setting in settings.OPTIONS, after its own, and
    calls it with the one TrainSettings they make (its `settings` parameter)."""
    own = [p for p in inspect.signature(command, eval_str=True).parameters.values() if p.name != "settings"]
    keyword = inspect.Parameter.KEYWORD_ONLY
    made = [inspect.Parameter("recipe", keyword, default=Recipe.default, annotation=RecipeOption)]
    for name, option in OPTIONS.items():
        default = getattr(DEFAULTS, name)
        kind = CHOICES.get(name) or (bool | None if default is None else type(default))
        declared = typer.Option(*option.flag.split(" "), help=option.help, show_default=default is not None)
        made.append(inspect.Parameter(name, keyword, default=default, annotation=Annotated[kind, declared]))

    @functools.wraps(command)
    def with_settings(ctx: typer.Context, **values):
        settings = {name: values.pop(name) for name in OPTIONS}
        return command(_settings(ctx, values.pop("recipe"), settings), **values)

    context = inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)
    parameters = [context, *made, *(p.replace(kind=keyword) for p in own)]
    with_settings.__signature__ = inspect.Signature(parameters)
    with_settings.__annotations__ = {p.name: p.annotation for p in parameters}
    return with_settings


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

    if on == Where.kaggle and members:
        raise UserError("--members is for training here; --on kaggle trains the whole run")
    only = [name.strip() for name in members.split(",") if name.strip()] if members else None
    _train_here_or_on_kaggle(settings, on, accelerator, kernels, fresh, quiet, workers, only)


def _train_here_or_on_kaggle(
    settings: TrainSettings,
    on: Where,
    accelerator: str,
    kernels: int,
    fresh: bool,
    quiet: bool,
    workers: int,
    only: list[str] | None = None,
) -> Path:
    """`train` and `run`'s one branch: here (the backend chosen, then train.train) or on Kaggle's GPUs
    (nothing of Keras loaded). Returns the run's folder."""
    from competition import backend as backends

    if on == Where.kaggle:
        if fresh:
            raise UserError("--fresh is for training here; --on kaggle re-attaches to or installs the run")
        return _train_on_kaggle(settings, accelerator, kernels, quiet)
    backends.select(settings.backend)
    from competition.training import train as training

    return training.train(settings, fresh=fresh, quiet=quiet, workers=workers, only=only)


def _train_on_kaggle(settings: TrainSettings, accelerator: str, kernels: int, quiet: bool) -> Path:
    """Kaggle's GPUs instead of this machine's: nothing of Keras is loaded here."""
    from rich.console import Console

    from competition.kaggle import kernels as kaggle_kernels
    from competition.progress import live_terminal

    console = Console(highlight=False)
    if quiet or not live_terminal():
        return kaggle_kernels.train_on_kaggle(settings, accelerator, kernels, log=typer.echo)
    with console.status("Kaggle: pushing") as status:
        return kaggle_kernels.train_on_kaggle(
            settings, accelerator, kernels, log=console.print, status_line=lambda line: status.update(line)
        )


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
    from competition.kaggle import submission

    submission.show_submissions(log=typer.echo)


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
    from competition import backend as backends
    from competition import data

    if settings.holdout and do_submit:
        raise UserError(
            "--holdout predicts held-out rows of train.csv, not test.csv, so there is nothing to submit: "
            "drop --submit (or --holdout)"
        )
    if on == Where.kaggle and fresh:
        raise UserError("--fresh is for training here; --on kaggle re-attaches to or installs the run")
    data.fetch(source=source, log=typer.echo)
    run_dir = _train_here_or_on_kaggle(settings, on, accelerator, kernels, fresh, quiet, workers)
    if tta:
        backends.select(settings.backend)  # TTA runs the models (after --on kaggle, Keras is not loaded yet)
    from competition.kaggle import submission
    from competition.scoring import predict as predicting

    result = predicting.predict(run_dir.name, tta=tta, weights=weights.value, log=typer.echo)
    if do_submit:
        submission.submit(Path(result["file"]), message, wait=True, log=typer.echo)


def _run_backend(run: str | None) -> str:
    """The backend the run that the command will use was trained with, read without importing Keras."""
    from competition.runs.folder import Run

    try:
        return Run.open(run).backend
    except UserError:
        return "tensorflow"  # the command itself then says what is wrong, in its own words


def _interrupted() -> None:
    typer.echo("interrupted: run the same command again to continue where it stopped", err=True)
    sys.exit(128 + interrupt_signal)  # 130 for Ctrl-C, 143 for a SIGTERM, as the shell reports them


interrupt_requested = False  # set by on_interrupt: this process got a Ctrl-C or a SIGTERM
interrupt_signal = signal.SIGINT


def on_interrupt(signum, frame) -> None:
    """Ctrl-C as Python does it (KeyboardInterrupt), remembered: when it lands inside TensorFlow's
    tracing, TensorFlow can turn it into another exception (a TypeError from a tensor conversion), and
    that is still the user's Ctrl-C, not a bug. A SIGTERM (`kill`, `timeout`, a job scheduler, a
    notebook stopping its kernel) goes the same way: unlike Ctrl-C in a terminal it reaches this
    process alone, so only this process can stop the training workers it started."""
    global interrupt_requested, interrupt_signal
    interrupt_requested, interrupt_signal = True, signum
    raise KeyboardInterrupt


def main() -> None:
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not when SIGINT is ignored
        signal.signal(signal.SIGINT, on_interrupt)
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, on_interrupt)
    try:
        # Not standalone: Typer then raises usage errors instead of printing a usage block, so they
        # become the same one `error:` line as every other failure.
        code = app(standalone_mode=False)
    except TyperException as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # `kaggle-mnist` alone: the help, as before
            exc.show()
            sys.exit(exc.exit_code)
        ctx = getattr(exc, "ctx", None)
        where = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        message = exc.format_message().replace("Value error, ", "")
        typer.echo(f"error: {message}{where}", err=True)
        sys.exit(exc.exit_code)
    except Abort:
        _interrupted()
    except UserError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        _traceback_if_debugging()
        sys.exit(exc.exit_code)
    except OSError as exc:
        if interrupt_requested:
            _interrupted()
        if exc.errno not in _DISK_ERRORS:
            _bug(exc)
        where = f" ({exc.filename})" if exc.filename else ""
        typer.echo(
            f"error: {_DISK_ERRORS[exc.errno]}{where}: {exc.strerror}. Nothing half-written is used: "
            "free some space (or fix the permissions) and run the same command again to continue",
            err=True,
        )
        _traceback_if_debugging()
        sys.exit(74)  # EX_IOERR
    except KeyboardInterrupt:
        _interrupted()
    except SystemExit as exc:
        if exc.code == 130:  # Typer turns Ctrl-C into a silent exit 130
            _interrupted()
        raise
    except Exception as exc:
        if interrupt_requested:
            _interrupted()
        _bug(exc)
    # Outside the try: the SystemExit of _interrupted() would reach `except SystemExit` and say it twice.
    if code == 130:  # Typer turns Ctrl-C into exit code 130
        _interrupted()
    sys.exit(code if isinstance(code, int) else 0)


_DISK_ERRORS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is used up",
    errno.EROFS: "the folder is on a read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
}


def _bug(exc: BaseException) -> None:
    """A real bug: still one line, but say it is ours and how to report it; the traceback on request."""
    typer.echo(
        f"error: unexpected {type(exc).__name__}: {exc} (this is a bug in kaggle-mnist; please report it "
        f"with the command you ran and the traceback that {environ.DEBUG}=1 shows)",
        err=True,
    )
    _traceback_if_debugging()
    sys.exit(70)


def _traceback_if_debugging() -> None:
    if environ.debugging():
        traceback.print_exc()
