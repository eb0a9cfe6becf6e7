"""The script a kernel runs: printable for a notebook, its settings as the command line gave them."""

from __future__ import annotations

import json

from competition.training.settings import RECIPES, TrainSettings
from tests.conftest import run_cli


def script_settings(script: str) -> dict:
    """The settings a kernel script trains with (its SETTINGS line)."""
    line = next(line for line in script.splitlines() if line.startswith("SETTINGS = "))
    return json.loads(json.loads(line.removeprefix("SETTINGS = json.loads(").removesuffix(")")))


def test_kernel_script_prints_a_script_a_notebook_can_run(workspace):
    result = run_cli("kernel-script", "--folds", "3", "--epochs", "7", cwd=workspace)
    assert result.returncode == 0, result.output
    compile(result.stdout, "train.py", "exec")
    assert '\\"folds\\": 3' in result.stdout and '\\"epochs\\": 7' in result.stdout
    assert "kernel_job.run_in_kernel(SETTINGS, MEMBERS, STARTED + SESSION_SECONDS)" in result.stdout


def test_a_recipe_fills_in_what_the_command_line_leaves_at_its_default(workspace):
    best = run_cli("kernel-script", "--recipe", "best", "--epochs", "7", cwd=workspace)
    assert best.returncode == 0, best.output
    settings = script_settings(best.stdout)
    recipe = {**RECIPES["best"], "epochs": 7}  # given explicitly: the command line wins, and says so
    assert {name: settings[name] for name in recipe} == recipe
    assert best.stderr.strip() == f"note: --epochs 7 instead of --recipe best's {RECIPES['best']['epochs']}"
    assert settings["folds"] == TrainSettings().folds  # not part of the recipe
    plain = script_settings(run_cli("kernel-script", cwd=workspace).stdout)
    assert {name: plain[name] for name in recipe} == {name: getattr(TrainSettings(), name) for name in recipe}
    # Written by hand to the default's value, an option still beats the recipe.
    seeds = script_settings(
        run_cli("kernel-script", "--recipe", "best", "--seeds", "1", cwd=workspace).stdout
    )
    assert seeds["seeds"] == 1 and seeds["epochs"] == RECIPES["best"]["epochs"]

