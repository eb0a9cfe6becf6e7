"""A trained run in ensembles/<run-id>/: its folder, settings, members and files, read back verified.

    ensembles/<run-id>/
        config.json          every setting (TrainSettings) and the data checksums: the run's identity
        manifest.json        package versions, devices, git commit, a copy of the identity, folds.npy's sha256
        folds.npy            the fold of every training row
        members/<f0-s0>/     model.keras, best.keras, history.csv, oof.npz, test.npy, member.json
        oof_probs.npy, oof_labels.npy, test_probs.npy, metrics.json
                             written last: a run with metrics.json is finished

Every file is written whole (storage.atomic_path) and its sha256 recorded by the file written after it
(member.json for a member's files, metrics.json for the run's arrays), so reading one back checks it:
a damaged file is never used, it is named in one line that says how to repair it (rerunning the train
command retrains only what is damaged).

Kept free of Keras so that commands that only read a run's files (evaluate, submit) start fast.
"""

from __future__ import annotations

import csv
import functools
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from competition import paths, storage
from competition.errors import UserError
from competition.runs.files import DamagedFile, checksums, read_json, verify
from competition.runs.identity import same_run
from competition.runs.rows import RunRows, make_folds, run_rows
from competition.training.settings import TrainSettings

RUN_ARRAYS = ("oof_probs.npy", "oof_labels.npy", "test_probs.npy")
MEMBER_FILES = ("model.keras", "oof.npz", "test.npy")
# Disk a member needs: model.keras and best.keras of the bncnn (4 MB each), its predictions, a margin.
MEMBER_BYTES = 16 << 20
BACKUP_MARGIN_BYTES = 16 << 20  # a member's two 4 MB epoch backups during a swap, and room to spare


def member_name(fold: int, seed_index: int) -> str:
    return f"f{fold}-s{seed_index}"


@dataclass(frozen=True)
class Run:
    dir: Path

    # ------------------------------------------------------------------------------------------
    # Finding runs

    @classmethod
    def open(cls, run: str | None = None) -> Run:
        """A finished run by id or path, or the latest finished one."""
        if run is None:
            return cls.latest()
        candidate = Path(run)
        for path in (candidate, paths.ensembles_dir() / run):
            if (path / "metrics.json").is_file():
                return cls(path)
            if (path / "config.json").is_file():
                found = cls(path)
                raise UserError(f"run {path} is unfinished: run `{found.train_command()}` to complete it")
            if (path / "members").is_dir() or (path / "manifest.json").is_file():
                cls(path).identity()  # names the missing or damaged config.json, or repairs it
        raise UserError(
            f"no run '{run}' in {paths.ensembles_dir()}: give a run id from there, or omit it for the latest"
        )

    @classmethod
    def latest(cls) -> Run:
        """The most recently finished run (the one later commands use when not told)."""
        runs = sorted(
            (p for p in _run_folders() if (p / "metrics.json").is_file()),
            key=lambda p: (p / "metrics.json").stat().st_mtime,
        )
        if not runs:
            raise UserError(f"no trained run in {paths.ensembles_dir()}: run `kaggle-mnist train` first")
        return cls(runs[-1])

    def newer_unfinished(self) -> list[Run]:
        """Unfinished runs started after this one finished: what `latest` passes over, and the user may
        think of as their latest run (an interrupted `train`, say)."""
        finished = (self.dir / "metrics.json").stat().st_mtime
        return [
            Run(p)
            for p in _run_folders()
            if not (p / "metrics.json").is_file()
            and (p / "config.json").is_file()
            and (p / "config.json").stat().st_mtime > finished
        ]

    @classmethod
    def matching(cls, identity: dict) -> Run | None:
        """The newest run (finished or not) trained with exactly these settings on exactly this data.

        A run whose config.json is missing or damaged is repaired from the copy in its manifest.json;
        one that cannot be identified at all is refused, not passed over, so the same command never
        quietly starts a second run beside a broken one."""
        found = [cls(folder) for folder in _run_folders() if same_run(cls(folder).identity(), identity, exact=True)]
        return max(found, key=lambda r: r.dir.name) if found else None

    # ------------------------------------------------------------------------------------------
    # What the run is

    @property
    def id(self) -> str:
        return self.dir.name

    @functools.cached_property
    def saved_identity(self) -> dict:
        """config.json as `identity()` reads it, read once."""
        return self.identity()

    def identity(self) -> dict:
        """config.json, verified; repaired from manifest.json's copy if it is missing or damaged."""
        path = self.dir / "config.json"
        try:
            return read_json(path)
        except DamagedFile as damage:
            try:
                copy = read_json(self.dir / "manifest.json")["identity"]
            except (DamagedFile, KeyError, TypeError):
                raise UserError(
                    f"{damage.message.split(':')[0]} and the run cannot be identified without it: move "
                    f"{self.dir} out of {self.dir.parent} (or delete it), then run the command again"
                ) from None
            storage.write_json(path, copy)
            return copy

    @functools.cached_property
    def settings(self) -> TrainSettings:
        return TrainSettings.from_dict(self.saved_identity["settings"])

    @property
    def backend(self) -> str:
        return self.settings.backend

    @property
    def finished(self) -> bool:
        return (self.dir / "metrics.json").is_file()

    def train_command(self) -> str:
        """The command that trains (or continues, or repairs) this run on this machine."""
        from competition import backend  # Keras-free: reads /proc/cpuinfo

        try:
            gpu = read_json(self.dir / "manifest.json").get("devices", ["cpu"]) != ["cpu"]
        except DamagedFile:
            gpu = False
        options = self.settings.cli_options(gpu, backend.cpu_bfloat16())
        return "kaggle-mnist train" + "".join(f" {option}" for option in options)

    def rows(self, dataset) -> RunRows:
        """The rows of the competition data (`data.Dataset`) that the run trains on and predicts."""
        return run_rows(self.settings, dataset)

    # ------------------------------------------------------------------------------------------
    # Members

    @property
    def members(self) -> list[tuple[int, int]]:
        return self.settings.members

    def member_dir(self, fold: int, seed_index: int) -> Path:
        return self.dir / "members" / member_name(fold, seed_index)

    def member_done(self, fold: int, seed_index: int) -> bool:
        return (self.member_dir(fold, seed_index) / "member.json").is_file()

    def member_info(self, fold: int, seed_index: int) -> dict:
        return read_json(self.member_dir(fold, seed_index) / "member.json", self._retrain_hint())

    def member_file(self, fold: int, seed_index: int, name: str) -> Path:
        """A finished member's file, checked against the sha256 in its member.json."""
        folder = self.member_dir(fold, seed_index)
        expected = self.member_info(fold, seed_index).get("files", {}).get(name)
        verify(folder / name, expected, self._retrain_hint())
        return folder / name

    def member_predictions(self, fold: int, seed_index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(validation rows, their probabilities, test probabilities) of a finished member, verified."""
        oof = self.member_file(fold, seed_index, "oof.npz")
        test = self.member_file(fold, seed_index, "test.npy")
        with np.load(oof) as saved:
            return saved["rows"], saved["probs"], np.load(test)

    def damaged_members(self) -> dict[tuple[int, int], list[str]]:
        """Finished members whose member.json or files fail their checks, with the files at fault."""
        damaged = {}
        for member in self.members:
            if not self.member_done(*member):
                continue
            try:
                info = self.member_info(*member)
            except DamagedFile:
                damaged[member] = ["member.json"]
                continue
            bad = []
            for name in MEMBER_FILES:
                try:
                    verify(self.member_dir(*member) / name, info.get("files", {}).get(name), "")
                except DamagedFile:
                    bad.append(name)
            if bad:
                damaged[member] = bad
        return damaged

    def repair(self, labels: np.ndarray, log: Callable[[str], None]) -> bool:
        """Checks the run's files before they are trusted again; returns whether anything was damaged.

        A lost or damaged folds.npy is rebuilt from the settings and `labels` and must match the checksum
        the manifest recorded (then nothing else needs doing); a member whose predictions are damaged
        predicts again from its model; one whose model is damaged is trained again from scratch; a
        finished run whose own files are damaged is scored again from its members (metrics.json is
        removed, so the run reads as unfinished until that is done)."""
        self._repair_folds(labels, log)
        damaged = self.damaged_members()
        for member, files in damaged.items():
            folder = self.member_dir(*member)
            retrain = "model.keras" in files
            if not retrain and "member.json" in files:
                try:  # no record left to check the model against: check that it opens
                    verify(folder / "model.keras", None, "")
                except DamagedFile:
                    retrain = True
            (folder / "member.json").unlink(missing_ok=True)
            what = f"Member {folder.name} of {self.id}: {', '.join(files)} damaged or missing"
            if retrain:
                shutil.rmtree(folder)
                log(f"{what}; training it again")
            else:
                for name in ("oof.npz", "test.npy"):
                    (folder / name).unlink(missing_ok=True)
                log(f"{what}; predicting again with its model")
        if not self.finished:
            return bool(damaged)
        try:
            metrics = self.metrics
            arrays = {name: self.array(name) for name in RUN_ARRAYS}
            if len(arrays["oof_labels.npy"]) != len(labels) or metrics.get("run_id") != self.id:
                raise DamagedFile(self.dir / "metrics.json", "does not match the run", "")
        except DamagedFile as damage:
            log(f"{damage.path} is damaged or missing; scoring the run again from its members")
            damaged = damaged or {"run": [damage.path.name]}
        if damaged:
            (self.dir / "metrics.json").unlink(missing_ok=True)
            self.__dict__.pop("metrics", None)  # the cached copy, if read
        return bool(damaged)

    def _repair_folds(self, labels: np.ndarray, log: Callable[[str], None]) -> None:
        try:
            self.array("folds.npy")
            return
        except DamagedFile as damage:
            problem = damage.message.split(":")[0]
        expected = read_json(self.dir / "manifest.json", self._retrain_hint()).get("folds_sha256")
        with storage.atomic_path(self.dir / "folds.npy") as tmp:
            storage.npy_writer(make_folds(labels, self.settings))(tmp)
            if expected is None or storage.sha256_file(tmp) != expected:
                raise UserError(
                    f"{problem}, and the folds rebuilt from the run's settings and data do not match the "
                    f"checksum its manifest.json recorded: move {self.dir} out of {self.dir.parent} (or "
                    "delete it), then run the command again to train it anew"
                )
        log(f"{problem}; rebuilt from the run's settings and data (the same folds, checked)")

    @staticmethod
    def history(member_folder: Path) -> list[dict]:
        """A member's epoch log, one row per epoch (a resume after a kill can repeat an epoch's row: the
        last one counts)."""
        path = Path(member_folder) / "history.csv"
        if not path.is_file():
            return []
        with open(path, newline="") as handle:
            rows = {}
            for row in csv.DictReader(handle):
                try:
                    rows[int(row["epoch"])] = {k: _number(v) for k, v in row.items()}
                except (KeyError, TypeError, ValueError):
                    continue  # a line cut short by a kill mid-write
        return [rows[e] for e in sorted(rows)]

    # ------------------------------------------------------------------------------------------
    # The run's own files

    @functools.cached_property
    def metrics(self) -> dict:
        return read_json(self.dir / "metrics.json", self._retrain_hint())

    def array(self, name: str) -> np.ndarray:
        """One of the run's arrays (RUN_ARRAYS, or folds.npy), checked against its recorded sha256."""
        if name == "folds.npy":
            expected = read_json(self.dir / "manifest.json", self._retrain_hint()).get("folds_sha256")
        else:
            expected = self.metrics.get("files", {}).get(name)
        path = self.dir / name
        verify(path, expected, self._retrain_hint())
        return np.load(path)

    def oof(self) -> tuple[np.ndarray, np.ndarray]:
        """The ensemble's out-of-fold probabilities and the true labels."""
        return self.array("oof_probs.npy"), self.array("oof_labels.npy")

    def finish(self, arrays: dict[str, np.ndarray], metrics: dict) -> dict:
        """Writes the run's scored arrays (RUN_ARRAYS), then metrics.json with their checksums: written
        last, it marks the run finished. Returns the metrics as written."""
        for name in RUN_ARRAYS:
            storage.save_npy(self.dir / name, arrays[name])
        metrics = {"run_id": self.id, **metrics, "files": checksums(self.dir, RUN_ARRAYS)}
        storage.write_json(self.dir / "metrics.json", metrics)
        self.__dict__["metrics"] = metrics  # the cached copy, if one was read before
        return metrics

    def _retrain_hint(self) -> str:
        try:
            command = self.train_command()
        except UserError:
            command = "kaggle-mnist train"
        return f"run `{command}` to repair the run (it retrains or rescores only what is damaged)"


def create(settings: TrainSettings, identity: dict, labels: np.ndarray, gpus: list[str]) -> Run:
    """A new run folder for `identity`: its stratified folds, config.json and manifest.json, moved into
    ensembles/ in one step (the folder appears complete, or not at all). Call after `backend.select`."""
    import keras

    from competition import backend

    root = paths.ensembles_dir()
    root.mkdir(parents=True, exist_ok=True)
    check_free_space(root, len(settings.members))  # before the run folder exists
    stem = f"{time.strftime('%Y%m%d-%H%M%S')}-{settings.arch}-{settings.folds}x{settings.seeds}"
    run_dir, n = root / stem, 1
    while run_dir.exists():
        n += 1
        run_dir = root / f"{stem}-{n}"
    staging = root / f".{run_dir.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    storage.save_npy(staging / "folds.npy", make_folds(labels, settings))
    storage.write_json(staging / "config.json", identity)
    storage.write_json(
        staging / "manifest.json",
        {
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "versions": backend.versions(),
            "backend": keras.backend.backend(),
            "devices": gpus or ["cpu"],
            "precision": keras.mixed_precision.dtype_policy().name,
            "git_commit": _git_commit(),
            # A copy of config.json (the run's identity, repaired from here if that file is lost) and
            # the checksum of folds.npy, checked whenever the folds are read back.
            "identity": identity,
            "folds_sha256": storage.sha256_file(staging / "folds.npy"),
        },
    )
    staging.rename(run_dir)
    return Run(run_dir)


def check_free_space(folder: Path, members: int) -> None:
    """Each member keeps a model or two and its predictions: say now, not hours in, if they cannot fit."""
    storage.ensure_free_space(folder, MEMBER_BYTES * members + BACKUP_MARGIN_BYTES)


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _run_folders() -> list[Path]:
    root = paths.ensembles_dir()
    if not root.is_dir():
        return []
    # Hidden entries are staging folders and locks.
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _number(value: str):
    try:
        return float(value) if value not in ("", "NA") else float("nan")
    except ValueError:
        return value
