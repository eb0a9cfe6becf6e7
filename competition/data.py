"""`kaggle-mnist fetch`: get the competition CSVs, validate them, and keep a fast uint8 cache.

Sources, first that applies: `--from PATH` (the Kaggle zip or a folder of CSVs), the input mounted in a
Kaggle notebook, the Kaggle API. Files are assembled and validated in a staging folder beside the
target and swapped in only when all is well, so `data/digit-recognizer/` is either absent or valid.

About 470 lines, on purpose: the sources, the checks every CSV passes and the cache are one staged
transaction (nothing is swapped in until all of it is valid), and a reader checking that promise
needs all three in view. Keras-free; imports the shared modules and, for the API source, kaggle/api.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import os
import shutil
import warnings
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from competition import COMPETITION, locks, paths, storage
from competition.errors import UserError

TRAIN, TEST, SAMPLE = "train.csv", "test.csv", "sample_submission.csv"
NEEDED = (TRAIN, TEST)
IMAGE_SIDE = 28
NUM_PIXELS = IMAGE_SIDE * IMAGE_SIDE
NUM_CLASSES = 10
PIXEL_COLUMNS = [f"pixel{i}" for i in range(NUM_PIXELS)]
# What the real competition ships; other counts are allowed (subsets, stand-ins) but reported.
COMPETITION_ROWS = {TRAIN: 42_000, TEST: 28_000}
CACHE_VERSION = 2  # 2: the manifest holds every array's sha256, checked on every load
ARRAYS = ("train_images", "train_labels", "test_images")

Log = Callable[[str], None]


@dataclass(frozen=True)
class Dataset:
    """The cached competition data: images are uint8 (N, 28, 28), labels uint8 (N,)."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    train_sha256: str
    test_sha256: str
    # sha256 of each cached array file, as verified when loaded: what a run was actually trained on.
    arrays_sha256: dict[str, str] = dataclasses.field(default_factory=dict)


# ----------------------------------------------------------------------------------------------
# Public surface


def fetch(source: Path | None = None, force: bool = False, log: Log = print) -> dict:
    """Puts validated train/test CSVs and their cache into `data/digit-recognizer/`; returns the summary.

    One fetch at a time per workspace: a second waits for the first, then finds the data in place."""
    target = paths.data_dir()
    _ensure_writable(target.parent)
    with locks.hold(_lock_path(target), f"{target}", wait=True, log=log):
        return _fetch(target, source, force, log)


def _fetch(target: Path, source: Path | None, force: bool, log: Log) -> dict:
    if not force:
        summary = _cached_summary(target, log, check_csvs=True)
        if summary is None and _has_csvs(target) and source is None:
            # The CSVs are there but changed, never cached, or the cache is damaged: revalidate them and
            # rebuild the cache, no download needed.
            summary = _build_cache(target)
        if summary is not None:
            log(f"Data already in {target} (validated); nothing to fetch. Use --force to fetch again.")
            _log_summary(summary, log)
            return summary

    staging = target.parent / f".{target.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        if source is not None:
            origin = _from_local(Path(source), staging)
        elif paths.in_kaggle_notebook():
            origin = _from_notebook_input(staging)
        else:
            origin = _from_api(staging, log)
        summary = _build_cache(staging, origin=origin)
        _swap_into_place(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log(f"Fetched from {origin} into {target}.")
    _log_summary(summary, log)
    return summary


def load(data_dir: Path | None = None, log: Log = print) -> Dataset:
    """Loads the cached arrays (well under a second), each checked against the sha256 recorded when it
    was written; rebuilds the cache from the CSVs if a CSV changed or an array is damaged."""
    data_dir = Path(data_dir) if data_dir is not None else paths.data_dir()
    summary = _cached_summary(data_dir, log)
    if summary is None:
        if not _has_csvs(data_dir):
            raise UserError(
                f"no competition data in {data_dir}: run `kaggle-mnist fetch` first "
                "(or `kaggle-mnist fetch --from digit-recognizer.zip` with a local copy)"
            )
        with locks.hold(_lock_path(data_dir), f"{data_dir}", wait=True, log=log):
            # Another process may have rebuilt it while this one waited.
            summary = _cached_summary(data_dir, log=lambda _: None) or _build_cache(data_dir)
    cache = data_dir / "cache"
    arrays = {name: np.load(cache / f"{name}.npy") for name in ARRAYS}
    return Dataset(
        **arrays,
        train_sha256=summary["files"][TRAIN]["sha256"],
        test_sha256=summary["files"][TEST]["sha256"],
        arrays_sha256={name: summary["arrays"][name] for name in ARRAYS},
    )


def read_digits_csv(path: Path, has_labels: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Reads and validates one competition CSV; returns uint8 images (N, 28, 28) and labels or None.

    Raises UserError naming the file, the line and what is wrong with it.
    """
    path = Path(path)
    name = path.name
    expected = (["label"] if has_labels else []) + PIXEL_COLUMNS
    _check_header(path, expected, has_labels)
    try:
        with warnings.catch_warnings():
            # index_col=False stops pandas turning an over-long first row into an index; it then only
            # warns and drops the extra values, so that warning is made an error.
            warnings.simplefilter("error", pd.errors.ParserWarning)
            frame = pd.read_csv(path, skip_blank_lines=True, low_memory=False, index_col=False)
    except pd.errors.ParserWarning:
        raise UserError(f"{name} is malformed (line 2 has more than {len(expected)} values)") from None
    except pd.errors.ParserError as exc:
        # pandas: "Error tokenizing data. C error: Expected 785 fields in line 7, saw 790"
        raise UserError(
            f"{name} is malformed ({_short(exc)}); every row needs {len(expected)} values"
        ) from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"{name} could not be read as CSV ({_short(exc)})") from None
    if len(frame) == 0:
        raise UserError(f"{name} has a header but no rows: the file is incomplete; fetch again with --force")

    _check_numeric(frame, name)
    _check_missing(frame, name, len(expected))
    values = frame.to_numpy()
    if not np.issubdtype(values.dtype, np.integer):
        # Whole numbers written as floats (`0.0`, what pandas' to_csv writes for a float frame) are fine.
        fractional = np.argwhere(values != np.floor(values))
        if len(fractional):
            row, col = fractional[0]
            raise UserError(
                f"{name} line {row + 2}, column {frame.columns[col]}: {values[row, col].item()} is not an integer"
            )
    pixels = values[:, 1:] if has_labels else values
    _check_range(pixels, name, frame.columns[int(has_labels) :], 0, 255, "pixels must be integers 0-255")
    labels = None
    if has_labels:
        labels = values[:, 0]
        _check_range(labels[:, None], name, ["label"], 0, NUM_CLASSES - 1, "labels must be digits 0-9")
        labels = labels.astype(np.uint8)
    images = pixels.astype(np.uint8).reshape(-1, IMAGE_SIDE, IMAGE_SIDE)
    return images, labels


# ----------------------------------------------------------------------------------------------
# Sources


def _from_local(source: Path, staging: Path) -> str:
    if not source.exists():
        raise UserError(
            f"--from {source}: no such file or folder; give the competition zip or a folder of CSVs"
        )
    if source.is_dir():
        _copy_from_folder(source, staging)
    else:
        _extract_zip(source, staging)
    return str(source)


def _from_notebook_input(staging: Path) -> str:
    inputs = paths.kaggle_root() / "input"
    candidates = [inputs / COMPETITION, inputs / "competitions" / COMPETITION]
    folder = next((c for c in candidates if (c / TRAIN).is_file()), None)
    if folder is None and inputs.is_dir():
        # Datasets attached under another name: take the shallowest folder holding train.csv and test.csv.
        found = sorted(
            (p.parent for p in inputs.rglob(TRAIN) if (p.parent / TEST).is_file()),
            key=lambda p: len(p.parts),
        )
        folder = found[0] if found else None
    if folder is None:
        raise UserError(
            f"running in a Kaggle notebook but no {TRAIN} under {inputs}: add the competition's data "
            "('+ Add Input' > Competitions > Digit Recognizer), or pass --from PATH"
        )
    _copy_from_folder(folder, staging)
    return str(folder)


def _from_api(staging: Path, log: Log) -> str:
    from competition.kaggle import api as kaggle_api  # lazy: importing the kaggle client has side effects

    downloads = paths.data_dir().parent / ".downloads"
    _ensure_writable(downloads)
    log(f"Downloading {COMPETITION} through the Kaggle API ...")
    archive = kaggle_api.download_competition(downloads)
    _extract_zip(archive, staging)
    archive.unlink(missing_ok=True)
    return "the Kaggle API"


# How a folder may hold each CSV: as it is, or as the kaggle client downloads one file
# (`kaggle competitions download -c digit-recognizer -f train.csv` leaves train.csv.zip), or gzip'd.
PACKED = ("", ".zip", ".gz")


def _copy_from_folder(folder: Path, staging: Path) -> None:
    found = {name: _packed_csv(folder, name) for name in (*NEEDED, SAMPLE)}
    missing = [n for n in NEEDED if found[n] is None]
    if missing:
        raise UserError(
            f"{folder} has no {' or '.join(missing)} (nor {missing[0]}.zip or {missing[0]}.gz): point --from "
            "at the folder holding the CSVs"
        )
    for name, path in found.items():
        if path is None:
            continue
        if path.suffix == ".zip":
            _extract_zip(path, staging, names=(name,), optional=())
        elif path.suffix == ".gz":
            _gunzip(path, staging / name)
        else:
            shutil.copyfile(path, staging / name)


def _packed_csv(folder: Path, name: str) -> Path | None:
    return next((folder / f"{name}{suffix}" for suffix in PACKED if (folder / f"{name}{suffix}").is_file()), None)


def _gunzip(path: Path, target: Path) -> None:
    try:
        with gzip.open(path) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise UserError(f"{path} is damaged or not gzip ({_short(exc)}): download it again") from None


def _extract_zip(
    archive: Path, staging: Path, names: tuple[str, ...] = NEEDED, optional: tuple[str, ...] = (SAMPLE,)
) -> None:
    """The competition's CSVs from `archive` (wherever they sit in it) into `staging`: the `names` it
    must hold (the competition zip: train.csv and test.csv; a one-file download: that file), and the
    `optional` ones it may."""
    size = archive.stat().st_size
    if size == 0:
        raise UserError(f"{archive} is empty (0 bytes): the download failed; fetch again with --force")
    if not zipfile.is_zipfile(archive):
        raise UserError(
            f"{archive} is not a zip archive: give the competition zip from Kaggle or a folder of CSVs"
        )
    root = staging.resolve()
    try:
        with zipfile.ZipFile(archive) as zf:
            members = zf.infolist()
            for info in members:
                # Zip-slip guard: reject the whole archive if any member would land outside the folder.
                name = info.filename
                if (
                    os.path.isabs(name)
                    or ".." in Path(name).parts
                    or not (root / name).resolve().is_relative_to(root)
                ):
                    raise UserError(
                        f"{archive} holds '{name}', whose path escapes the folder it would be unpacked into; "
                        "refusing to extract it: download the competition zip again from Kaggle"
                    )
            by_name = {Path(i.filename).name: i for i in members if not i.is_dir()}
            missing = [n for n in names if n not in by_name]
            if missing:
                raise UserError(f"{archive} has no {' or '.join(missing)}: is it the digit-recognizer zip?")
            for name in (*names, *optional):
                if name in by_name:
                    with zf.open(by_name[name]) as src, open(staging / name, "wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
    except (zipfile.BadZipFile, EOFError, zipfile.LargeZipFile) as exc:
        raise UserError(f"{archive} is damaged ({_short(exc)}): download it again with --force") from None


# ----------------------------------------------------------------------------------------------
# Validation and cache


def _build_cache(folder: Path, origin: str | None = None) -> dict:
    """Validates the CSVs in `folder` and writes `cache/` (manifest last, so a manifest means complete)."""
    train_images, train_labels = read_digits_csv(folder / TRAIN, has_labels=True)
    test_images, _ = read_digits_csv(folder / TEST, has_labels=False)
    if (folder / SAMPLE).is_file():
        _check_sample(folder / SAMPLE)
    cache = folder / "cache"
    with contextlib.suppress(FileNotFoundError):
        (cache / "manifest.json").unlink()
    arrays = {"train_images": train_images, "train_labels": train_labels, "test_images": test_images}
    for name, array in arrays.items():
        storage.save_npy(cache / f"{name}.npy", array)
    counts = np.bincount(train_labels, minlength=NUM_CLASSES)
    summary = {
        "cache_version": CACHE_VERSION,
        "files": {name: _file_stamp(folder / name) for name in NEEDED},
        "arrays": {name: storage.sha256_file(cache / f"{name}.npy") for name in ARRAYS},
        "rows": {TRAIN: int(len(train_labels)), TEST: int(len(test_images))},
        "class_counts": {str(k): int(v) for k, v in enumerate(counts)},
    }
    if origin is not None:
        summary["origin"] = origin
    storage.write_json(cache / "manifest.json", summary)
    return summary


def _cached_summary(folder: Path, log: Log = print, check_csvs: bool = False) -> dict | None:
    """The manifest if the cache is intact and matches the CSVs on disk, else None.

    The CSVs are matched by size and modification time (or, with `check_csvs`, by sha256 too); every
    cached array by its sha256, so an array overwritten, truncated or edited in place is never used."""
    manifest = folder / "cache" / "manifest.json"
    try:
        summary = storage.read_json(manifest)
        if summary.get("cache_version") != CACHE_VERSION:
            return None
        for name in NEEDED:
            stat = (folder / name).stat()
            stamp = summary["files"][name]
            if stat.st_size != stamp["size"] or stat.st_mtime_ns != stamp["mtime_ns"]:
                return None
            if check_csvs and storage.sha256_file(folder / name) != stamp["sha256"]:
                log(f"{folder / name} changed since it was validated: validating it again")
                return None
        for name in ARRAYS:
            array = folder / "cache" / f"{name}.npy"
            if not array.is_file() or storage.sha256_file(array) != summary["arrays"][name]:
                log(f"{array} is damaged (its checksum does not match): rebuilding the cache from the CSVs")
                return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return summary


def _lock_path(data_dir: Path) -> Path:
    return data_dir.parent / f".lock-{data_dir.name}"


def _file_stamp(path: Path) -> dict:
    stat = path.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": storage.sha256_file(path)}


def _has_csvs(folder: Path) -> bool:
    return all((folder / n).is_file() for n in NEEDED)


def _check_header(path: Path, expected: list[str], has_labels: bool) -> None:
    name = path.name
    with open(path, "rb") as handle:
        first = handle.readline()
    if not first.strip():
        raise UserError(f"{name} is empty: the file is incomplete; fetch again with --force")
    header = [c.strip().strip('"') for c in first.decode("utf-8-sig", errors="replace").strip().split(",")]
    if header == expected:
        return
    if not has_labels and header == ["label"] + PIXEL_COLUMNS:
        raise UserError(
            f"{name} has a 'label' column: the competition's {TEST} has none (this looks like {TRAIN} "
            f"or a copy with leaked labels); use the {TEST} from Kaggle"
        )
    if has_labels and header == PIXEL_COLUMNS:
        raise UserError(f"{name} has no 'label' column: this looks like {TEST}; use the {TRAIN} from Kaggle")
    first_bad = next(
        (i for i, (a, b) in enumerate(zip(header, expected, strict=False)) if a != b),
        min(len(header), len(expected)),
    )
    got = header[first_bad] if first_bad < len(header) else "(nothing)"
    want = expected[first_bad] if first_bad < len(expected) else "(nothing)"
    raise UserError(
        f"{name} has an unexpected header: column {first_bad + 1} is '{got}', expected '{want}' "
        f"({len(header)} columns, expected {len(expected)}: {expected[0]},{expected[1]},...,{expected[-1]})"
    )


def _check_numeric(frame: pd.DataFrame, name: str) -> None:
    bad_columns = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    if not bad_columns:
        return
    column = bad_columns[0]
    values = frame[column]
    bad = values.notna() & pd.to_numeric(values, errors="coerce").isna()
    row = int(np.flatnonzero(bad.to_numpy())[0])
    raise UserError(f"{name} line {row + 2}, column {column}: {values.iloc[row]!r} is not a number")


def _check_missing(frame: pd.DataFrame, name: str, width: int) -> None:
    missing = frame.isna().to_numpy()
    if not missing.any():
        return
    row = int(np.flatnonzero(missing.any(axis=1))[0])
    holes = np.flatnonzero(missing[row])
    if holes[-1] == width - 1 and len(holes) == width - holes[0]:
        # Every value from some column to the end is absent: a short row (or trailing empty values).
        raise UserError(f"{name} line {row + 2} is short: {holes[0]} values, expected {width}")
    raise UserError(f"{name} line {row + 2}, column {frame.columns[holes[0]]}: missing value")


def _check_range(values: np.ndarray, name: str, columns, low: int, high: int, rule: str) -> None:
    outside = (values < low) | (values > high)
    if outside.any():
        row, col = np.argwhere(outside)[0]
        raise UserError(
            f"{name} line {row + 2}, column {columns[col]}: {values[row, col].item()} is out of range; {rule}"
        )


def _check_sample(path: Path) -> None:
    with open(path, "rb") as handle:
        header = handle.readline().decode("utf-8-sig", errors="replace").strip()
    if header.replace('"', "") != "ImageId,Label":
        raise UserError(f"{path.name} has header '{header}', expected 'ImageId,Label'")


# ----------------------------------------------------------------------------------------------
# Filesystem


def _ensure_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UserError(
            f"cannot write to {folder} ({exc.strerror or exc}): run kaggle-mnist from a folder you can write to "
            "(in a Kaggle notebook, /kaggle/working)"
        ) from None


def _swap_into_place(staging: Path, target: Path) -> None:
    old = target.parent / f".{target.name}.old-{os.getpid()}"
    if target.exists():
        os.replace(target, old)
    os.replace(staging, target)
    shutil.rmtree(old, ignore_errors=True)


def _log_summary(summary: dict, log: Log) -> None:
    rows = summary["rows"]
    for name in NEEDED:
        note = (
            ""
            if rows[name] == COMPETITION_ROWS[name]
            else f" (the competition has {COMPETITION_ROWS[name]:,})"
        )
        log(f"  {name}: {rows[name]:,} rows{note}")
    counts = ", ".join(f"{k}: {v}" for k, v in summary["class_counts"].items())
    log(f"  class counts: {counts}")


def _short(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[-1][:200] if str(exc).strip() else type(exc).__name__
