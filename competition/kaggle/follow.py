"""Following a run's kernels on Kaggle: each share pushed as a GPU session frees up, its status polled,
its live log read for progress, its output fetched as it ends, and a kernel stopped by the session limit
continued in a new one. Keras-free."""

from __future__ import annotations

import contextlib
import json
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from competition import environ
from competition.errors import UserError
from competition.kaggle import api as kaggle_api
from competition.kaggle.home import MissingOutput, download_output, staging
from competition.kaggle.machines import GPU_SESSIONS, clock
from competition.kaggle.record import Kernel, KernelRecord, RunKernels, State
from competition.kaggle.script import kernel_script
from competition.progress import is_progress_line
from competition.runs.folder import member_name
from competition.training.settings import TrainSettings

# Right after a push, the status can still be the previous version's: a terminal state counts only
# once this version was seen queued or running, or after KAGGLE_MNIST_KERNEL_STALE seconds (120).
TERMINAL = {"COMPLETE", "ERROR", "CANCEL_ACKNOWLEDGED"}
Log = Callable[[str], None]


@dataclass
class Plan:
    """What one `--on kaggle` command follows: its run's settings and shares, where it keeps its record."""

    key: str
    settings: TrainSettings
    shares: list[list[str] | None]
    accelerator: str
    estimate: float | None
    record: KernelRecord

    @property
    def entry(self) -> RunKernels:
        return self.record.runs[self.key]

    @property
    def root(self) -> Path:
        return self.record.path.parent


class SessionsFull(Exception):
    """Kaggle refused a push: the account already runs as many GPU sessions as it may."""

    def __init__(self, limit: int | None, message: str):
        super().__init__(message)
        self.limit, self.message = limit, message


class Follow:
    """Pushes kernels as GPU sessions free up, follows them, fetches each one's output as it ends, and
    continues a kernel stopped by the session limit in a new one that takes its output as input."""

    def __init__(self, plan: Plan, log: Log, status_line: Callable[[str], None] | None):
        self.plan, self.entry = plan, plan.entry
        self.log, self.status_line = log, status_line or log
        self.streams = LogStreams(kaggle_api.kernel_log_stream if kaggle_api.can_stream_logs() else None)
        self.said_waiting = False

    def save(self) -> None:
        self.plan.record.save()

    def live(self) -> list[Kernel]:
        return self.entry.live()

    def finished(self) -> bool:
        return all(
            (k := self.entry.latest(i)) is not None and k.state == State.DONE for i in range(len(self.plan.shares))
        )

    def run(self, poll: float) -> None:
        started = time.time()
        while True:
            waiting = self.push_what_fits()
            for kernel in self.live():
                self.check(kernel)
            if self.finished():
                return
            self.status_line(self.status(started, waiting))
            time.sleep(poll)

    def push_what_fits(self) -> int:
        """Pushes the shares that need a kernel while this account has GPU sessions free; returns how
        many are still waiting for one."""
        plan = self.plan
        waiting = [
            i
            for i in range(len(plan.shares))
            if (k := self.entry.latest(i)) is None or k.state == State.STOPPED
        ]
        for share in list(waiting):
            if len(self.live()) >= GPU_SESSIONS:
                break
            previous = self.entry.latest(share)
            part = previous.part + 1 if previous else 0
            slug = f"kaggle-mnist-{plan.key}" + (f"-k{share + 1}" if len(plan.shares) > 1 else "")
            slug += f"-p{part + 1}" if part else ""
            script = kernel_script(plan.settings, plan.shares[share], environ.session_seconds())
            source = previous.ref if previous else None
            try:
                ref = _push(slug, script, plan.accelerator, self.log, source)
            except SessionsFull as full:
                if self.live():
                    break  # ours hold sessions: push when one of them ends
                allowed = f"{full.limit} " if full.limit else ""
                raise UserError(
                    f"Kaggle runs at most {allowed}GPU sessions per account at once, and yours are all in "
                    f"use by other notebooks or kernels ({full.message}): stop one at "
                    "https://www.kaggle.com/code (Your Work, running), then run the same command again"
                ) from None
            self.entry.kernels.append(Kernel(ref, share, part, source, State.LIVE, time.time()))
            self.save()
            waiting.remove(share)
        if waiting and not self.said_waiting:
            self.said_waiting = True
            self.log(
                f"{len(waiting)} more kernel(s) wait here for a GPU session (Kaggle runs at most "
                f"{GPU_SESSIONS} per account at once): each is pushed as one of these ends"
            )
        return len(waiting)

    def check(self, kernel: Kernel) -> None:
        try:
            response = kaggle_api.kernel_status(kernel.ref)
        except UserError as error:
            # Kaggle's API is eventually consistent: a version pushed moments ago can be unknown to the
            # status call for a while. Waited out within the stale-status window, as a stale state is.
            if getattr(error, "status", None) == 404 and kernel.just_pushed():
                return
            raise
        state = kaggle_api.status_name(getattr(response, "status", ""))
        if state in ("QUEUED", "RUNNING"):
            if not kernel.seen_running:
                kernel.seen_running = True
                self.save()
            self.streams.follow(kernel.ref)
            return
        if state in TERMINAL and kernel.just_pushed():
            return  # the previous version's state, reported right after a push
        if state == "ERROR" or state.startswith("CANCEL"):
            # Forgotten before anything else can fail, so the same command pushes a new version instead
            # of re-attaching to this one for ever.
            self.entry.kernels.remove(kernel)
            self.save()
            message = kernel_failed(kernel.ref, getattr(response, "failure_message", ""))
            raise UserError(message + "; the same command pushes it again")
        if state == "COMPLETE":
            self.fetch(kernel)

    def fetch(self, kernel: Kernel) -> None:
        """A finished kernel's output, downloaded and verified into the run's staging folder: a stopped
        one's is what its continuation starts from."""
        folder = staging(self.plan.root, self.plan.key) / kernel.slug
        try:
            receipt = download_output(kernel.ref, folder)
        except MissingOutput as missing:
            # Finished without its output: nothing to fetch ever, so forgotten like a failed kernel.
            self.entry.kernels.remove(kernel)
            self.save()
            raise UserError(missing.message + "; the same command pushes it again") from None
        kernel.state = State.DONE if receipt.finished else State.STOPPED
        self.save()
        if kernel.state == State.STOPPED:
            self.log(
                f"Kernel {kernel.ref} stopped before Kaggle's session limit with "
                f"{len(receipt.done)} members done; a new kernel continues from its output"
            )

    def status(self, started: float, waiting: int) -> str:
        elapsed = time.time() - started
        states = ", ".join(f"{k.ref.rsplit('-', 1)[-1]} live" for k in self.live()) or "pushing"
        line = f"Kaggle: {states} for {clock(elapsed)}"
        estimate = self.plan.estimate
        if estimate:
            line += f" (estimate {clock(estimate)})"
        if waiting:
            line += f"; {waiting} waiting for a GPU session"
        progress = self.streams.latest()
        if progress:
            return f"{line}; {progress}"
        if estimate:
            line += f"; about {clock(max(0.0, estimate - elapsed))} left by the estimate"
        if not self.streams.can_stream:
            return f"{line}; progress shows when the kernel ends (kaggle < 2.2.3 cannot stream its log)"
        return line


class LogStreams:
    """The live log of each running kernel, read in the background where the client can stream it
    (kaggle >= 2.2.3): Kaggle's stored log is only written when a session ends. `stream`: a kernel's
    log events from its start (kaggle_api.kernel_log_stream), or None where the client has none."""

    def __init__(self, stream: Callable[[str], Iterable[dict]] | None):
        self.stream = stream
        self.can_stream = stream is not None
        self.lines: dict[str, str] = {}
        self.threads: dict[str, threading.Thread] = {}
        self.closed = threading.Event()

    def follow(self, ref: str) -> None:
        if not self.can_stream or (ref in self.threads and self.threads[ref].is_alive()):
            return
        thread = threading.Thread(target=self.read, args=(ref,), daemon=True, name=f"log-{ref}")
        self.threads[ref] = thread
        thread.start()

    def read(self, ref: str) -> None:
        """The kernel's log read to its end (or until closed), keeping its latest progress line: what the
        background thread of `follow` does."""
        # The server replays the stream from its start on each connection: the last matching line wins.
        for _attempt in range(5):
            if self.closed.is_set():
                return
            try:
                for event in self.stream(ref):
                    if self.closed.is_set():
                        return
                    for line in str(event.get("data", "")).splitlines():
                        if is_progress_line(line):
                            self.lines[ref] = line.strip()
                return  # the stream ended with the session
            except Exception:  # a dropped connection: try again shortly; progress is only a nicety
                self.closed.wait(5)

    def latest(self) -> str:
        return next(reversed(self.lines.values()), "") if self.lines else ""

    def close(self) -> None:
        self.closed.set()


def shares(settings: TrainSettings, kernels: int) -> list[list[str] | None]:
    """The members each kernel trains: all in one, or dealt out like the local worker processes."""
    if kernels == 1:
        return [None]
    names = [member_name(fold, seed) for fold, seed in settings.members]
    if kernels > len(names):
        raise UserError(f"--kernels {kernels} is more than the run's {len(names)} members")
    return [names[i::kernels] for i in range(kernels)]


def _push(slug: str, script: str, accelerator: str, log: Log, source: str | None = None) -> str:
    """Pushes a script kernel; `source`: an earlier kernel whose output it starts from (mounted as input)."""
    owner = kaggle_api.username()
    with tempfile.TemporaryDirectory(prefix="kaggle-mnist-kernel-") as folder:
        Path(folder, "train.py").write_text(script, encoding="utf-8")
        metadata = {
            "id": f"{owner}/{slug}",
            "title": slug,
            "code_file": "train.py",
            "language": "python",
            "kernel_type": "script",
            "is_private": True,
            "enable_gpu": True,
            "enable_internet": False,
            "competition_sources": ["digit-recognizer"],
            "kernel_sources": [source] if source else [],
            "machine_shape": accelerator,
        }
        Path(folder, "kernel-metadata.json").write_text(json.dumps(metadata), encoding="utf-8")
        response = kaggle_api.push_kernel(Path(folder), accelerator)
    error = str(getattr(response, "error", "") or "")
    if error:
        sessions = re.search(r"gpu session count of (\d+)", error, re.IGNORECASE)
        if sessions or "session count" in error.lower():
            raise SessionsFull(int(sessions[1]) if sessions else None, error)
        raise UserError(_push_error(error))
    ref = str(getattr(response, "ref", "") or f"{owner}/{slug}").removeprefix("/code/").lstrip("/")
    log(f"Pushed kernel {ref} (version {getattr(response, 'version_number', '?')}): {kaggle_api.kernel_url(ref)}")
    return ref


def _push_error(error: str) -> str:
    text = error.lower()
    if "phone" in text or "verif" in text:
        return (
            f"Kaggle will not run GPU kernels for this account until it is phone-verified ({error}): "
            "verify it at https://www.kaggle.com/settings, then run again"
        )
    if "quota" in text:
        return (
            f"this week's GPU quota on Kaggle is spent ({error}): it resets weekly; train locally meanwhile"
        )
    if "rule" in text or "competition" in text:
        return (
            f"Kaggle refused the competition as the kernel's data ({error}): accept the rules at "
            f"{kaggle_api.RULES_URL}, then run again"
        )
    return f"Kaggle refused the kernel: {error}"


def kernel_failed(ref: str, message: str) -> str:
    """One line for a kernel that failed: Kaggle's message, the last lines of its log, its page."""
    tail: list[str] = []
    with contextlib.suppress(UserError):  # the log is a courtesy: its absence must not hide the failure
        tail = kaggle_api.kernel_log_lines(ref)[-3:]
    text = (message or "").lower()
    limit = any(word in text for word in ("timeout", "execution duration", "time limit")) or any(
        "time limit" in line.lower() for line in tail
    )
    what = "hit Kaggle's time limit" if limit else "failed"
    last = " | ".join(line.strip() for line in tail if line.strip()) or "no log"
    return f"the kernel {what} ({message or 'no message'}); last log lines: {last}; see {kaggle_api.kernel_url(ref)}"
