"""`train --on kaggle` end to end against the fake Kaggle, whose kernels really run the pushed script."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from importlib.metadata import version

import pytest

from competition import data
from tests import digits
from tests.conftest import ROOT, assert_clean_failure, kaggle_env, run_cli, start_cli
from tests.fake_kaggle import FakeKaggle, KaggleState

# float32: the fake kernel runs on this CPU, where the GPU default (mixed float16) is emulated and slow.
KAGGLE_CLIENT = tuple(int(part) for part in version("kaggle").split(".")[:3])


# Two epochs, so that the run a kernel stopped mid-member continues is this one (and is replayed).
QUICK = ["--folds", "2", "--seeds", "1", "--epochs", "2", "--subset", "2000", "--precision", "float32"]


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


def member_predictions(run_dir) -> dict[str, bytes]:
    """Every member's out-of-fold and test probabilities, as bytes: equal means equal to the last bit."""
    files = sorted((run_dir / "members").glob("*/test.npy")) + sorted((run_dir / "members").glob("*/oof.npz"))
    return {f"{p.parent.name}/{p.name}": p.read_bytes() for p in files}


@pytest.fixture(scope="session")
def replay_dir(tmp_path_factory):
    """Kernel runs kept for replay, shared by this session's test processes (pytest-xdist gives each
    its own temporary folder, inside one they share)."""
    base = tmp_path_factory.getbasetemp()
    return (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "kernel-replays"


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


@pytest.mark.parametrize("method", ["GetKernelSessionStatus", "ListKernelSessionOutput"])
def test_a_kernel_this_account_cannot_see_is_one_line(workspace, kaggle, env, method):
    # kaggle >= 2.0.1 raises a ValueError for a 401/403 on these calls, not an HTTP error.
    kaggle.state.always[method] = 403
    result = run_cli("train", "--on", "kaggle", *QUICK, cwd=workspace, env=env, timeout=600)
    assert_clean_failure(
        result, "refused access to the", "kernel tester/kaggle-mnist-", "(401/403)", "kaggle.json"
    )
    assert "cut short" not in result.stderr and "client failed" not in result.stderr


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


def test_the_users_side_of_the_kaggle_route_loads_no_keras():
    """The user's side of `--on kaggle` (kernels, follow, home, record, machines, script) loads nothing of
    Keras or TensorFlow; only job.py, inside the kernel, may (through train)."""
    import subprocess
    import sys

    probe = "import sys, competition.kaggle.kernels, competition.kaggle.script; print(sorted(m for m in ('keras', 'tensorflow', 'jax') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"

