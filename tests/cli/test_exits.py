"""How a command ends: one line and an exit code for a full disk or a bug, --debug's traceback, Ctrl-C."""

from __future__ import annotations

import errno
import signal
import time

import pytest

from competition.cli import exits
from tests.conftest import assert_clean_failure, rerun_continues, run_cli, start_cli


@pytest.fixture
def sigint_restored():
    """exits.run installs its Ctrl-C and SIGTERM handlers in this (pytest's) process: put pytest's back
    after."""
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    for sig, handler in handlers.items():
        signal.signal(sig, handler)


def assert_said_interrupted_once(exit_info, capsys) -> None:
    assert exit_info.value.code == 130
    assert (
        capsys.readouterr().err.strip()
        == "interrupted: run the same command again to continue where it stopped"
    )


@pytest.mark.slow
def test_ctrl_c_says_how_to_continue(tiny_data):
    args = [
        "train",
        "--folds",
        "2",
        "--seeds",
        "1",
        "--epochs",
        "3",
        "--batch-size",
        "32",
        "--subset",
        "300",
        "--quiet",
    ]
    proc = start_cli(args, cwd=tiny_data)
    deadline = time.time() + 180
    while time.time() < deadline and not list((tiny_data / "ensembles").glob("*/members/f0-s0/history.csv")):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, out + err
    assert (
        err.strip().splitlines()[-1] == "interrupted: run the same command again to continue where it stopped"
    )
    assert err.count("interrupted:") == 1, err
    assert "Traceback" not in out + err
    rerun_continues(args, tiny_data)


def test_a_full_disk_is_one_line_not_a_bug(monkeypatch, capsys, sigint_restored):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", "/work/ensembles/x/model.keras")

    with pytest.raises(SystemExit) as exit_info:
        exits.run(full)
    err = capsys.readouterr().err
    assert exit_info.value.code == 74 and err.count("\n") == 1
    assert (
        err.startswith("error: the disk is full (/work/ensembles/x/model.keras)")
        and "run the same command" in err
    )


def test_debug_shows_the_traceback(workspace):
    plain = run_cli("evaluate", cwd=workspace)
    assert_clean_failure(plain, "no trained run")
    debug = run_cli("--debug", "evaluate", cwd=workspace)
    assert debug.returncode == 1 and "no trained run" in debug.stderr and "Traceback" in debug.stderr


def test_an_interrupt_that_typer_turned_into_exit_code_130_is_said_once(monkeypatch, capsys, sigint_restored):
    with pytest.raises(SystemExit) as exit_info:
        exits.run(lambda **kwargs: 130)
    assert_said_interrupted_once(exit_info, capsys)


def test_an_interrupt_that_tensorflow_turned_into_another_error_is_still_an_interrupt(
    monkeypatch, capsys, sigint_restored
):
    # Ctrl-C landing in TensorFlow's tracing can surface as a TypeError from a tensor conversion.
    def interrupted_then_wrapped(*args, **kwargs):
        try:
            exits.on_interrupt(signal.SIGINT, None)
        except KeyboardInterrupt:
            raise TypeError("Failed to convert elements of (None, 5) to Tensor") from None

    monkeypatch.setattr(exits, "interrupt_requested", False)
    with pytest.raises(SystemExit) as exit_info:
        exits.run(interrupted_then_wrapped)
    assert_said_interrupted_once(exit_info, capsys)

