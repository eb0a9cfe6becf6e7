"""`kaggle-mnist train --on kaggle`: the run trained on Kaggle's GPUs, followed from here, brought home.

Runs on the USER'S machine and stays free of Keras (`--on kaggle` loads none of it); what runs inside
the kernel is kernel_job.py.

A private *script* kernel is pushed with the competition as its data source, the accelerator set
explicitly (`enable_gpu` alone gets a P100, which the image's PyTorch no longer supports), and this
package embedded in the script, so nothing is installed from the internet and the image's own
TensorFlow and Keras are used. Inside, the script runs the same `train` (both GPUs of a T4 x2 through
the usual worker processes) and leaves the run in /kaggle/working as one zip beside a receipt with its
sha256 (kernel_job.py). Here, the kernel is followed with a live status line; Ctrl-C only detaches, and
the same command re-attaches (kernels are recorded per run identity in ensembles/.kaggle-kernels.json).
The output is verified (checksum, the run's settings and data identical to the local ones, every member
file present) before it is moved into ensembles/<run-id>/, where predict, evaluate, report and submit
use it like a local run.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import enum
import hashlib
import io
import json
import math
import os
import re
import shutil
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from competition import data, environ, locks, paths, storage
from competition.errors import UserError
from competition.kaggle import api as kaggle_api
from competition.kaggle.job import ARCHIVE, RECEIPT, STOP_MARGIN_SECONDS, Receipt, extract
from competition.runs.folder import (
    MEMBER_LABEL,
    DamagedFile,
    Run,
    make_identity,
    member_name,
    run_rows,
    same_run,
)
from competition.training.settings import TrainSettings

RECORD = ".kaggle-kernels.json"
DEFAULT_ACCELERATOR = "NvidiaTeslaT4"
# Kaggle's GPU machine shapes as `kaggle kernels push --accelerator` names them (Kaggle/kaggle-cli,
# docs/kernels.md). Every account has NvidiaTeslaT4 (two T4s); some shapes are only lent for some
# competitions or accounts, and Kaggle says so when it refuses the push.
GPU_SHAPES = (
    "NvidiaTeslaT4",
    "NvidiaTeslaT4Highmem",
    "NvidiaL4",
    "NvidiaL4X1",
    "NvidiaTeslaA100",
    "NvidiaH100",
    "NvidiaRtxPro6000",
)
RETIRED_SHAPES = {"NvidiaTeslaP100": "NvidiaTeslaT4"}  # Kaggle runs a T4 where a P100 is asked for
# Training images per second for the estimate before a push, per machine shape. ASSUMED, not
# measured: no session of this project has run on Kaggle's GPUs. 3,000 images/s per T4 (batch 256,
# mixed float16, XLA) is a cautious guess for a 15 M multiply-add network; the estimate errs long.
GPU_IMAGES_PER_SECOND = {"NvidiaTeslaT4": 2 * 3_000, "NvidiaTeslaT4Highmem": 2 * 3_000}
KERNEL_START_SECONDS = 180  # a kernel's start: the image, the imports, the data (also a guess)
# An account runs at most this many GPU sessions at once, batch kernels and open notebooks together;
# Kaggle refuses a push beyond it ("Maximum batch GPU session count of 2 reached").
GPU_SESSIONS = 2
# Kaggle ends a session after 12 hours (GPU sessions may be given less): a kernel stops training this
# long before its end, keeps what it finished and the half-trained member's backup as output, and a
# new kernel continues from there. KAGGLE_MNIST_SESSION_SECONDS sets a shorter limit (for an account
# with one, and for tests): environ.session_seconds().
WEEKLY_GPU_HOURS = 30
# What the script imports besides this package; all in Kaggle's Python image (checked when it starts).
KERNEL_NEEDS = ("keras", "numpy", "pandas", "sklearn", "filelock", "rich", "matplotlib", "PIL")
TERMINAL = {"COMPLETE", "ERROR", "CANCEL_ACKNOWLEDGED"}
# Right after a push, the status can still be the previous version's: a terminal state counts only
# once this version was seen queued or running, or after KAGGLE_MNIST_KERNEL_STALE seconds (120).
Log = Callable[[str], None]


# ----------------------------------------------------------------------------------------------
# The script


def package_zip() -> bytes:
    """This package's source as a zip, byte for byte the same for the same code (fixed timestamps),
    so the same settings give the same script."""
    root = Path(__file__).resolve().parents[1]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(root.rglob("*.py")):
            name = f"competition/{path.relative_to(root).as_posix()}"
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            archive.writestr(info, path.read_bytes(), zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


def kernel_script(
    settings: TrainSettings, members: list[str] | None = None, session_seconds: float | None = None
) -> str:
    """The script a kernel runs, also what a user can paste into a Kaggle notebook cell by hand (with
    the competition added as input and a GPU accelerator chosen). It stops training in time for a
    session of `session_seconds` (default: KAGGLE_MNIST_SESSION_SECONDS, else 12 h), and continues a
    stopped run it finds in its input."""
    if session_seconds is None:
        session_seconds = environ.session_seconds()
    payload = base64.b64encode(package_zip()).decode()
    lines = [payload[i : i + 100] for i in range(0, len(payload), 100)]
    return f'''"""kaggle-mnist: train a k-fold ensemble on this machine's GPUs; the run is left in /kaggle/working
as {ARCHIVE} with {RECEIPT}. Generated by `kaggle-mnist kernel-script`; the kaggle-mnist package is
embedded below, so no internet is needed."""
import base64, importlib.util, io, json, os, sys, tempfile, time, zipfile

SETTINGS = json.loads({json.dumps(json.dumps(settings.to_dict(), sort_keys=True))})
MEMBERS = {members!r}
SESSION_SECONDS = {session_seconds!r}
STARTED = time.time()
NEEDS = {json.dumps(list(KERNEL_NEEDS))}
PACKAGE = """
{chr(10).join(lines)}
"""

missing = [name for name in NEEDS if importlib.util.find_spec(name) is None]
if missing:
    sys.exit("kaggle-mnist: this kernel image lacks " + ", ".join(missing) + "; pin an older image or add them")
source = tempfile.mkdtemp(prefix="kaggle-mnist-")
zipfile.ZipFile(io.BytesIO(base64.b64decode(PACKAGE))).extractall(source)
sys.path.insert(0, source)
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (source, os.environ.get("PYTHONPATH")) if p)
from competition import errors, versions  # noqa: E402

try:  # before anything is loaded or fetched: an image too old for us fails here, in one line
    versions.require(SETTINGS["backend"])
except errors.UserError as exc:
    sys.exit("kaggle-mnist: this kernel image cannot run it: " + exc.message)
from competition.kaggle import job as kernel_job  # noqa: E402

kernel_job.run_in_kernel(SETTINGS, MEMBERS, STARTED + SESSION_SECONDS)
'''


def _print(message: str) -> None:
    print(message, flush=True)


# ----------------------------------------------------------------------------------------------
# Here: push, follow, bring home


def machine_shape(accelerator: str, log: Log = _print) -> str:
    """The shape to push for `--accelerator`: a GPU shape as it is, a retired one as what Kaggle runs in
    its place (said in one line); a TPU or unknown shape refused in one line."""
    if accelerator in GPU_SHAPES:
        return accelerator
    if accelerator in RETIRED_SHAPES:
        replacement = RETIRED_SHAPES[accelerator]
        log(f"{accelerator} is retired on Kaggle (it runs a T4 in its place): pushing {replacement}")
        return replacement
    if accelerator.lower().startswith("tpu"):
        raise UserError(
            f"--accelerator {accelerator} is a TPU: this Keras model would train on the TPU machine's CPU, "
            f"for hours; choose a GPU shape ({DEFAULT_ACCELERATOR}, two T4s, is every account's)"
        )
    raise UserError(
        f"--accelerator {accelerator} is not a Kaggle GPU shape: choose one of {', '.join(GPU_SHAPES)}"
    )


def gpu_seconds(settings: TrainSettings, train_rows: int, accelerator: str, parts: int = 1) -> float | None:
    """The GPU time a run should take on `accelerator` (None where no rate is known): its training
    images at GPU_IMAGES_PER_SECOND, plus each kernel's start (image, imports, data)."""
    rate = GPU_IMAGES_PER_SECOND.get(accelerator)
    if rate is None:
        return None
    # The rate is for today's width; a wider network costs width^2 the multiply-adds an image (every
    # layer but the first and last scales with both its inputs and its outputs: 1.5x is 2.24x the
    # training FLOPs, benchmarks/README.md), and a GPU that is busy at width 1 is slower by about that.
    rate /= settings.width**2
    return len(settings.members) * settings.epochs * train_rows / rate + parts * KERNEL_START_SECONDS


def train_on_kaggle(
    settings: TrainSettings,
    accelerator: str = DEFAULT_ACCELERATOR,
    kernels: int = 1,
    log: Log = _print,
    status_line: Callable[[str], None] | None = None,
    poll_seconds: float | None = None,
) -> Path:
    """Trains the run for `settings` on Kaggle (split over `kernels` kernels, at most GPU_SESSIONS at a
    time, each continued in a further kernel if Kaggle's session limit stops it); returns its folder."""
    if kernels < 1:
        raise UserError("--kernels must be 1 or more")
    accelerator = machine_shape(accelerator, log)
    poll = poll_seconds if poll_seconds is not None else environ.kernel_poll()
    dataset = data.load(log=log)  # the run is checked against this data when it comes back
    expected = settings.resolved(gpu=True)
    identity = make_identity(expected, dataset)
    # Not from the cached arrays' checksums: the key names the kernels recorded for this command.
    keyed = {k: identity[k] for k in ("settings", "train_sha256", "test_sha256")}
    key = hashlib.sha256(
        json.dumps({**keyed, "accelerator": accelerator, "kernels": kernels}, sort_keys=True).encode()
    ).hexdigest()[:12]
    root = paths.ensembles_dir()
    root.mkdir(parents=True, exist_ok=True)
    with locks.hold(root / f".kaggle-{key}.lock", f"the Kaggle run {key}"):
        done = _installed_run(identity)
        if done is not None:
            log(
                f"This exact run is already trained on Kaggle and installed: {done.dir} "
                f"(CV accuracy {done.metrics['cv_accuracy']:.4%})."
            )
            return done.dir
        shares = _shares(expected, kernels)
        labels = run_rows(expected, dataset).labels
        estimate = gpu_seconds(expected, len(labels) - len(labels) // expected.folds, accelerator, kernels)
        log(_estimate_line(estimate, accelerator, kernels, expected.width))
        record = KernelRecord(root)
        entry = record.entry(key, accelerator)
        if entry.kernels:
            refs = ", ".join(k.ref for k in entry.live())
            log(f"Re-attaching to the kernels already pushed for this run{': ' + refs if refs else ''}")
        plan = _Plan(key, expected, shares, accelerator, estimate, record)
        follow = _Follow(plan, log, status_line)
        try:
            follow.run(poll)
        except KeyboardInterrupt:
            urls = ", ".join(_url(k.ref) for k in entry.live())
            raise UserError(
                f"detached; the kernels keep running on Kaggle ({urls or 'none running'}; the API cannot "
                "stop one, its page can): run the same command again to re-attach",
                exit_code=130,
            ) from None
        finally:
            follow.streams.close()
        run = _bring_home(entry, identity, dataset, root, key, log)
        entry.run_id = run.id
        record.save()
    log(
        f"CV accuracy {run.metrics['cv_accuracy']:.4%} over {run.metrics['rows']:,} rows, trained on Kaggle; "
        f"run saved in {run.dir}"
    )
    return run.dir


def _estimate_line(estimate: float | None, accelerator: str, kernels: int, width: float = 1.0) -> str:
    if estimate is None:
        return (
            f"No GPU time estimate for {accelerator} (no training rate known for it); Kaggle stops a session "
            f"after {environ.session_seconds() / 3600:.0f} h, and this run then continues in a further kernel by itself"
        )
    per_kernel = estimate / kernels
    session = environ.session_seconds()
    sessions = math.ceil(per_kernel / (session - STOP_MARGIN_SECONDS))
    more = (
        f"; that is longer than one session ({session / 3600:.0f} h), so each kernel stops in "
        f"time and continues in a further one, about {sessions} in all"
        if sessions > 1
        else ""
    )
    wider = f" at width 1, over {width:g}^2 at width {width:g}" if width != 1 else ""
    return (
        f"Estimated GPU time: about {_elapsed(estimate)} on {accelerator} "
        f"(at {GPU_IMAGES_PER_SECOND[accelerator]:,} training images/s{wider}: an assumed rate, not yet "
        f"measured on Kaggle), of the about {WEEKLY_GPU_HOURS} GPU hours Kaggle lends an account a week{more}"
    )


class State(enum.StrEnum):
    """Where a pushed kernel stands in the record."""

    LIVE = "live"  # pushed, not yet seen to end
    DONE = "done"  # ended with its share trained; its output verified and waiting in staging
    STOPPED = "stopped"  # ended at the session limit; a new kernel continues from its output


@dataclass
class Kernel:
    """One pushed kernel: which share of the run it trains, and which part of that share (a share the
    session limit stopped continues in part 1, 2, ... each taking the previous part's output)."""

    ref: str  # owner/slug
    share: int
    part: int
    source: str | None  # the kernel whose output this one continues from
    state: State
    time: float  # when it was pushed
    seen_running: bool = False

    @property
    def slug(self) -> str:
        return self.ref.rsplit("/", 1)[-1]

    def just_pushed(self) -> bool:
        """Pushed less than KAGGLE_MNIST_KERNEL_STALE seconds ago and never seen running: what Kaggle says of it may not be
        about this version yet (a previous version's state, or a 404 before the new one is listed)."""
        return not self.seen_running and time.time() - self.time < environ.kernel_stale()


@dataclass
class RunKernels:
    """The kernels pushed for one command's run, and the run they brought home."""

    accelerator: str
    kernels: list[Kernel] = dataclasses.field(default_factory=list)
    run_id: str | None = None

    def live(self) -> list[Kernel]:
        return [k for k in self.kernels if k.state == State.LIVE]

    def latest(self, share: int) -> Kernel | None:
        parts = [k for k in self.kernels if k.share == share]
        return max(parts, key=lambda k: k.part) if parts else None


class KernelRecord:
    """ensembles/.kaggle-kernels.json: per command (the key of its settings, data, accelerator and
    kernel count), the kernels pushed for its run. Saved after every change, so the same command run
    again re-attaches to them; loaded and checked here only."""

    def __init__(self, root: Path):
        self.path = root / RECORD
        self.runs: dict[str, RunKernels] = self._load()

    def entry(self, key: str, accelerator: str) -> RunKernels:
        return self.runs.setdefault(key, RunKernels(accelerator))

    def save(self) -> None:
        storage.write_json(self.path, {key: dataclasses.asdict(run) for key, run in self.runs.items()})

    def _load(self) -> dict[str, RunKernels]:
        """A missing or unreadable record is an empty one (the kernels it named are then pushed again);
        an entry that does not parse is dropped. An entry written before kernels had shares and parts
        (a "pushed" list, one kernel per share) reads as live kernels, which the next look settles."""
        try:
            values = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        runs = {}
        for key, value in values.items() if isinstance(values, dict) else ():
            try:
                if "kernels" not in value:
                    value = {
                        **value,
                        "kernels": [
                            {**k, "share": i, "part": 0, "source": None, "state": "live"}
                            for i, k in enumerate(value.pop("pushed", []))
                        ],
                    }
                kernels = [
                    Kernel(
                        str(k["ref"]), int(k["share"]), int(k["part"]), k.get("source"), State(k["state"]),
                        float(k.get("time", 0.0)), bool(k.get("seen_running", False)),
                    )
                    for k in value["kernels"]
                ]
                runs[key] = RunKernels(str(value["accelerator"]), kernels, value.get("run_id"))
            except (AttributeError, KeyError, TypeError, ValueError):
                continue
        return runs


@dataclass
class _Plan:
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


class _Follow:
    """Pushes kernels as GPU sessions free up, follows them, fetches each one's output as it ends, and
    continues a kernel stopped by the session limit in a new one that takes its output as input."""

    def __init__(self, plan: _Plan, log: Log, status_line: Callable[[str], None] | None):
        self.plan, self.entry = plan, plan.entry
        self.log, self.status_line = log, status_line or log
        self.api = kaggle_api.client()
        self.streams = _LogStreams(self.api)
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
            response = kaggle_api.call(
                lambda: self.api.kernels_status(kernel.ref),
                "checking the kernel",
                missing=(f"kernel {kernel.ref}", "it may have been deleted; see " + _url(kernel.ref)),
            )
        except UserError as error:
            # Kaggle's API is eventually consistent: a version pushed moments ago can be unknown to the
            # status call for a while. Waited out within the stale-status window, as a stale state is.
            if getattr(error, "status", None) == 404 and kernel.just_pushed():
                return
            raise
        state = str(getattr(response, "status", "")).split(".")[-1].upper()
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
            message = _kernel_failed(self.api, kernel.ref, getattr(response, "failure_message", ""))
            raise UserError(message + "; the same command pushes it again")
        if state == "COMPLETE":
            self.fetch(kernel)

    def fetch(self, kernel: Kernel) -> None:
        """A finished kernel's output, downloaded and verified into the run's staging folder: a stopped
        one's is what its continuation starts from."""
        folder = _staging(self.plan.root, self.plan.key) / kernel.slug
        try:
            receipt = _download_output(kernel.ref, folder)
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
        line = f"Kaggle: {states} for {_elapsed(elapsed)}"
        estimate = self.plan.estimate
        if estimate:
            line += f" (estimate {_elapsed(estimate)})"
        if waiting:
            line += f"; {waiting} waiting for a GPU session"
        progress = self.streams.latest()
        if progress:
            return f"{line}; {progress}"
        if estimate:
            line += f"; about {_elapsed(max(0.0, estimate - elapsed))} left by the estimate"
        if not self.streams.can_stream:
            return f"{line}; progress shows when the kernel ends (kaggle < 2.2.3 cannot stream its log)"
        return line


class _LogStreams:
    """The live log of each running kernel, read in the background where the client can stream it
    (kaggle >= 2.2.3): Kaggle's stored log (`kernels_logs`) is only written when a session ends."""

    def __init__(self, api):
        self.api = api
        self.can_stream = hasattr(api, "kernels_logs_stream")
        self.lines: dict[str, str] = {}
        self.threads: dict[str, threading.Thread] = {}
        self.closed = threading.Event()

    def follow(self, ref: str) -> None:
        if not self.can_stream or (ref in self.threads and self.threads[ref].is_alive()):
            return
        thread = threading.Thread(target=self._read, args=(ref,), daemon=True, name=f"log-{ref}")
        self.threads[ref] = thread
        thread.start()

    def _read(self, ref: str) -> None:
        # The server replays the stream from its start on each connection: the last matching line wins.
        for _attempt in range(5):
            if self.closed.is_set():
                return
            try:
                for event in self.api.kernels_logs_stream(ref):
                    if self.closed.is_set():
                        return
                    for line in str(event.get("data", "")).splitlines():
                        # train's plain progress lines (share done, time left), or a finished member's.
                        if line.strip().startswith("progress: ") or MEMBER_LABEL.search(line):
                            self.lines[ref] = line.strip()
                return  # the stream ended with the session
            except Exception:  # a dropped connection: try again shortly; progress is only a nicety
                self.closed.wait(5)

    def latest(self) -> str:
        return next(reversed(self.lines.values()), "") if self.lines else ""

    def close(self) -> None:
        self.closed.set()


def _shares(settings: TrainSettings, kernels: int) -> list[list[str] | None]:
    """The members each kernel trains: all in one, or dealt out like the local worker processes."""
    if kernels == 1:
        return [None]
    names = [member_name(fold, seed) for fold, seed in settings.members]
    if kernels > len(names):
        raise UserError(f"--kernels {kernels} is more than the run's {len(names)} members")
    return [names[i::kernels] for i in range(kernels)]


def _push(slug: str, script: str, accelerator: str, log: Log, source: str | None = None) -> str:
    """Pushes a script kernel; `source`: an earlier kernel whose output it starts from (mounted as input)."""
    api = kaggle_api.client()
    owner = _owner(api)
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
        response = kaggle_api.call(lambda: api.kernels_push(folder, acc=accelerator), "pushing the kernel")
    error = str(getattr(response, "error", "") or "")
    if error:
        sessions = re.search(r"gpu session count of (\d+)", error, re.IGNORECASE)
        if sessions or "session count" in error.lower():
            raise SessionsFull(int(sessions[1]) if sessions else None, error)
        raise UserError(_push_error(error))
    ref = str(getattr(response, "ref", "") or f"{owner}/{slug}").removeprefix("/code/").lstrip("/")
    log(f"Pushed kernel {ref} (version {getattr(response, 'version_number', '?')}): {_url(ref)}")
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


def _kernel_failed(api, ref: str, message: str) -> str:
    tail: list[str] = []
    with contextlib.suppress(UserError):  # the log is a courtesy: its absence must not hide the failure
        tail = _log_lines(api, ref)[-3:]
    text = (message or "").lower()
    limit = any(word in text for word in ("timeout", "execution duration", "time limit")) or any(
        "time limit" in line.lower() for line in tail
    )
    what = "hit Kaggle's time limit" if limit else "failed"
    last = " | ".join(line.strip() for line in tail if line.strip()) or "no log"
    return f"the kernel {what} ({message or 'no message'}); last log lines: {last}; see {_url(ref)}"


def _log_lines(api, ref: str) -> list[str]:
    """The kernel's stored log as text lines: Kaggle returns a JSON list of {"data": ...} entries;
    plain text is taken as it is."""
    raw = (
        kaggle_api.call(
            lambda: api.kernels_logs(ref),
            "reading the kernel log",
            missing=(f"log of kernel {ref}", f"see {_url(ref)}"),
        )
        or ""
    )
    try:
        entries = json.loads(raw)
        text = "".join(str(e.get("data", "")) for e in entries if isinstance(e, dict))
    except (ValueError, AttributeError, TypeError):
        text = raw
    return text.splitlines()


def _staging(root: Path, key: str) -> Path:
    """Where the kernels' verified outputs wait until the whole run is home."""
    return root / f".kaggle-{key}.outputs"


class MissingOutput(UserError):
    """A kernel that finished without the output it writes."""


def _download_output(ref: str, folder: Path) -> Receipt:
    """The kernel's receipt and archive, downloaded (and checked against each other) into `folder`;
    returns the receipt."""
    remedy = f"run the same command again to download it again, or see {_url(ref)}"
    kaggle_api.kernel_output(ref, folder, (RECEIPT, ARCHIVE), missing=(f"output of kernel {ref}", remedy))
    try:
        receipt = Receipt.load(folder / RECEIPT)
    except FileNotFoundError:
        raise MissingOutput(
            f"the kernel {ref} finished but left no {RECEIPT}: its output is missing; see {_url(ref)}"
        ) from None
    except ValueError:
        raise UserError(
            f"{RECEIPT} from kernel {ref} is damaged (not the receipt the kernel writes): {remedy}"
        ) from None
    archive = folder / ARCHIVE
    if not archive.is_file():
        raise MissingOutput(
            f"the kernel {ref} finished but left no {ARCHIVE}: its output is missing; see {_url(ref)}"
        )
    if storage.sha256_file(archive) != receipt.sha256:
        raise UserError(
            f"{ARCHIVE} from kernel {ref} is damaged (its checksum does not match the receipt): {remedy}"
        )
    return receipt


def _bring_home(entry: RunKernels, identity, dataset, root: Path, key: str, log: Log) -> Run:
    """Unpacks each share's last kernel output (downloaded and verified as it ended), merges the members
    into one run folder and moves it into ensembles/ only when all is well."""
    outputs = _staging(root, key)
    staging = root / f".kaggle-{key}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        runs = []
        for share in sorted({k.share for k in entry.kernels}):
            last = entry.latest(share)
            folder = staging / f"kernel-{share}"
            shutil.copytree(outputs / last.slug, folder)
            runs.append(_unpack(folder, last.ref))
        run = _merge(runs, staging / runs[0].id, identity, dataset)
        target = root / run.id
        if target.exists():
            raise UserError(f"{target} already exists and is not this run: move it away, then run again")
        os.replace(run.dir, target)
        log(f"Downloaded and verified the run from Kaggle into {target}")
        shutil.rmtree(outputs, ignore_errors=True)
        return Run(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _unpack(folder: Path, ref: str) -> Run:
    """The run folder inside a verified output archive (see _download_output), extracted in `folder`."""
    run_id = Receipt.load(folder / RECEIPT).run_id
    archive = folder / ARCHIVE
    extract(archive, run_id, folder, f"{ARCHIVE} from kernel {ref}")
    archive.unlink()
    return Run(folder / run_id)


def _merge(runs: list[Run], target: Path, identity: dict, dataset: data.Dataset) -> Run:
    """One run folder from the kernels' runs: the same settings and data in each, every member once."""
    base = runs[0]
    for run in runs:
        try:
            config = run.identity()
        except UserError as exc:
            raise UserError(f"the run from Kaggle is damaged: {exc.message}") from None
        if not same_run(config, identity):
            raise UserError(
                f"the run from Kaggle ({run.id}) was trained with other settings or data than this command's: "
                "refusing it (did the local data or the package change since the push?)"
            )
    shutil.copytree(base.dir, target)
    merged = Run(target)
    for run in runs[1:]:
        for member in run.members:
            if run.member_done(*member) and not merged.member_done(*member):
                shutil.copytree(run.member_dir(*member), merged.member_dir(*member))
    missing = [m for m in merged.members if not merged.member_done(*m)]
    damaged = merged.damaged_members()
    if missing or damaged:
        names = [member_name(*m) for m in missing] + [
            f"{member_name(*m)} ({', '.join(v)})" for m, v in damaged.items()
        ]
        raise UserError(
            f"the run from Kaggle is incomplete or damaged: {', '.join(names)}; run the same command again"
        )
    if len(runs) > 1 or not merged.finished:
        (target / "metrics.json").unlink(missing_ok=True)
        rows = merged.rows(dataset)
        wall = {"wall_seconds": None, "trained_on": "kaggle"}
        merged.score(rows.labels, merged.array("folds.npy"), wall, rows.held_labels)
    else:
        try:
            for name in ("oof_probs.npy", "oof_labels.npy", "test_probs.npy", "folds.npy"):
                merged.array(name)
        except DamagedFile as damage:
            raise UserError(f"the run from Kaggle is damaged: {damage.message}") from None
    return merged


# ----------------------------------------------------------------------------------------------
# The record of pushed kernels


def _installed_run(identity: dict) -> Run | None:
    for folder in sorted(paths.ensembles_dir().glob("*/metrics.json")):
        run = Run(folder.parent)
        with contextlib.suppress(UserError):
            if same_run(run.identity(), identity):
                return run
    return None


def _owner(api) -> str:
    owner = ""
    with contextlib.suppress(Exception):
        owner = api.get_config_value(api.CONFIG_NAME_USER) or ""
    owner = owner or os.environ.get("KAGGLE_USERNAME", "")
    if not owner:
        raise UserError(
            'cannot tell your Kaggle username: put it in kaggle.json ("username") or KAGGLE_USERNAME'
        )
    return owner


def _url(ref: str) -> str:
    return f"https://www.kaggle.com/code/{ref}"


def _elapsed(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"


__all__ = [
    "kernel_script",
    "train_on_kaggle",
    "package_zip",
    "DEFAULT_ACCELERATOR",
]
