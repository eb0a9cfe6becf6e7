"""The command line as a user meets it: one-line errors, exit codes, Ctrl-C, help, the option table."""

from __future__ import annotations

import errno
import os
import signal
import time

import pytest

from competition import cli
from competition.cli import exits
from competition.errors import UserError
from competition.training.settings import OPTIONS, TrainSettings
from tests.conftest import ROOT, assert_clean_failure, rerun_continues, run_cli, start_cli


@pytest.mark.slow
def test_ctrl_c_says_how_to_continue(tiny_data):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
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
    proc = start_cli(args, cwd=tiny_data, env=env)
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
    rerun_continues(args, tiny_data, env)


def test_train_errors_are_one_line(workspace, tmp_path):
    assert_clean_failure(run_cli("train", "--folds", "2", cwd=workspace), "kaggle-mnist fetch")
    assert_clean_failure(
        run_cli("train", "--arch", "vgg", cwd=workspace), "'vgg' is not one of 'bncnn'"
    )
    assert_clean_failure(run_cli("train", "--folds", "1", cwd=workspace), "--folds must be at least 2")
    assert_clean_failure(run_cli("train", "--backend", "theano", cwd=workspace), "'theano' is not one of")
    assert_clean_failure(run_cli("train", "--batch-size", "-1", cwd=workspace), "--batch-size and --lr")
    assert_clean_failure(
        run_cli("train", "--early-stopping", "-3", cwd=workspace), "--early-stopping must be 0 (off)"
    )


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


def test_a_missing_backend_library_is_one_line_with_the_install_command(monkeypatch):
    import importlib.util

    from competition import backend as backends

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "jax" else real(name, *a)
    )
    monkeypatch.delitem(__import__("sys").modules, "keras", raising=False)
    with pytest.raises(
        UserError, match="the jax backend needs jax, which is not installed here: pip install jax"
    ):
        backends.select("jax")


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


def _options(command: str) -> set[str]:
    """The option names a command's --help lists."""
    import typer

    params = typer.main.get_command(cli.app).commands[command].params
    return {name for p in params if p.param_type_name == "option" for name in p.opts + p.secondary_opts}


def test_train_run_and_kernel_script_take_every_setting_from_the_one_table():
    """Each setting's option is declared once (settings.OPTIONS); `run` and `kernel-script` take all
    that `train` does, so a run's config.json always turns back into a command each of them accepts."""
    flags = {name for option in OPTIONS.values() for name in option.flag.split("/")}
    assert len(flags) == len(OPTIONS) + sum("/" in o.flag for o in OPTIONS.values())
    for command in ("train", "run", "kernel-script"):
        assert flags | {"--recipe"} <= _options(command), command
    assert _options("train") - _options("run") == {"--members"}  # run finishes the run it trains
    # A run's resolved settings turn back into options that exist, the changed ones and only those.
    changed = TrainSettings(folds=3, seeds=1, epochs=4, dropout_rate=0.3, augment=False, backend="jax")
    options = changed.resolved(gpu=False).cli_options()
    assert options == [
        "--folds 3",
        "--seeds 1",
        "--epochs 4",
        "--dropout 0.3",
        "--no-augment",
        "--backend jax",
    ]
    assert {option.split(" ")[0] for option in options} <= flags
