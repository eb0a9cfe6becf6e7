"""ensembles/.kaggle-kernels.json: the kernels pushed for each `train --on kaggle` command, so the same
command run again re-attaches to them instead of pushing again. Typed, loaded and checked here only.
Keras-free."""

from __future__ import annotations

import dataclasses
import enum
import json
import time
from dataclasses import dataclass
from pathlib import Path

from competition import environ, storage

RECORD = ".kaggle-kernels.json"


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
    """The kernels pushed for one command's run (the run they bring home is found by its identity)."""

    accelerator: str
    kernels: list[Kernel] = dataclasses.field(default_factory=list)

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
                runs[key] = RunKernels(str(value["accelerator"]), kernels)
            except (AttributeError, KeyError, TypeError, ValueError):
                continue
        return runs

