"""The commands: one-line errors for bad options, and every setting an option of train, run and
kernel-script."""

from __future__ import annotations

from competition import cli
from competition.training.settings import OPTIONS, TrainSettings
from tests.conftest import assert_clean_failure, run_cli


def _options(command: str) -> set[str]:
    """The option names a command's --help lists."""
    import typer

    params = typer.main.get_command(cli.app).commands[command].params
    return {name for p in params if p.param_type_name == "option" for name in p.opts + p.secondary_opts}


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


def test_train_run_and_kernel_script_take_every_setting_from_the_one_table():
    """Each setting's option is declared once (settings.OPTIONS); `run` and `kernel-script` take all
    that `train` does, so a run's config.json always turns back into a command each of them accepts."""
    flags = {name for option in OPTIONS.values() for name in option.flag.split("/")}
    assert len(flags) == len(OPTIONS) + sum("/" in o.flag for o in OPTIONS.values())
    for command in ("train", "run", "kernel-script"):
        assert flags | {"--recipe"} <= _options(command), command
    assert _options("train") - _options("run") == {"--members"}  # run finishes the run it trains
    # A run's resolved settings turn back into options that exist, the changed ones and only those.
    changed = TrainSettings(folds=3, seeds=2, epochs=4, dropout_rate=0.3, augment=False, backend="jax")
    options = changed.resolved(gpu=False).cli_options()
    assert options == [
        "--folds 3",
        "--seeds 2",
        "--epochs 4",
        "--dropout 0.3",
        "--no-augment",
        "--backend jax",
    ]
    assert {option.split(" ")[0] for option in options} <= flags

