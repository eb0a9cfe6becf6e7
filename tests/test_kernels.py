"""`train --on kaggle` through the real kaggle client against the fake Kaggle, whose kernels really run
the pushed script: push, follow, download, verify, install; re-attach; every failure in one line."""

from __future__ import annotations

import json
import signal
import time
from importlib.metadata import version

import pytest

from competition.settings import RECIPES, TrainSettings
from tests import digits
from tests.conftest import ROOT, assert_clean_failure, run_cli, start_cli
from tests.fake_kaggle import FakeKaggle, KaggleState
from tests.test_fetch_api import kaggle_env

# float32: the fake kernel runs on this CPU, where the GPU default (mixed float16) is emulated and slow.
KAGGLE_CLIENT = tuple(int(part) for part in version("kaggle").split(".")[:2])
QUICK = ["--folds", "2", "--seeds", "1", "--epochs", "1", "--subset", "2000", "--precision", "float32"]


@pytest.fixture
def kaggle(workspace, tmp_path):
    csvs = tmp_path / "csvs"
    digits.write_csvs(csvs, n_train=2400, n_test=60)
    (tmp_path / "kernels").mkdir()
    state = KaggleState(kernel_root=tmp_path / "kernels", kernel_input=csvs)
    with FakeKaggle(state) as fake:
        yield fake


@pytest.fixture
def env(workspace, tmp_path, kaggle) -> dict[str, str]:
    """The CLI's environment: credentials for the fake Kaggle, fast polling, the data fetched here."""
    values = {
        **kaggle_env(tmp_path, kaggle.proxy),
        "KAGGLE_MNIST_KERNEL_POLL": "0.3",
        "KAGGLE_MNIST_KERNEL_STALE": "20",
    }
    assert run_cli("fetch", "--from", str(tmp_path / "csvs"), cwd=workspace, env=values).returncode == 0
    return values


def installed(workspace) -> list[str]:
    return sorted(p.name for p in (workspace / "ensembles").iterdir() if not p.name.startswith("."))


def test_train_on_kaggle_pushes_once_and_installs_a_run_predict_uses(workspace, kaggle, env):
    result = run_cli("train", "--on", "kaggle", *QUICK, cwd=workspace, env=env, timeout=600)
    assert result.returncode == 0, result.output
    assert len(kaggle.state.pushes) == 1
    push = kaggle.state.pushes[0]
    # A private script kernel on the competition's data, the accelerator named, no internet needed.
    assert push["kernelType"] == "script" and push["language"] == "python" and push["isPrivate"]
    assert push["competitionDataSources"] == ["digit-recognizer"] and push["machineShape"] == "NvidiaTeslaT4"
    assert not push.get("enableInternet")
    assert "Downloaded and verified the run from Kaggle" in result.stdout and "CV accuracy" in result.stdout
    (run_id,) = installed(workspace)
    run_dir = workspace / "ensembles" / run_id
    config = json.loads((run_dir / "config.json").read_text())
    assert config["settings"]["batch_size"] == 256  # resolved for the kernel's GPU
    predicted = run_cli("predict", cwd=workspace, env=env)
    assert predicted.returncode == 0 and run_id in predicted.stdout
    evaluated = run_cli("evaluate", "--json", cwd=workspace, env=env)
    assert evaluated.returncode == 0 and json.loads(evaluated.stdout)["rows"] == 2000
    reported = run_cli("report", cwd=workspace, env=env)
    assert reported.returncode == 0 and (run_dir / "report" / "report.md").is_file()
    assert not list((workspace / "ensembles").glob(".*partial*"))
    # The same command again: nothing pushed, the installed run named.
    again = run_cli("train", "--on", "kaggle", *QUICK, cwd=workspace, env=env)
    assert again.returncode == 0 and "already trained on Kaggle" in again.stdout
    assert len(kaggle.state.pushes) == 1


def test_interrupting_the_wait_detaches_and_the_same_command_reattaches(workspace, kaggle, env):
    kaggle.state.kernel_queue_seconds = 4.0
    full_env = {**{k: v for k, v in __import__("os").environ.items() if not k.startswith("KAGGLE")}, **env}
    full_env["PYTHONPATH"] = str(ROOT)
    proc = start_cli(["train", "--on", "kaggle", *QUICK], cwd=workspace, env=full_env)
    record = workspace / "ensembles" / ".kaggle-kernels.json"
    deadline = time.monotonic() + 60
    while not (record.is_file() and "ref" in record.read_text()) and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, out + err
    assert "detached; the kernel keeps running on Kaggle" in err and "run the same command again" in err
    resumed = run_cli("train", "--on", "kaggle", *QUICK, cwd=workspace, env=env, timeout=600)
    assert resumed.returncode == 0, resumed.output
    assert "Re-attaching to the kernel already pushed for this run: tester/kaggle-mnist-" in resumed.stdout
    assert len(kaggle.state.pushes) == 1  # re-attached, not pushed again
    assert len(installed(workspace)) == 1


def test_a_failing_kernel_is_one_line_with_its_log_and_url(workspace, kaggle, env):
    kaggle.state.break_kernel = True
    result = run_cli("train", "--on", "kaggle", *QUICK, cwd=workspace, env=env, timeout=600)
    assert_clean_failure(
        result, "the kernel failed", "last log lines:", "test.csv", "https://www.kaggle.com/code/tester/"
    )
    assert installed(workspace) == []
    # Fixed on Kaggle's side: the same command pushes a new version rather than re-attaching to the failed one.
    kaggle.state.break_kernel = False
    again = run_cli("train", "--on", "kaggle", *QUICK, cwd=workspace, env=env, timeout=600)
    assert again.returncode == 0, again.output
    assert len(kaggle.state.pushes) == 2 and len(installed(workspace)) == 1


def test_kaggles_time_limit_is_named(workspace, kaggle, env):
    kaggle.state.kernel_failure = "Your notebook exceeded the session timeout of 12 hours"
    result = run_cli("train", "--on", "kaggle", *QUICK, cwd=workspace, env=env, timeout=600)
    assert_clean_failure(result, "the kernel hit Kaggle's time limit", "12 hours")


def test_members_split_over_two_kernels_make_one_run(workspace, kaggle, env):
    result = run_cli("train", "--on", "kaggle", *QUICK, "--kernels", "2", cwd=workspace, env=env, timeout=600)
    assert result.returncode == 0, result.output
    assert [p["slug"].rsplit("-", 1)[-1] for p in kaggle.state.pushes] == ["k1", "k2"]
    (run_id,) = installed(workspace)
    metrics = json.loads((workspace / "ensembles" / run_id / "metrics.json").read_text())
    assert sorted(m["name"] for m in metrics["members"]) == ["f0-s0", "f1-s0"] and metrics["rows"] == 2000
    assert run_cli("predict", cwd=workspace, env=env).returncode == 0


def test_damaged_output_is_never_installed(workspace, kaggle, env):
    kaggle.state.damage_output = True  # each output file answers 404 with an HTML body
    result = run_cli("train", "--on", "kaggle", *QUICK, cwd=workspace, env=env, timeout=600)
    # kaggle < 2.2 saves that body in the file's place and returns; newer clients raise on the 404.
    if KAGGLE_CLIENT < (2, 2):
        assert_clean_failure(result, "kaggle-mnist-run.json from kernel", "is damaged")
    else:
        assert_clean_failure(
            result, "no output of kernel", "(kaggle-mnist-run", "(404)", "same command again"
        )
    assert "competition" not in result.stderr
    assert installed(workspace) == []
    assert not list((workspace / "ensembles").glob(".*partial*"))


def test_a_stale_status_right_after_the_push_is_not_taken_for_this_version(workspace, kaggle, env):
    kaggle.state.stale_status = "ERROR"  # the previous version's
    result = run_cli("train", "--on", "kaggle", *QUICK, cwd=workspace, env=env, timeout=600)
    assert result.returncode == 0, result.output


def test_a_429_on_push_is_retried_and_pushes_once(workspace, kaggle, env):
    kaggle.state.failures["SaveKernel"] = [429]
    result = run_cli("train", "--on", "kaggle", *QUICK, cwd=workspace, env=env, timeout=600)
    assert result.returncode == 0, result.output
    assert kaggle.methods_called().count("SaveKernel") == 2 and len(kaggle.state.pushes) == 1


@pytest.mark.parametrize(
    "error, needle",
    [
        ("Phone verification is required to use GPU", "phone-verified"),
        ("You have exceeded your weekly GPU quota", "GPU quota on Kaggle is spent"),
        ("You must accept this competition's rules", "accept the rules"),
    ],
)
def test_push_refusals_are_one_line(workspace, kaggle, env, error, needle):
    kaggle.state.kernel_push_error = error
    assert_clean_failure(run_cli("train", "--on", "kaggle", *QUICK, cwd=workspace, env=env), needle)
    assert kaggle.state.pushes == []


@pytest.mark.parametrize(
    "status, needle", [(401, "rejected your credentials"), (403, "accept the competition rules")]
)
def test_credentials_and_rules_refused_on_push_are_one_line(workspace, kaggle, env, status, needle):
    kaggle.state.always["SaveKernel"] = status
    assert_clean_failure(run_cli("train", "--on", "kaggle", *QUICK, cwd=workspace, env=env), needle)
    assert kaggle.state.pushes == []


def test_run_on_kaggle_then_submits(workspace, tmp_path, kaggle, env):
    quick = [option for option in QUICK if option not in ("--subset", "2000")]
    result = run_cli(
        "run",
        "--on",
        "kaggle",
        *quick,
        "--from",
        str(tmp_path / "csvs"),
        "--submit",
        cwd=workspace,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.output
    assert len(kaggle.state.pushes) == 1 and kaggle.methods_called().count("CreateSubmission") == 1
    assert "Public score:" in result.stdout


def test_kernel_script_prints_a_script_a_notebook_can_run(workspace):
    result = run_cli("kernel-script", "--folds", "3", "--epochs", "7", cwd=workspace)
    assert result.returncode == 0, result.output
    compile(result.stdout, "train.py", "exec")
    assert '\\"folds\\": 3' in result.stdout and '\\"epochs\\": 7' in result.stdout
    assert "kernels.run_in_kernel(SETTINGS, MEMBERS)" in result.stdout


def script_settings(script: str) -> dict:
    """The settings a kernel script trains with (its SETTINGS line)."""
    line = next(line for line in script.splitlines() if line.startswith("SETTINGS = "))
    return json.loads(json.loads(line.removeprefix("SETTINGS = json.loads(").removesuffix(")")))


def test_a_recipe_fills_in_what_the_command_line_leaves_at_its_default(workspace):
    best = run_cli("kernel-script", "--recipe", "best", "--epochs", "7", cwd=workspace)
    assert best.returncode == 0, best.output
    settings = script_settings(best.stdout)
    recipe = {**RECIPES["best"], "epochs": 7}  # given explicitly: the command line wins
    assert {name: settings[name] for name in recipe} == recipe
    assert settings["folds"] == TrainSettings().folds  # not part of the recipe
    plain = script_settings(run_cli("kernel-script", cwd=workspace).stdout)
    assert {name: plain[name] for name in recipe} == {name: getattr(TrainSettings(), name) for name in recipe}
    # Written by hand to the default's value, an option still beats the recipe.
    seeds = script_settings(
        run_cli("kernel-script", "--recipe", "best", "--seeds", "2", cwd=workspace).stdout
    )
    assert seeds["seeds"] == 2 and seeds["epochs"] == RECIPES["best"]["epochs"]


def test_a_404_names_what_kaggle_did_not_find_not_the_competition():
    import requests

    from competition import kaggle_api

    response = requests.Response()
    response.status_code = 404
    response.url = "https://storage.example/kernel-output/tester/k1/kaggle-mnist-run.zip?sig=x"
    error = requests.HTTPError("404 Client Error", response=response)
    missing = ("output of kernel tester/k1", "run the same command again")
    message = kaggle_api._explain(error, "downloading the kernel's output", missing=missing).message
    assert message == (
        "Kaggle found no output of kernel tester/k1 (kaggle-mnist-run.zip) (404) while downloading the "
        "kernel's output: run the same command again"
    )
    # The competition's calls say so; any other call does not blame the competition.
    competition = kaggle_api._explain(error, "submitting", missing=kaggle_api.COMPETITION_MISSING)
    assert "no competition 'digit-recognizer'" in competition.message
    assert "competition" not in kaggle_api._explain(error, "pushing the kernel").message


@pytest.mark.parametrize("method", ["GetKernelSessionStatus", "ListKernelSessionOutput"])
def test_a_kernel_this_account_cannot_see_is_one_line(workspace, kaggle, env, method):
    # kaggle >= 2.0.1 raises a ValueError for a 401/403 on these calls, not an HTTP error.
    kaggle.state.always[method] = 403
    result = run_cli("train", "--on", "kaggle", *QUICK, cwd=workspace, env=env, timeout=600)
    assert_clean_failure(
        result, "refused access to the", "kernel tester/kaggle-mnist-", "(401/403)", "kaggle.json"
    )
    assert "cut short" not in result.stderr and "client failed" not in result.stderr
