"""`train --on kaggle` through the real kaggle client against the fake Kaggle, whose kernels really run
the pushed script: push, follow, download, verify, install; re-attach; every failure in one line."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from importlib.metadata import version

import pytest

from competition import data
from competition.kaggle import follow, home, machines
from competition.training.settings import RECIPES, TrainSettings
from tests import digits
from tests.conftest import ROOT, assert_clean_failure, run_cli, start_cli
from tests.fake_kaggle import FakeKaggle, KaggleState
from tests.test_fetch_api import kaggle_env

# float32: the fake kernel runs on this CPU, where the GPU default (mixed float16) is emulated and slow.
KAGGLE_CLIENT = tuple(int(part) for part in version("kaggle").split(".")[:3])
# Two epochs, so that the run a kernel stopped mid-member continues is this one (and is replayed).
QUICK = ["--folds", "2", "--seeds", "1", "--epochs", "2", "--subset", "2000", "--precision", "float32"]


@pytest.fixture(scope="session")
def replay_dir(tmp_path_factory):
    """Kernel runs kept for replay, shared by this session's test processes (pytest-xdist gives each
    its own temporary folder, inside one they share)."""
    base = tmp_path_factory.getbasetemp()
    return (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "kernel-replays"


@pytest.fixture
def kaggle(workspace, tmp_path, replay_dir):
    csvs = tmp_path / "csvs"
    digits.write_csvs(csvs, n_train=2400, n_test=60)
    (tmp_path / "kernels").mkdir()
    state = KaggleState(kernel_root=tmp_path / "kernels", kernel_input=csvs, replay_dir=replay_dir)
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
    data.fetch(tmp_path / "csvs", log=lambda _: None)  # into the workspace, as `fetch --from` does
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
    assert re.fullmatch(r"\d{8}-\d{6}-bncnn-2x1", run_id), run_id  # the run's own id, as trained
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
    proc = start_cli(["train", "--on", "kaggle", *QUICK], cwd=workspace, env=env)
    record = workspace / "ensembles" / ".kaggle-kernels.json"
    deadline = time.monotonic() + 60
    while not (record.is_file() and "ref" in record.read_text()) and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, out + err
    assert "detached; the kernels keep running on Kaggle" in err and "run the same command again" in err
    resumed = run_cli("train", "--on", "kaggle", *QUICK, cwd=workspace, env=env, timeout=600)
    assert resumed.returncode == 0, resumed.output
    assert "Re-attaching to the kernels already pushed for this run: tester/kaggle-mnist-" in resumed.stdout
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
    # Never saved in the file's place (as kaggle < 2.2's own download does): a 404 is a failure.
    assert_clean_failure(result, "no output of kernel", "(kaggle-mnist-run", "(404)", "same command again")
    assert "competition" not in result.stderr
    assert installed(workspace) == []
    assert not list((workspace / "ensembles").glob(".*partial*"))


def test_a_stale_status_right_after_the_push_is_not_taken_for_this_version(workspace, kaggle, env):
    kaggle.state.stale_status = "ERROR"  # the previous version's
    result = run_cli("train", "--on", "kaggle", *QUICK, cwd=workspace, env=env, timeout=600)
    assert result.returncode == 0, result.output


def test_a_404_right_after_the_push_is_waited_out_not_taken_for_a_deletion(workspace, kaggle, env):
    # Kaggle's API is eventually consistent: the first status calls can miss a version just pushed.
    kaggle.state.failures["GetKernelSessionStatus"] = [404, 404]
    result = run_cli("train", "--on", "kaggle", *QUICK, cwd=workspace, env=env, timeout=600)
    assert result.returncode == 0, result.output
    assert "deleted" not in result.output and len(kaggle.state.pushes) == 1


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
    result = run_cli(
        "run",
        "--on",
        "kaggle",
        *QUICK,
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
    assert "kernel_job.run_in_kernel(SETTINGS, MEMBERS, STARTED + SESSION_SECONDS)" in result.stdout


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


def test_the_gpu_estimate_prices_a_wider_network_by_its_multiply_adds():
    # bncnn at 1.5x and 2x width costs 2.24x and 3.97x the training FLOPs of width 1
    # (test_model.test_every_network_trains_and_prices_itself): width^2, within 1%.
    start = machines.KERNEL_START_SECONDS
    plain = TrainSettings().resolved(gpu=True)
    base = machines.gpu_seconds(plain, 33_600, "NvidiaTeslaT4") - start
    assert base == pytest.approx(10 * 20 * 33_600 / machines.GPU_IMAGES_PER_SECOND["NvidiaTeslaT4"])
    for width in (1.5, 2.0):
        wide = TrainSettings(width=width).resolved(gpu=True)
        assert machines.gpu_seconds(wide, 33_600, "NvidiaTeslaT4") - start == pytest.approx(width**2 * base)
    line = machines.estimate_line(3600.0, "NvidiaTeslaT4", 1, 1.5)
    assert "over 1.5^2 at width 1.5" in line
    assert "width" not in machines.estimate_line(3600.0, "NvidiaTeslaT4", 1)


def test_a_404_names_what_kaggle_did_not_find_not_the_competition():
    import requests

    from competition.kaggle import api as kaggle_api

    response = requests.Response()
    response.status_code = 404
    response.url = "https://storage.example/kernel-output/tester/k1/kaggle-mnist-run.zip?sig=x"
    error = requests.HTTPError("404 Client Error", response=response)
    missing = ("output of kernel tester/k1", "run the same command again")
    message = kaggle_api.explain(error, "downloading the kernel's output", missing=missing).message
    assert message == (
        "Kaggle found no output of kernel tester/k1 (kaggle-mnist-run.zip) (404) while downloading the "
        "kernel's output: run the same command again"
    )
    # The competition's calls say so; any other call does not blame the competition.
    competition = kaggle_api.explain(error, "submitting", missing=kaggle_api.COMPETITION_MISSING)
    assert "no competition 'digit-recognizer'" in competition.message
    assert "competition" not in kaggle_api.explain(error, "pushing the kernel").message


@pytest.mark.parametrize("method", ["GetKernelSessionStatus", "ListKernelSessionOutput"])
def test_a_kernel_this_account_cannot_see_is_one_line(workspace, kaggle, env, method):
    # kaggle >= 2.0.1 raises a ValueError for a 401/403 on these calls, not an HTTP error.
    kaggle.state.always[method] = 403
    result = run_cli("train", "--on", "kaggle", *QUICK, cwd=workspace, env=env, timeout=600)
    assert_clean_failure(
        result, "refused access to the", "kernel tester/kaggle-mnist-", "(401/403)", "kaggle.json"
    )
    assert "cut short" not in result.stderr and "client failed" not in result.stderr


# ----------------------------------------------------------------------------------------------
# Kaggle's limits, as the real service has them


def member_predictions(run_dir) -> dict[str, bytes]:
    """Every member's out-of-fold and test probabilities, as bytes: equal means equal to the last bit."""
    files = sorted((run_dir / "members").glob("*/test.npy")) + sorted((run_dir / "members").glob("*/oof.npz"))
    return {f"{p.parent.name}/{p.name}": p.read_bytes() for p in files}


def test_kernels_beyond_the_accounts_gpu_sessions_wait_here_and_all_finish(workspace, kaggle, env):
    # Two GPU sessions, one of them held by an open notebook: Kaggle refuses the second kernel's push
    # while the first holds the other session (queued a while, so even a replayed one holds it).
    kaggle.state.gpu_session_limit, kaggle.state.other_sessions = 2, 1
    kaggle.state.kernel_queue_seconds = 2.0
    result = run_cli("train", "--on", "kaggle", *QUICK, "--kernels", "2", cwd=workspace, env=env, timeout=900)
    assert result.returncode == 0, result.output
    assert "1 more kernel(s) wait here for a GPU session" in result.stdout
    assert len(kaggle.state.pushes) == 2 and kaggle.state.most_running == 1
    (run_id,) = installed(workspace)
    metrics = json.loads((workspace / "ensembles" / run_id / "metrics.json").read_text())
    assert sorted(m["name"] for m in metrics["members"]) == ["f0-s0", "f1-s0"]


def test_gpu_sessions_taken_by_other_notebooks_are_one_line(workspace, kaggle, env):
    kaggle.state.gpu_session_limit, kaggle.state.other_sessions = 2, 2
    result = run_cli("train", "--on", "kaggle", *QUICK, cwd=workspace, env=env)
    assert_clean_failure(result, "at most 2 GPU sessions per account", "stop one", "same command again")
    assert kaggle.state.pushes == []


def test_a_failed_kernel_whose_log_cannot_be_read_is_still_forgotten(workspace, kaggle, env):
    kaggle.state.break_kernel = True
    # The log read after the failure finds nothing (404); the failure is still reported and forgotten.
    kaggle.state.always["ListKernelSessionOutput"] = 404
    result = run_cli("train", "--on", "kaggle", *QUICK, cwd=workspace, env=env, timeout=600)
    assert_clean_failure(result, "the kernel failed", "no log", "the same command pushes it again")
    kaggle.state.break_kernel = False
    del kaggle.state.always["ListKernelSessionOutput"]
    again = run_cli("train", "--on", "kaggle", *QUICK, cwd=workspace, env=env, timeout=600)
    assert again.returncode == 0, again.output
    assert len(kaggle.state.pushes) == 2 and len(installed(workspace)) == 1


def test_a_retired_gpu_is_mapped_and_a_tpu_refused_in_one_line(workspace, kaggle, env):
    tpu = run_cli("train", "--on", "kaggle", *QUICK, "--accelerator", "TpuV6E8", cwd=workspace, env=env)
    assert_clean_failure(tpu, "TpuV6E8 is a TPU", "NvidiaTeslaT4")
    other = run_cli("train", "--on", "kaggle", *QUICK, "--accelerator", "Gpu9000", cwd=workspace, env=env)
    assert_clean_failure(other, "Gpu9000 is not a Kaggle GPU shape", "NvidiaTeslaT4")
    assert kaggle.state.pushes == []
    p100 = run_cli(
        "train",
        "--on",
        "kaggle",
        *QUICK,
        "--accelerator",
        "NvidiaTeslaP100",
        cwd=workspace,
        env=env,
        timeout=600,
    )
    assert p100.returncode == 0, p100.output
    assert "NvidiaTeslaP100 is retired on Kaggle" in p100.stdout
    assert [p["machineShape"] for p in kaggle.state.pushes] == ["NvidiaTeslaT4"]
    help_text = run_cli("train", "--help", cwd=workspace).stdout
    assert "NvidiaTeslaT4" in help_text and "P100" not in help_text


def test_a_stalled_output_download_ends_in_one_line_and_the_rerun_fetches_it(workspace, kaggle, env):
    kaggle.state.output_stall_seconds = 60
    stalled = {**env, "KAGGLE_MNIST_NETWORK_TIMEOUT": "2"}
    result = run_cli("train", "--on", "kaggle", *QUICK, cwd=workspace, env=stalled, timeout=600)
    assert_clean_failure(result, "did not answer in time", "downloading the kernel's output")
    assert installed(workspace) == []
    kaggle.state.output_stall_seconds = 0
    again = run_cli("train", "--on", "kaggle", *QUICK, cwd=workspace, env=env, timeout=600)
    assert again.returncode == 0, again.output
    assert len(kaggle.state.pushes) == 1 and len(installed(workspace)) == 1  # fetched, not pushed again


def test_progress_comes_from_the_live_log_where_the_client_streams_it(workspace, kaggle, env):
    # The kernel runs, its log growing, while the command follows it. Half a second a line: the last
    # member's line stays the latest for ~10 s, so a poll sees it even on a loaded machine (at 0.1 s a
    # line the whole replay took 3 s, and a slow first connection missed all of it).
    kaggle.state.replay_pace = 0.5
    result = run_cli("train", "--on", "kaggle", *QUICK, cwd=workspace, env=env, timeout=600)
    assert result.returncode == 0, result.output
    assert "Estimated GPU time: about" in result.stdout and "assumed rate" in result.stdout
    # The stored log is empty until the session ends (as on Kaggle), so a "member i/n" line in the
    # status can only have come from the live stream (kaggle >= 2.2.3). Which lines are taken from the
    # stream is checked without timing in test_the_log_stream_keeps_the_latest_progress_or_member_line.
    status = [line for line in result.stdout.splitlines() if line.startswith("Kaggle: ")]
    if KAGGLE_CLIENT >= (2, 2, 3):  # the first client with a log stream
        assert any(re.search(r"member \d/2 \(fold", line) for line in status), status
        # The kernel prints train's plain progress lines (its share done), which the stream carries.
        (kernel,) = kaggle.state.kernels.values()
        assert any(line.startswith("progress: ") and "% done" in line for line in kernel["log"])
    else:
        assert status and all("progress shows when the kernel ends" in line for line in status), status


def test_the_log_stream_keeps_the_latest_progress_or_member_line():
    log = [
        "Training 2 members into",
        "progress: 0% done, 0 s elapsed, time left: after the first steps",
        "member 1/2 (fold 0, seed 0): val acc 99.1000% in 4 s",
        "progress: 75% done, 8 s elapsed, about 3 s left",
        "Epoch 2/2",
    ]

    shown = [0]  # lines the kernel has logged so far

    def stream(ref):  # the client's stream: server-sent events, one per log line
        yield from ({"data": line + "\n"} for line in log[: shown[0]])

    streams = follow.LogStreams(stream)
    assert streams.can_stream and streams.latest() == ""
    seen = []
    for upto in range(1, len(log) + 1):
        shown[0] = upto
        streams.read("me/kernel")  # what the background thread does, here in step
        seen.append(streams.latest())
    assert seen == ["", log[1], log[2], log[3], log[3]]


def test_a_kernel_stopped_by_the_session_limit_continues_and_matches_an_uninterrupted_run(
    workspace, tmp_path, kaggle, env
):
    # A session limit of one second: each kernel stops after its first epoch past it and the next
    # continues from its output; members are trained in 3 sessions (f0 epoch 1 | f0 epoch 2, f1 epoch 1
    # | f1 epoch 2).
    short = {**env, "KAGGLE_MNIST_SESSION_SECONDS": "1"}
    result = run_cli("train", "--on", "kaggle", *QUICK, cwd=workspace, env=short, timeout=900)
    assert result.returncode == 0, result.output
    assert result.stdout.count("stopped before Kaggle's session limit") == 2
    assert len(kaggle.state.pushes) == 3
    first, second, third = (p["slug"] for p in kaggle.state.pushes)
    assert kaggle.state.pushes[1]["kernelDataSources"] == [first]
    assert kaggle.state.pushes[2]["kernelDataSources"] == [second]
    (run_id,) = installed(workspace)
    # The same run in one session, in another workspace on the same fake Kaggle (replayed where another
    # test has run it: the output of the same script on the same input, uninterrupted).
    other = tmp_path / "other"
    other.mkdir()
    assert run_cli("fetch", "--from", str(tmp_path / "csvs"), cwd=other, env=env).returncode == 0
    whole = run_cli("train", "--on", "kaggle", *QUICK, cwd=other, env=env, timeout=900)
    assert whole.returncode == 0, whole.output
    (other_id,) = installed(other)
    resumed = member_predictions(workspace / "ensembles" / run_id)
    assert len(resumed) == 4 and resumed == member_predictions(other / "ensembles" / other_id)


def test_a_session_killed_at_kaggles_limit_is_pushed_again_by_the_same_command(workspace, kaggle, env):
    kaggle.state.session_seconds = 2  # Kaggle kills it: nothing comes home
    result = run_cli("train", "--on", "kaggle", *QUICK, cwd=workspace, env=env, timeout=600)
    assert_clean_failure(result, "hit Kaggle's time limit", "the same command pushes it again")
    kaggle.state.session_seconds = 0
    again = run_cli("train", "--on", "kaggle", *QUICK, cwd=workspace, env=env, timeout=600)
    assert again.returncode == 0, again.output
    assert len(kaggle.state.pushes) == 2 and len(installed(workspace)) == 1


def test_a_kernel_that_finished_without_its_output_is_pushed_again(workspace, kaggle, env):
    kaggle.state.lose_output = True
    result = run_cli("train", "--on", "kaggle", *QUICK, cwd=workspace, env=env, timeout=600)
    assert_clean_failure(
        result, "finished but left no kaggle-mnist-run.json", "the same command pushes it again"
    )
    kaggle.state.lose_output = False
    again = run_cli("train", "--on", "kaggle", *QUICK, cwd=workspace, env=env, timeout=600)
    assert again.returncode == 0, again.output
    assert len(kaggle.state.pushes) == 2 and len(installed(workspace)) == 1


# ----------------------------------------------------------------------------------------------
# The guards on a run coming home, in-process (fast loop): each test fails if its check is removed.


def _zip(path, names: dict[str, bytes]):
    import zipfile

    with zipfile.ZipFile(path, "w") as archive:
        for name, content in names.items():
            archive.writestr(name, content)
    return path


@pytest.mark.parametrize("name", ["../escaped.txt", "run-1/../../escaped.txt", "another-run/model.keras"])
def test_an_archive_with_files_outside_its_run_folder_is_refused_whole(tmp_path, name):
    from competition.errors import UserError
    from competition.kaggle import job as kernel_job

    archive = _zip(tmp_path / "out.zip", {"run-1/config.json": b"{}", name: b"x"})
    target = tmp_path / "home" / "staging"
    target.mkdir(parents=True)
    with pytest.raises(UserError, match="holds files outside its run folder: refusing it"):
        kernel_job.extract(archive, "run-1", target, "the archive")
    assert list(target.iterdir()) == [] and not (tmp_path / "home" / "escaped.txt").exists()


def _fake_output(monkeypatch, receipt: dict | str | None, archive: bytes | None):
    """kaggle_api.kernel_output leaving this receipt and archive in the folder, as a download would."""
    from competition.kaggle import api as kaggle_api
    from competition.kaggle import job as kernel_job

    def download(ref, folder, names, missing):
        folder.mkdir(parents=True, exist_ok=True)
        if receipt is not None:
            text = receipt if isinstance(receipt, str) else json.dumps(receipt)
            (folder / kernel_job.RECEIPT).write_text(text)
        if archive is not None:
            (folder / kernel_job.ARCHIVE).write_bytes(archive)
        return []

    monkeypatch.setattr(kaggle_api, "kernel_output", download)


def test_an_archive_whose_checksum_does_not_match_its_receipt_is_refused(tmp_path, monkeypatch):
    import hashlib

    from competition.errors import UserError

    archive = b"the archive's bytes"
    good = {"run_id": "run-1", "sha256": hashlib.sha256(archive).hexdigest(), "finished": True}
    _fake_output(monkeypatch, good, archive)
    receipt = home.download_output("me/k", tmp_path / "a")
    assert (receipt.run_id, receipt.sha256, receipt.finished) == ("run-1", good["sha256"], True)
    _fake_output(monkeypatch, {**good, "sha256": "0" * 64}, archive)
    with pytest.raises(UserError, match="is damaged \\(its checksum does not match the receipt\\)"):
        home.download_output("me/k", tmp_path / "b")
    _fake_output(monkeypatch, "{not json", archive)
    with pytest.raises(UserError, match="is damaged \\(not the receipt the kernel writes\\)"):
        home.download_output("me/k", tmp_path / "c")
    _fake_output(monkeypatch, None, archive)
    with pytest.raises(home.MissingOutput, match="left no kaggle-mnist-run.json"):
        home.download_output("me/k", tmp_path / "d")


def test_a_stopped_kernels_output_that_does_not_match_its_receipt_is_not_continued(
    workspace, tmp_path, monkeypatch
):
    import hashlib

    from competition.errors import UserError
    from competition.kaggle import job as kernel_job

    root = tmp_path / "kaggle"
    earlier = root / "input" / "kaggle-mnist-abc"
    earlier.mkdir(parents=True)
    archive = _zip(earlier / kernel_job.ARCHIVE, {"run-1/config.json": b"{}"})
    receipt = {"run_id": "run-1", "sha256": hashlib.sha256(archive.read_bytes()).hexdigest()}
    receipt |= {"members": None, "finished": False, "done": []}
    (earlier / kernel_job.RECEIPT).write_text(json.dumps({**receipt, "sha256": "0" * 64}))
    monkeypatch.setenv("KAGGLE_MNIST_KAGGLE_ROOT", str(root))
    monkeypatch.setenv("KAGGLE_MNIST_WORKSPACE", str(workspace))
    with pytest.raises(UserError, match="does not match its receipt: the earlier kernel's output is damaged"):
        kernel_job.continue_from_input()
    assert not (workspace / "ensembles" / "run-1").exists()
    (earlier / kernel_job.RECEIPT).write_text(json.dumps(receipt))  # intact: put back to be continued
    kernel_job.continue_from_input()
    assert (workspace / "ensembles" / "run-1" / "config.json").is_file()


@pytest.fixture
def kernel_run(trained_run, tmp_path):
    """A copy of the shared trained run, as a kernel's unpacked output."""
    import shutil

    from competition.runs.folder import Run

    _, run_dir = trained_run
    copy = tmp_path / "kernel-0" / run_dir.name
    shutil.copytree(run_dir, copy)
    return Run(copy)


def test_a_run_from_kaggle_trained_with_other_settings_is_refused(kernel_run, tmp_path):
    from competition.errors import UserError

    identity = kernel_run.identity()
    merged = home.merge([kernel_run], tmp_path / "merged", identity, None)
    assert merged.finished and merged.metrics["cv_accuracy"] == kernel_run.metrics["cv_accuracy"]
    other = {**identity, "settings": {**identity["settings"], "epochs": identity["settings"]["epochs"] + 1}}
    with pytest.raises(UserError, match="was trained with other settings or data than this command's"):
        home.merge([kernel_run], tmp_path / "other-settings", other, None)
    other_data = {**identity, "train_sha256": "0" * 64}
    with pytest.raises(UserError, match="was trained with other settings or data than this command's"):
        home.merge([kernel_run], tmp_path / "other-data", other_data, None)
    assert not (tmp_path / "other-settings").exists() and not (tmp_path / "other-data").exists()


def test_a_run_from_kaggle_missing_or_damaging_a_member_is_refused(kernel_run, tmp_path):
    import shutil

    from competition.errors import UserError

    identity = kernel_run.identity()
    shutil.rmtree(kernel_run.member_dir(1, 0))
    kernel_run.member_dir(0, 1).joinpath("test.npy").write_bytes(b"damaged")
    with pytest.raises(UserError, match="incomplete or damaged: f1-s0, f0-s1 \\(test.npy\\)"):
        home.merge([kernel_run], tmp_path / "merged", identity, None)


def test_a_receipt_round_trips_and_a_foreign_one_is_refused(tmp_path):
    from competition.kaggle.contract import Receipt

    receipt = Receipt("run-1", "ab" * 32, ["f0-s0"], False, ["f0-s0"])
    receipt.save(tmp_path / "r.json")
    assert Receipt.load(tmp_path / "r.json") == receipt
    for text in ("{", "[]", '{"run_id": 1, "sha256": "x"}', '{"run_id": "r", "sha256": "x", "done": "f0-s0"}'):
        (tmp_path / "bad.json").write_text(text)
        with pytest.raises(ValueError):
            Receipt.load(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError):
        Receipt.load(tmp_path / "none.json")


def test_the_users_side_of_the_kaggle_route_loads_no_keras():
    """The user's side of `--on kaggle` (kernels, follow, home, record, machines, script) loads nothing of
    Keras or TensorFlow; only job.py, inside the kernel, may (through train)."""
    import subprocess
    import sys

    probe = "import sys, competition.kaggle.kernels, competition.kaggle.script; print(sorted(m for m in ('keras', 'tensorflow', 'jax') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_kernels_record_round_trips_and_reads_the_older_format(tmp_path):
    from competition.kaggle.record import Kernel, KernelRecord, State

    record = KernelRecord(tmp_path)
    assert record.runs == {}  # none yet
    entry = record.entry("abc", "NvidiaTeslaT4")
    entry.kernels.append(Kernel("me/k-1", 0, 0, None, State.LIVE, 1.0))
    entry.kernels.append(Kernel("me/k-1-p2", 0, 1, "me/k-1", State.STOPPED, 2.0, seen_running=True))
    record.save()
    again = KernelRecord(tmp_path)
    assert again.runs == record.runs and again.runs["abc"].latest(0).ref == "me/k-1-p2"
    assert json.loads((tmp_path / ".kaggle-kernels.json").read_text())["abc"]["kernels"][0]["state"] == "live"
    # Written before kernels had shares and parts: one live kernel per share.
    older = {"old": {"accelerator": "NvidiaTeslaT4", "pushed": [{"ref": "me/a", "time": 5.0}, {"ref": "me/b"}]}}
    (tmp_path / ".kaggle-kernels.json").write_text(json.dumps({**older, "bad": {"kernels": "?"}}))
    converted = KernelRecord(tmp_path).runs
    assert list(converted) == ["old"]  # the entry that does not parse is dropped
    assert [(k.ref, k.share, k.part, k.state) for k in converted["old"].kernels] == [
        ("me/a", 0, 0, State.LIVE),
        ("me/b", 1, 0, State.LIVE),
    ]
    (tmp_path / ".kaggle-kernels.json").write_text("{not json")
    assert KernelRecord(tmp_path).runs == {}
