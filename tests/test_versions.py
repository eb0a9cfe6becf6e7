"""The supported versions: pyproject.toml's floors are the releases of Kaggle's image that CI tests, and
anything older is refused in one line, here and first thing in a Kaggle kernel."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib

from competition import versions
from competition.kaggle import script as kernel_script
from competition.training.settings import TrainSettings
from tests.conftest import ROOT


def _pinned() -> dict[str, str]:
    lines = (ROOT / ".ci" / "kaggle-image.txt").read_text().splitlines()
    pins = dict(line.split("==") for line in lines if line.strip() and not line.startswith("#"))
    return {("tensorflow" if name == "tensorflow-cpu" else name): pin for name, pin in pins.items()}


def _floors() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + project["optional-dependencies"]["tensorflow"]
    return {m[1]: m[2] for r in requirements if (m := re.fullmatch(r"([\w-]+)>=([\d.]+)", r))}


def test_the_floors_are_the_kaggle_image_releases_that_ci_tests():
    pinned, floors = _pinned(), _floors()
    assert {"tensorflow", "keras", "typer", "kaggle"} <= pinned.keys()
    for name, pin in pinned.items():
        assert name in floors, f"{name} is pinned for Kaggle's image but has no floor in pyproject.toml"
        assert versions.release(floors[name]) == versions.release(pin), (name, floors[name], pin)
    for module, floor in versions.FLOORS.items():
        assert versions.release(floors[module]) == floor, module


def test_the_python_floor_is_what_kaggle_clients_install_on():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["requires-python"] == ">=3.11"  # every kaggle >= 2.0 declares it


def test_too_old_or_missing_packages_are_named_with_the_command_that_mends_them():
    assert versions.problem({"keras": "3.13.2", "typer": "0.24.2", "tensorflow": "2.20.0"}) is None
    assert versions.problem({"keras": "3.15.1", "typer": "0.29.2", "tensorflow": "2.21.0rc1"}) is None
    line = versions.problem({"keras": "3.12.1", "typer": "0.24.0", "tensorflow": None})
    assert line.startswith("keras 3.12.1 is older than 3.13; tensorflow is not installed")
    assert line.endswith("pip install -U 'keras>=3.13' 'tensorflow>=2.20'")
    assert "typer 0.24.0" not in line


def test_the_installed_packages_pass():
    versions.require("tensorflow")


def test_a_kernel_on_an_image_too_old_stops_first_with_one_line(tmp_path):
    # A Keras 3.12 first on the path, as an older image would have it; the real one stays importable.
    fake = tmp_path / "site"
    (fake / "keras-3.12.0.dist-info").mkdir(parents=True)
    (fake / "keras-3.12.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: keras\nVersion: 3.12.0\n"
    )
    script = tmp_path / "script.py"
    script.write_text(kernel_script.kernel_script(TrainSettings().resolved(gpu=True)))
    env = {"PYTHONPATH": str(fake), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines == [
        "kaggle-mnist: this kernel image cannot run it: keras 3.12.0 is older than 3.13 (kaggle-mnist "
        "needs keras >= 3.13, typer >= 0.24, tensorflow >= 2.20): pip install -U 'keras>=3.13'"
    ]
    assert "Fetching" not in result.stdout and not (tmp_path / "data").exists()
