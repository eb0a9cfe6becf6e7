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
import json
import shutil
import subprocess
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from competition import paths, storage
from competition.errors import UserError
from competition.scoring import ensemble
from competition.scoring.expected import expectation
from competition.training.settings import INTRODUCED, RETIRED, TrainSettings

RUN_ARRAYS = ("oof_probs.npy", "oof_labels.npy", "test_probs.npy")
MEMBER_FILES = ("model.keras", "oof.npz", "test.npy")
# Disk a member needs: model.keras and best.keras of the bncnn (4 MB each), its predictions, a margin.
MEMBER_BYTES = 16 << 20
BACKUP_MARGIN_BYTES = 16 << 20  # a member's two 4 MB epoch backups during a swap, and room to spare


def member_name(fold: int, seed_index: int) -> str:
    return f"f{fold}-s{seed_index}"


class DamagedFile(UserError):
    """A file of a run that is missing or does not match what was recorded when it was written."""

    def __init__(self, path: Path, what: str, repair: str):
        super().__init__(f"{path} {what}: {repair}")
        self.path = path


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

    def score(
        self, labels: np.ndarray, folds: np.ndarray, wall: dict, held_labels: np.ndarray | None = None
    ) -> dict:
        """Scores the run from its members' verified predictions (`labels`, `folds`: the run's rows;
        `held_labels`: a --holdout run's, for its test predictions); metrics.json, written last with the
        checksums of the run's arrays, marks it finished."""
        settings, run_dir, run = self.settings, self.dir, self
        members, oof_parts, tests = [], [], []
        for member in settings.members:
            members.append(run.member_info(*member))
            rows, probs, test = run.member_predictions(*member)
            oof_parts.append((rows, probs))
            tests.append(test)
        oof, covered = ensemble.out_of_fold(oof_parts, len(labels))
        assert covered.all(), "every row belongs to some fold"
        fold_accuracy = {
            str(f): ensemble.accuracy(oof[folds == f], labels[folds == f]) for f in range(settings.folds)
        }
        test_probs = ensemble.average(tests).astype(np.float32)
        storage.save_npy(run_dir / "oof_probs.npy", oof.astype(np.float32))
        storage.save_npy(run_dir / "oof_labels.npy", labels)
        storage.save_npy(run_dir / "test_probs.npy", test_probs)
        valid = [m for m in members if np.isfinite(m["seconds_per_epoch"])]
        metrics = {
            "run_id": run_dir.name,
            "cv_accuracy": ensemble.accuracy(oof, labels),
            # The plain mean's expected score on the rows the members predicted (None: not measured).
            "expected_submission": expectation(settings, ensemble.accuracy(oof, labels), len(test_probs)),
            "fold_accuracy": fold_accuracy,
            "mean_member_accuracy": float(np.mean([m["val_accuracy"] for m in members])),
            "members": members,
            "rows": int(len(labels)),
            "seconds_total": float(sum(m["seconds"] for m in members)),
            **wall,
            "seconds_per_epoch": float(np.mean([m["seconds_per_epoch"] for m in valid])) if valid else None,
            "images_per_second_per_member": float(np.mean([m["images_per_second"] for m in valid]))
            if valid
            else None,
            "files": checksums(run_dir, RUN_ARRAYS),
        }
        if held_labels is not None:
            # The plain mean of all members on rows nothing trained or chose on: what the submission of
            # this recipe scores (`predict` reports its own blend's figure).
            metrics["holdout"] = ensemble.scored(test_probs, held_labels) | {"seed": settings.holdout_seed}
        storage.write_json(run_dir / "metrics.json", metrics)
        self.__dict__["metrics"] = metrics  # the cached copy, if one was read before
        return metrics

    def _retrain_hint(self) -> str:
        try:
            command = self.train_command()
        except UserError:
            command = "kaggle-mnist train"
        return f"run `{command}` to repair the run (it retrains or rescores only what is damaged)"


@dataclass(frozen=True)
class RunRows:
    """What a run trains on and predicts: its training rows (validated fold by fold), and the images
    its members predict as the test set: test.csv's, or in a --holdout run the held-out rows, whose
    labels only scoring reads."""

    images: np.ndarray
    labels: np.ndarray
    test_images: np.ndarray
    held_labels: np.ndarray | None = None
    held_rows: np.ndarray | None = None  # their row numbers in train.csv


def run_rows(settings: TrainSettings, dataset) -> RunRows:
    """The one place a run's rows are cut from the competition data (`data.Dataset`): the --holdout
    rows out first, then the first --subset of the rest (all with 0)."""
    images, labels = dataset.train_images, dataset.train_labels
    test_images, held_labels, held = dataset.test_images, None, None
    if settings.holdout:
        kept, held = holdout_split(labels, settings.holdout, settings.holdout_seed)
        test_images, held_labels = images[held], labels[held]
        images, labels = images[kept], labels[kept]
    available = len(images)
    if settings.subset > available:
        # config.json would say N rows while fewer were trained on.
        raise UserError(
            f"--subset {settings.subset:,} is more than train.csv's {available:,} rows"
            f"{' left after --holdout' if settings.holdout else ''}: use a smaller --subset, or 0 for all rows"
        )
    keep = slice(settings.subset or None)
    return RunRows(images[keep], labels[keep], test_images, held_labels, held)


def holdout_split(labels: np.ndarray, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept rows, held-out rows), each sorted: a stratified draw of `size` rows, the same for the same
    labels, size and seed, so two recipes measured with one seed are scored on the same rows."""
    from sklearn.model_selection import train_test_split

    classes = len(np.unique(labels))
    if not classes <= size <= len(labels) - classes:
        raise UserError(
            f"--holdout {size:,} must leave at least one row of every digit on each side of the split "
            f"of {len(labels):,} rows: use between {classes} and {len(labels) - classes:,}"
        )
    kept, held = train_test_split(
        np.arange(len(labels)), test_size=size, stratify=labels, random_state=seed, shuffle=True
    )
    return np.sort(kept), np.sort(held)


# ----------------------------------------------------------------------------------------------
# Verified reading


def read_json(path: Path, repair: str = "") -> dict:
    """A JSON file written by this project, or one line naming it and what to do."""
    path = Path(path)
    repair = repair or "delete it and run the command that wrote it again"
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DamagedFile(path, "is missing", repair) from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DamagedFile(path, f"is damaged ({type(exc).__name__})", repair) from None
    if not isinstance(value, dict):
        raise DamagedFile(path, "is damaged (not a JSON object)", repair)
    return value


def verify(path: Path, expected_sha256: str | None, repair: str) -> None:
    """Checks a file against the sha256 recorded when it was written; without a record (runs from
    before checksums), checks that it opens as what its name says."""
    path = Path(path)
    if not path.is_file():
        raise DamagedFile(path, "is missing", repair)
    if expected_sha256 is not None:
        if storage.sha256_file(path) != expected_sha256:
            raise DamagedFile(path, "is damaged (its checksum does not match)", repair)
        return
    try:
        if path.suffix == ".npy":
            np.load(path, mmap_mode="r")
        elif path.suffix in (".npz", ".keras"):
            with zipfile.ZipFile(path) as archive:
                if archive.testzip() is not None:
                    raise ValueError("bad member")
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DamagedFile(path, f"is damaged ({type(exc).__name__})", repair) from None


def make_identity(settings: TrainSettings, dataset) -> dict:
    """What makes a run the same run: its (resolved) settings and the data it trains on. config.json
    holds it; the same command finds its unfinished run by it, and a run trained on Kaggle is checked
    against it when it comes home."""
    return {
        "settings": settings.to_dict(),
        "train_sha256": dataset.train_sha256,
        "test_sha256": dataset.test_sha256,
        "arrays_sha256": dataset.arrays_sha256,  # the cached arrays actually trained on
    }


def same_run(config: dict, identity: dict, exact: bool = False) -> bool:
    """A run's config.json against an identity: the same settings on the same CSVs. `exact` (a run
    continued on this machine): also the same CPU thread count and cached arrays; without it (a run
    trained elsewhere), not those, which a GPU run never uses and another machine cannot know."""

    def settings(values: dict) -> dict:
        # A run saved before a setting existed trained as the code of its day (INTRODUCED, else the
        # default); one saved with a setting since retired, at the value that trains as today's code,
        # is today's.
        every = {**TrainSettings().to_dict(), **INTRODUCED, **values["settings"]}
        retired = {k for k, v in every.items() if k in RETIRED and v == RETIRED[k]}
        return {k: v for k, v in every.items() if (exact or k != "cpu_threads") and k not in retired}

    keys = ("train_sha256", "test_sha256", *(("arrays_sha256",) if exact else ()))
    same_data = all(config.get(k) == identity.get(k) for k in keys)
    return same_data and settings(config) == settings(identity)


def make_folds(labels: np.ndarray, settings: TrainSettings) -> np.ndarray:
    """The fold of every row: a stratified split seeded by `split_seed`, so the same labels and settings
    give the same folds (what lets `Run.repair` rebuild a lost folds.npy)."""
    from sklearn.model_selection import StratifiedKFold

    splitter = StratifiedKFold(n_splits=settings.folds, shuffle=True, random_state=settings.split_seed)
    folds = np.empty(len(labels), dtype=np.int8)
    for fold, (_, val_rows) in enumerate(splitter.split(np.zeros(len(labels)), labels)):
        folds[val_rows] = fold
    return folds


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


def checksums(folder: Path, names) -> dict[str, str]:
    """The sha256 of each named file in `folder`, to record beside them."""
    return {name: storage.sha256_file(Path(folder) / name) for name in names}


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


__all__ = [
    "Run",
    "DamagedFile",
    "read_json",
    "verify",
    "checksums",
    "member_name",
    "RunRows",
    "run_rows",
    "holdout_split",
    "make_identity",
    "make_folds",
    "same_run",
    "create",
    "check_free_space",
]
