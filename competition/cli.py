"""`kaggle-mnist`: a thin Typer adapter. Each command parses options and calls one plain function."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from competition.errors import UserError

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
) -> None:
    """Top honest scores on Kaggle's digit-recognizer.

    Outputs go to the current folder (in a Kaggle notebook, /kaggle/working): data/, ensembles/,
    submissions/ and submission.csv.
    """


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


def main() -> None:
    try:
        app()
    except UserError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        typer.echo("interrupted: run the same command again to continue where it stopped", err=True)
        sys.exit(130)
    except Exception as exc:  # a bug: still one line, but say it is ours and how to report it
        typer.echo(
            f"error: unexpected {type(exc).__name__}: {exc} (this is a bug in kaggle-mnist; please report it "
            "with the command you ran)",
            err=True,
        )
        sys.exit(70)
