"""How `kaggle-mnist` ends: every failure as one `error:` line and its exit code (1 to fix, 2 a bad
option, 70 a bug, 74 a full or read-only disk, 130 and 143 interrupted), a traceback only with --debug,
and Ctrl-C or SIGTERM stopping the command (and so its training workers) as an interrupt."""

from __future__ import annotations

import errno
import signal
import sys
import traceback
from collections.abc import Callable
from typing import NoReturn

import typer

try:  # typer >= 0.25 carries its own copy of click, and its errors derive from TyperException
    from typer.exceptions import Abort, TyperException
except ModuleNotFoundError:  # typer <= 0.24 (Kaggle's image) raises click's own
    from click.exceptions import Abort
    from click.exceptions import ClickException as TyperException

from competition import environ
from competition.errors import UserError


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


def run(app: Callable[..., object]) -> NoReturn:
    """Runs the Typer `app` on the command line and exits with its code, or with one line and the code
    that says what went wrong."""
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
