"""`kaggle-mnist`, the command line: a thin Typer adapter over each stage's plain functions.

    commands.py   the commands: options in, one function called
    options.py    the options several commands share, and every training setting as an option
    exits.py      one `error:` line and an exit code for every way a command can end
"""

from __future__ import annotations

from competition.cli import exits
from competition.cli.commands import app


def main() -> None:
    exits.run(app)
