"""Members trained side by side in worker processes: `spawn` (in `kaggle-mnist train`) starts them and
follows them, `python -m competition.training.worker RUN_DIR MEMBER...` is one of them. Members are independent,
so this scales without the gradient syncing of a data-parallel model: one GPU per worker (as on a
Kaggle "T4 x2" notebook), or on a CPU the run's `cpu_threads` cores each. Free of Keras: a worker
imports it only after choosing the run's backend."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from competition import backend, data, environ, paths, storage
from competition.errors import SessionDeadline, UserError
from competition.progress import member_done_line, member_label
from competition.runs.folder import Run, member_name
from competition.training.settings import TrainSettings

# The exit code when the parent is gone: as if it had passed on a SIGTERM.
ORPHANED = 143
# A worker's exit code when it stopped at the session's deadline (EX_TEMPFAIL: try again later).
DEADLINE_EXIT = 75
# Below this many training images (under a minute of training) starting processes, each importing
# TensorFlow and loading the data, would eat what side-by-side members gain.
CPU_WORKERS_MIN_IMAGES = 40_000


def cpu_workers(settings: TrainSettings, members: int, train_rows: int) -> int:
    """Training processes for a CPU run: two side by side, each with half the cores, on a machine with
    two or more cores, for runs big enough to pay for starting them; else one. The batch-64 CNN spends
    much of each step in small ops that do not split well over threads, so two single-threaded members
    train more images per second than one member on both cores (benchmarks/README.md). More than two
    would multiply the memory (~1 GB each) for a gain not measured."""
    big = members * settings.epochs * train_rows >= CPU_WORKERS_MIN_IMAGES
    if settings.backend != "tensorflow" or members < 2 or not big or backend.cpu_cores() < 2:
        return 1
    return 2


def phases(settings: TrainSettings, todo: list, workers: int) -> list[list[list]]:
    """The processes that train `todo`, phase by phase: first `workers` processes taking the members of
    the run's own thread count in turn, then one process for each member of a last round that the
    workers do not fill (`TrainSettings.member_threads`), which has the idle workers' threads as well.
    A process trains members of one thread count: TensorFlow fixes its thread pools at its first op."""
    shared = [m for m in todo if not settings.trains_alone(m)]
    alone = [m for m in todo if settings.trains_alone(m)]
    n = min(workers, len(shared))
    return [p for p in ([shared[w::n] for w in range(n)], [[m] for m in alone]) if p]


def spawn(run: Run, todo, workers: int, gpus: list[str], steps_per_epoch: int, progress) -> None:
    """Trains `todo` members of `run` in `workers` processes (then the last round's members, if any,
    each in a process with more threads: `phases`), each pinned to a GPU with CUDA_VISIBLE_DEVICES where
    there are GPUs and writing a log in the run's logs/ folder; this process only watches the members'
    epoch logs to drive the progress bar. Raises SessionDeadline when the workers stopped at the
    session's deadline, UserError when one failed."""
    run_dir, settings = run.dir, run.settings
    logs = run_dir / "logs"
    logs.mkdir(exist_ok=True)
    visible = [d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    devices = visible or [str(i) for i in range(len(gpus))]  # more workers than GPUs share them in turn
    started = {m: epochs_logged(run.member_dir(*m)) for m in todo}
    reported = set()
    number = 0  # worker processes started, which names their logs
    for shares in phases(settings, todo, workers):
        procs = []
        stopped = set()  # workers that stopped at the session's deadline (the others soon follow)
        try:
            for share in shares:
                w, number = number, number + 1
                env = {**os.environ, environ.WORKSPACE: str(paths.workspace())}
                if gpus:
                    env["CUDA_VISIBLE_DEVICES"] = devices[w % len(devices)]
                log_path = logs / f"worker-{w}.log"
                with open(log_path, "ab") as log:
                    command = [sys.executable, "-m", "competition.training.worker", str(run_dir)]
                    command += [member_name(*m) for m in share]
                    # stdin: a pipe this process holds open and never writes to; the worker stops when it
                    # closes, which is when this process ends, even by a SIGKILL (stop_when_parent_goes).
                    proc = subprocess.Popen(
                        command, env=env, stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT
                    )
                procs.append((w, proc, log_path))
            threads = settings.member_threads(shares[0][0])
            if threads != settings.cpu_threads:
                names = ", ".join(member_name(*share[0]) for share in shares)
                each = " each" if len(shares) > 1 else ""
                progress.log(f"{names} on {threads} threads{each}, the cores a full round would use; logs in {logs}")
            else:
                progress.log(f"{sum(map(len, shares))} members on {len(shares)} workers; their logs are in {logs}")
            while True:
                done = sum(epochs_logged(run.member_dir(*m)) - started[m] for m in todo)
                # Each live worker trains one member at a time; a last round's say how many threads.
                live = sum(p.poll() is None for _, p, _ in procs)
                more = f" on {threads} threads{' each' if live > 1 else ''}" if threads != settings.cpu_threads else ""
                progress.set(done * steps_per_epoch, f"{live} member{'s' if live != 1 else ''} training{more}")
                for m in todo:
                    if m not in reported and run.member_done(*m):
                        reported.add(m)
                        progress.log(member_done_line(member_label(settings.members, m), run.member_info(*m)))
                stopped |= {w for w, p, _ in procs if p.poll() == DEADLINE_EXIT}
                failed = [(w, p, log) for w, p, log in procs if p.poll() not in (None, 0, DEADLINE_EXIT)]
                if failed:
                    w, proc, log_path = failed[0]
                    lines = log_path.read_text(errors="replace").strip().splitlines() or ["(no output)"]
                    raise UserError(
                        f"training worker {w} stopped (exit {proc.returncode}): {lines[-1]} "
                        f"(its log: {log_path}); rerun the same command to continue"
                    )
                if all(p.poll() is not None for _, p, _ in procs):
                    if stopped:
                        raise SessionDeadline()
                    break
                time.sleep(1)
        finally:
            for _, proc, _ in procs:
                if proc.poll() is None:
                    proc.terminate()
            for _, proc, _ in procs:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=30)
                proc.stdin.close()


def epochs_logged(folder: Path) -> int:
    """Complete rows in a member's epoch log, read while another process may be appending to it."""
    try:
        return max(0, (folder / "history.csv").read_bytes().count(b"\n") - 1)
    except OSError:
        return 0


# ----------------------------------------------------------------------------------------------
# Inside a worker


def work(run_dir: Path, names: list[str]) -> None:
    """A worker's share of a run: trains the named members. The parent holds the run's lock for it.
    Call after `backend.select`."""
    from competition.progress import RunProgress
    from competition.training import member

    run = Run(Path(run_dir))
    dataset = data.load()
    if dataset.arrays_sha256 != run.saved_identity.get("arrays_sha256"):
        raise UserError(f"the data changed since {run.id} started: run `{run.train_command()}` again")
    members = [m for m in run.members if member_name(*m) in names]
    threads = {run.settings.member_threads(m) for m in members}
    if len(threads) > 1:  # spawn never asks for this: a process's thread pools are fixed at its first op
        raise UserError(f"members {', '.join(names)} train with different thread counts: one process each")
    member.configure_device(run.settings, backend.gpus(), threads.pop() if threads else None)
    with RunProgress(0, quiet=True) as progress:
        member.train_members(run, members, run.rows(dataset), run.array("folds.npy"), progress)


def stop_when_parent_goes(fd: int = 0) -> None:
    """Stops this process as soon as file descriptor `fd` (the worker's stdin, a pipe whose only writer
    is the parent, which never writes to it) reaches end of file, which the OS makes happen when the
    parent dies however it dies: a SIGKILL, the out-of-memory killer, a notebook's kernel restarted. A
    worker left training on its own would race the rerun that continues the run for the same member
    files, and take a core from it. Stopping at once is safe: a kill at any instant leaves a complete
    backup."""

    def watch() -> None:
        # os.read, not sys.stdin: a daemon thread blocked inside a buffered reader holds its lock, and
        # Python's shutdown then aborts the process when it flushes stdin.
        while os.read(fd, 4096):
            pass
        print("the `kaggle-mnist train` that started this worker is gone: stopping", flush=True)
        os._exit(ORPHANED)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def main(argv: list[str]) -> int:
    run_dir, names = Path(argv[0]), argv[1:]
    stop_when_parent_goes()
    try:
        backend.select(storage.read_json(run_dir / "config.json")["settings"]["backend"])
        try:
            work(run_dir, names)
        except SessionDeadline:
            print("stopped at the session's deadline; the backup holds the last finished epoch", flush=True)
            return DEADLINE_EXIT
    except UserError as exc:
        print(f"error: {exc.message}", flush=True)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
