from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from competition.kaggle import api as kaggle_api

ROOT = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(items) -> None:
    """A test that pushes runs to the fake Kaggle (its `kaggle` fixture) waits for kernels that train in
    processes of their own: slow."""
    for item in items:
        if item.module.__name__.endswith("test_kernels") and "kaggle" in item.fixturenames:
            item.add_marker(pytest.mark.slow)


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


@pytest.fixture
def workspace(tmp_path, monkeypatch) -> Iterator[Path]:
    """An empty workspace, a home with no credentials, and no Kaggle notebook mount."""
    ws = tmp_path / "ws"
    ws.mkdir()
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.chdir(ws)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("KAGGLE_MNIST_KAGGLE_ROOT", str(tmp_path / "no-kaggle"))
    for var in (
        "KAGGLE_MNIST_WORKSPACE",
        "KAGGLE_KERNEL_RUN_TYPE",
        "KAGGLE_CONFIG_DIR",
        "KAGGLE_USERNAME",
        "KAGGLE_KEY",
        "KAGGLE_API_TOKEN",
        "XDG_CONFIG_HOME",
        "XDG_CACHE_HOME",
        "JAX_COMPILATION_CACHE_DIR",
    ):
        monkeypatch.delenv(var, raising=False)
    kaggle_api.reset_client()
    yield ws
    kaggle_api.reset_client()


def cli_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment every CLI process of the tests gets: this one without the user's Kaggle settings,
    this checkout on the path, TensorFlow quiet, a wide console; then `env` on top."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("KAGGLE")}
    full_env.update(
        {
            "PYTHONPATH": str(ROOT),
            "KERAS_BACKEND": full_env.get("KERAS_BACKEND", "tensorflow"),
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "COLUMNS": "200",
        }
    )
    full_env.update(env or {})
    return full_env


def kaggle_env(tmp_path: Path, proxy: str, credentials: str = "file") -> dict[str, str]:
    """The environment that routes the real kaggle client to the fake Kaggle at `proxy`, with
    `credentials` in a kaggle.json file, the environment, a token, or wrong."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {
        "HOME": str(home),
        "KAGGLE_API_ENVIRONMENT": "LOCALHOST",
        "http_proxy": proxy,
        "HTTP_PROXY": proxy,
        "no_proxy": "",
        "NO_PROXY": "",
        "KAGGLE_MNIST_KAGGLE_ROOT": str(tmp_path / "no-kaggle"),
        "KAGGLE_MNIST_NETWORK_TIMEOUT": "3",
    }
    if credentials == "file":
        (home / ".kaggle").mkdir(exist_ok=True)
        config = home / ".kaggle" / "kaggle.json"
        config.write_text(json.dumps({"username": "tester", "key": "secret-key"}))
        config.chmod(0o600)
    elif credentials == "env":
        env.update({"KAGGLE_USERNAME": "tester", "KAGGLE_KEY": "secret-key"})
    elif credentials == "token":
        env["KAGGLE_API_TOKEN"] = "good-token"
    elif credentials == "wrong":
        env.update({"KAGGLE_USERNAME": "tester", "KAGGLE_KEY": "wrong-key"})
    return env


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 240) -> Result:
    """The real command line in a fresh process, as a user would run it (with a fast clock for the
    retries' sleeps: cli_runner.py)."""
    proc = subprocess.run(
        [sys.executable, "-m", "tests.cli_runner", *args],
        cwd=cwd,
        env=cli_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def start_cli(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """A CLI process to interrupt with SIGINT, as Ctrl-C does. A shell's background jobs ignore SIGINT,
    and children inherit that (CI launched that way would never see the signal): this one gets the
    default."""
    return subprocess.Popen(
        [sys.executable, "-m", "competition", *args],
        cwd=cwd,
        env=cli_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def assert_clean_failure(result: Result, *needles: str) -> None:
    assert result.returncode != 0, result.output
    assert "Traceback" not in result.output, result.output
    err = result.stderr.strip()
    assert err.startswith("error: "), result.output
    for needle in needles:
        assert needle.lower() in err.lower(), f"{needle!r} not in {err!r}"


# The settings of the shared trained run.
SHARED_RUN = dict(folds=2, seeds=2, epochs=2, batch_size=16)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> tuple[Path, Path]:
    """One tiny trained run (2 folds x 2 seeds, 300 synthetic digits) shared by the tests that read a
    run (predict, evaluate, report, predict-images) or damage a copy of it. Returns (workspace, run
    folder)."""
    from competition import backend, data
    from competition.training.settings import TrainSettings
    from tests import digits

    backend.select("tensorflow")
    from competition.training import train

    root = tmp_path_factory.mktemp("trained")
    workspace = root / "ws"
    workspace.mkdir()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KAGGLE_MNIST_WORKSPACE", str(workspace))
        digits.write_csvs(root / "csvs", n_train=300, n_test=40)
        data.fetch(root / "csvs", log=lambda _: None)
        run_dir = train.train(TrainSettings(**SHARED_RUN), quiet=True)
    return workspace, run_dir


@pytest.fixture
def in_run(trained_run, monkeypatch) -> tuple[Path, Path]:
    """The shared trained run, with its workspace as the current one."""
    workspace, run_dir = trained_run
    monkeypatch.setenv("KAGGLE_MNIST_WORKSPACE", str(workspace))
    monkeypatch.chdir(workspace)
    return workspace, run_dir


@pytest.fixture
def run_copy(trained_run, tmp_path, monkeypatch) -> tuple[Path, Path]:
    """A private copy of the shared trained run (2 folds x 2 seeds), free to damage."""
    workspace, run_dir = trained_run
    copy = tmp_path / "ws"
    shutil.copytree(workspace, copy)
    monkeypatch.setenv("KAGGLE_MNIST_WORKSPACE", str(copy))
    monkeypatch.chdir(copy)
    return copy, copy / "ensembles" / run_dir.name


# A run small enough to train in seconds: 2 members of 1 epoch on 150 synthetic digits each.
TINY = dict(folds=2, seeds=1, epochs=1, batch_size=32, subset=300)


@pytest.fixture
def tiny_data(workspace, tmp_path):
    """A workspace holding 600 synthetic training digits and 40 test digits, fetched."""
    from competition import data
    from tests import digits

    digits.write_csvs(tmp_path / "csvs", n_train=600, n_test=40)
    data.fetch(tmp_path / "csvs", log=lambda _: None)
    return workspace


# What the commit before the package's layout changed wrote: a run trained here (bncnn at width 0.25,
# 2 members of 1 epoch on the first 300 of tiny_data's digits), one trained through the fake Kaggle with
# its kernels record, and a ledger with one submission scored by the fake Kaggle.
SAVED_BEFORE = ROOT / "tests" / "fixtures" / "saved-before"
SAVED_LOCAL_RUN, SAVED_KAGGLE_RUN = "20261207-132737-bncnn-2x1", "20261207-132819-bncnn-2x1"
SAVED_OPTIONS = ["--folds", "2", "--seeds", "1", "--epochs", "1", "--batch-size", "32", "--subset", "300", "--width", "0.25"]


@pytest.fixture
def saved_before(tiny_data) -> Path:
    """tiny_data's workspace holding what an earlier version saved (SAVED_BEFORE): its runs, kernels
    record and ledger, on the same data."""
    for name in ("ensembles", "submissions"):
        shutil.copytree(SAVED_BEFORE / name, tiny_data / name)
    return tiny_data


def member_files(run_dir: Path) -> dict[str, int]:
    return {
        str(p.relative_to(run_dir)): p.stat().st_mtime_ns
        for p in (run_dir / "members").rglob("*")
        if p.is_file()
    }


def rerun_continues(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> None:
    """The same `kaggle-mnist` command again, as the user is told to: it continues the run and ends."""
    rerun = run_cli(*args, cwd=cwd, env=env, timeout=300)
    assert rerun.returncode == 0 and "Continuing the unfinished run" in rerun.stdout, rerun.output


@pytest.fixture(autouse=True)
def float32_after():
    """Training sets Keras' global dtype policy (mixed bfloat16 on this CPU, mixed float16 with the GPU
    settings): put float32 back after every test, so no test depends on which ran before it."""
    yield
    keras = sys.modules.get("keras")
    if keras is not None:
        keras.mixed_precision.set_global_policy("float32")
