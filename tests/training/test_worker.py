"""Members in worker processes: the same run as one process, stopping with their parent, GPUs."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from competition import backend, storage
from competition.errors import UserError
from competition.progress import RunProgress
from competition.runs.folder import Run
from competition.training.settings import TrainSettings
from tests.conftest import ROOT, TINY, rerun_continues, start_cli

backend.select("tensorflow")

from competition.training import train as training  # noqa: E402
from competition.training import worker  # noqa: E402


def _processes_naming(text: str) -> list[int]:
    """Processes whose command line contains `text` (Linux's /proc)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text.encode() in cmdline.read_bytes():
                found.append(int(cmdline.parent.name))
        except OSError:
            continue  # it ended while we looked
    return found


@pytest.mark.slow
def test_members_spread_over_worker_processes_give_the_same_run(tiny_data):
    """The multi-GPU path (one process per GPU), run here with two CPU worker processes."""
    sequential = training.train(TrainSettings(**TINY), quiet=True)
    parallel = training.train(TrainSettings(**TINY), fresh=True, quiet=True, workers=2)
    assert parallel != sequential
    logs = sorted(p.name for p in (parallel / "logs").iterdir())
    assert logs == ["worker-0.log", "worker-1.log"]
    for name in ("oof_probs.npy", "test_probs.npy"):
        np.testing.assert_array_equal(np.load(sequential / name), np.load(parallel / name))


def test_a_worker_stops_when_its_parent_is_gone():
    from competition.training import worker

    code = "from competition.training import worker; worker.stop_when_parent_goes(); import time; time.sleep(60)"
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    time.sleep(1)
    assert proc.poll() is None  # the parent is still there: the worker goes on
    proc.stdin.close()  # what the OS does when the parent dies
    assert proc.wait(timeout=30) == worker.ORPHANED
    assert "is gone: stopping" in proc.stdout.read()


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="lists processes through /proc")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_killing_train_stops_its_workers_and_the_run_continues(tiny_data, sig):
    """`kill`, a scheduler's SIGTERM or a dead notebook reach the parent alone, unlike Ctrl-C in a
    terminal: its workers must not train on without it, racing the rerun for the same files."""
    args = ["train", "--folds", "2", "--seeds", "1", "--epochs", "3", "--batch-size", "32"]
    args += ["--subset", "300", "--workers", "2", "--quiet"]
    proc = start_cli(args, cwd=tiny_data)
    deadline = time.time() + 180
    histories = []
    while time.time() < deadline and not histories:
        histories = list((tiny_data / "ensembles").glob("*/members/*/history.csv"))
        time.sleep(0.2)
    run_dir = histories[0].parent.parent.parent
    assert len(_processes_naming(str(run_dir))) == 2  # both workers are training
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    if sig == signal.SIGTERM:
        assert proc.returncode == 143, out + err
        assert err.strip().splitlines()[-1].startswith("interrupted: run the same command again"), err
        assert "Traceback" not in out + err
    deadline = time.time() + 30
    while time.time() < deadline and _processes_naming(str(run_dir)):
        time.sleep(0.2)
    assert _processes_naming(str(run_dir)) == []
    if sig == signal.SIGKILL:  # the workers saw their parent go and said so in their logs
        for log in (run_dir / "logs").iterdir():
            assert log.read_text().strip().splitlines()[-1].endswith("is gone: stopping")
    assert not (run_dir / "metrics.json").exists()
    rerun_continues(args, tiny_data)
    assert (run_dir / "metrics.json").is_file()


def test_a_failing_worker_stops_the_run_with_one_line(tiny_data, monkeypatch, tmp_path):
    fake_python = tmp_path / "python"
    fake_python.write_text("#!/bin/sh\necho 'something broke on the GPU'\nexit 3\n")
    fake_python.chmod(0o755)
    monkeypatch.setattr(worker.sys, "executable", str(fake_python))
    with pytest.raises(UserError, match="something broke on the GPU.*rerun the same command"):
        training.train(TrainSettings(**TINY), quiet=True, workers=2)


@pytest.mark.parametrize("visible, expected", [(None, ["0", "1"]), ("2,3", ["2", "3"])])
def test_each_worker_gets_its_own_gpu(tiny_data, monkeypatch, tmp_path, visible, expected):
    fake_python = tmp_path / "python"
    record = tmp_path / "seen"
    # Records the GPU it was given and the members it was asked for, then exits as a worker would.
    fake_python.write_text(f'#!/bin/sh\necho "$CUDA_VISIBLE_DEVICES $4 $5" >> {record}\n')
    fake_python.chmod(0o755)
    monkeypatch.setattr(worker.sys, "executable", str(fake_python))
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    run_dir = tiny_data / "ensembles" / "fake-run"
    settings = TrainSettings(**{**TINY, "folds": 2, "seeds": 2}).resolved(gpu=True)
    storage.write_json(run_dir / "config.json", {"settings": settings.to_dict()})
    with RunProgress(10, quiet=True) as progress:
        worker.spawn(Run(run_dir), settings.members, 2, ["gpu0", "gpu1"], 1, progress)
    seen = sorted(record.read_text().split("\n")[:-1])
    # Members alternate over the workers: f0-s0 and f0-s1 on the first GPU, f1-s0 and f1-s1 on the second.
    assert seen == [f"{expected[0]} f0-s0 f0-s1", f"{expected[1]} f1-s0 f1-s1"]


@pytest.mark.parametrize(
    ("cores", "members", "epochs", "backend_name", "expected"),
    [
        (2, 5, 15, "tensorflow", 2),  # the default run
        (8, 5, 15, "tensorflow", 2),  # more cores: still two, the measured case
        (1, 5, 15, "tensorflow", 1),  # one core: nothing to share
        (2, 1, 15, "tensorflow", 1),  # one member
        (2, 2, 1, "tensorflow", 1),  # 2 x 15,000 images: start-up would eat the gain
        (2, 5, 15, "jax", 1),  # thread caps are TensorFlow's
    ],
)
def test_cpu_workers_side_by_side_only_where_they_pay(
    monkeypatch, cores, members, epochs, backend_name, expected
):
    monkeypatch.setattr(backend, "cpu_cores", lambda: cores)
    settings = TrainSettings(epochs=epochs, backend=backend_name)
    assert worker.cpu_workers(settings, members, 15_000 if epochs == 1 else 33_600) == expected


@pytest.mark.slow
def test_one_worker_per_gpu_pinned_with_cuda_visible_devices(tiny_data, monkeypatch):
    # Two GPUs as the backend would report them on a Kaggle T4 x2; the worker processes, finding no GPU
    # behind the device number they are given, train on this CPU with the GPU settings (in float32:
    # float16 is emulated on a CPU, and precision is not what this test is about).
    monkeypatch.setattr(backend, "gpus", lambda: ["GPU:0", "GPU:1"])
    pinned = []
    popen = subprocess.Popen

    def recording_popen(command, env=None, **kwargs):
        if "competition.training.worker" in command:
            pinned.append(env.get("CUDA_VISIBLE_DEVICES"))
        return popen(command, env=env, **kwargs)

    monkeypatch.setattr(worker.subprocess, "Popen", recording_popen)
    settings = TrainSettings(folds=2, seeds=1, epochs=1, subset=300, precision="float32")
    run_dir = training.train(settings, quiet=True)
    assert sorted(pinned) == ["0", "1"]
    run = Run(run_dir)
    assert (run.settings.batch_size, run.settings.epoch_validation) == (256, True)  # the GPU defaults
    assert sorted((run_dir / "logs").iterdir()) and run.finished



def test_a_last_round_that_leaves_workers_idle_trains_in_processes_of_their_threads():
    settings = TrainSettings(folds=5, seeds=1, cpu_threads=1, cpu_workers=2)
    f = [(fold, 0) for fold in range(5)]
    # Members 1-4 two by two on one thread each, then the fifth alone on both cores.
    assert worker.phases(settings, settings.members, 2) == [[[f[0], f[2]], [f[1], f[3]]], [[f[4]]]]
    # Resumed with two members left: the fourth on its own thread count, the fifth still on two.
    assert worker.phases(settings, [f[3], f[4]], 2) == [[[f[3]]], [[f[4]]]]
    # Members the workers divide, and a GPU run (no thread counts): one phase.
    even = TrainSettings(folds=5, seeds=2, cpu_threads=1, cpu_workers=2)
    assert len(worker.phases(even, even.members, 2)) == 1
    gpu = TrainSettings(folds=5, seeds=1)
    assert worker.phases(gpu, gpu.members, 2) == [[[f[0], f[2], f[4]], [f[1], f[3]]]]


@pytest.mark.slow
@pytest.mark.skipif(backend.cpu_cores() < 2, reason="a last round alone needs a second core to take")
def test_a_kill_while_the_last_member_trains_alone_then_the_same_command_gives_the_same_run(
    workspace, tmp_path
):
    """3 members on a 2-core CPU: two side by side on one thread each, then the third alone on both.
    Killed while the third trains, the same command continues it to the same probabilities, bit for
    bit, as the command that was never interrupted. 2,000 rows x 10 epochs: the smallest run that
    `train` spreads over two workers (worker.CPU_WORKERS_MIN_IMAGES)."""
    from competition import data
    from tests import digits

    digits.write_csvs(tmp_path / "csvs", n_train=2000, n_test=40)
    data.fetch(tmp_path / "csvs", log=lambda _: None)
    # The published width: the default's 1.5x would double every step and test nothing more.
    args = ["train", "--folds", "3", "--seeds", "1", "--epochs", "10", "--width", "1", "--quiet"]
    proc = start_cli(args, cwd=workspace)
    deadline, history = time.time() + 240, None
    while time.time() < deadline and proc.poll() is None:
        found = list((workspace / "ensembles").glob("*/members/f2-s0/history.csv"))
        if found and found[0].read_bytes().count(b"\n") >= 3:  # two of its ten epochs done
            history = found[0]
            break
        time.sleep(0.05)
    assert history is not None, "the third member never started"
    run_dir = history.parent.parent.parent
    assert (run_dir / "logs" / "worker-2.log").is_file()  # the third member's own process
    proc.kill()
    proc.communicate(timeout=60)
    assert not (run_dir / "metrics.json").exists()
    settings = storage.read_json(run_dir / "config.json")["settings"]
    assert (settings["cpu_threads"], settings["cpu_workers"]) == (1, 2)
    rerun_continues(args, workspace)
    whole = training.train(TrainSettings.from_dict(settings), fresh=True, quiet=True)
    assert whole != run_dir
    for name in ("oof_probs.npy", "test_probs.npy"):
        np.testing.assert_array_equal(np.load(run_dir / name), np.load(whole / name))
