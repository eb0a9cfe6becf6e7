"""`kaggle-mnist predict` and `kaggle-mnist submit`: submission.csv, its validation, the upload and the
wait for its score (each recorded in the ledger, ledger.py).

A file is validated before it is written into place and again before any upload, so an invalid file
never reaches Kaggle and never costs one of the day's submissions.
"""

from __future__ import annotations

import csv
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

from competition import paths, storage
from competition.errors import UserError
from competition.kaggle.ledger import ledger_path, record

HEADER = ["ImageId", "Label"]



# ----------------------------------------------------------------------------------------------
# Pure functions


def submission_frame(probabilities: np.ndarray) -> pd.DataFrame:
    """ImageId is 1-based in test.csv order; Label is the most probable digit."""
    labels = np.argmax(probabilities, axis=1).astype(int)
    return pd.DataFrame({"ImageId": np.arange(1, len(labels) + 1), "Label": labels})


def validation_errors(path: Path, expected_rows: int | None) -> list[str]:
    """Everything wrong with a submission file, in words; empty when it is valid.

    Accepts what Kaggle accepts: a UTF-8 byte-order mark (Excel writes one) and rows in any order, as
    long as the ImageIds are exactly 1..N once each.
    """
    path = Path(path)
    if path.is_dir():
        return [f"{path} is a folder, not a CSV file"]
    if not path.is_file():
        return [f"{path} does not exist"]
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        return [f"{path} cannot be read as a UTF-8 CSV file ({type(exc).__name__}: {exc})"]
    if not rows or [c.strip() for c in rows[0]] != HEADER:
        return [f"the header must be 'ImageId,Label', not {','.join(rows[0]) if rows else '(empty file)'!r}"]
    body = [r for r in rows[1:] if r]
    errors = []
    if expected_rows is not None and len(body) != expected_rows:
        errors.append(f"it has {len(body):,} rows, test.csv has {expected_rows:,}")
    seen: set[int] = set()
    for line, row in enumerate(body, start=2):
        if len(row) != 2:
            errors.append(f"line {line} has {len(row)} values, expected 2")
            break
        image_id, label = row[0].strip(), row[1].strip()
        # ASCII digits only: str.isdigit() also takes '³' or '٣', which int() or Kaggle then refuse.
        if not _ASCII_NUMBER.fullmatch(image_id) or int(image_id) == 0:
            errors.append(f"line {line}: ImageId {image_id!r} is not a positive integer")
            break
        if not _ASCII_DIGIT.fullmatch(label):
            errors.append(f"line {line}: Label {label!r} is not a digit 0-9")
            break
        if int(image_id) in seen:
            errors.append(f"line {line}: ImageId {int(image_id)} appears twice")
            break
        seen.add(int(image_id))
    if not errors:
        beyond = sorted(i for i in seen if i > len(body))
        if beyond:
            errors.append(
                f"ImageId {beyond[0]} is beyond the {len(body):,} rows: ImageIds must be 1 to "
                f"{len(body):,}, one per test.csv row"
            )
    return errors


_ASCII_NUMBER = re.compile(r"[0-9]+")
_ASCII_DIGIT = re.compile(r"[0-9]")


def check_file(path: Path, expected_rows: int | None) -> None:
    errors = validation_errors(path, expected_rows)
    if errors:
        raise UserError(f"{path} is not a valid submission: {'; '.join(errors)}. Nothing was uploaded")


# ----------------------------------------------------------------------------------------------
# Writing


def write(probabilities: np.ndarray, run_id: str, name: str | None = None) -> Path:
    """Writes submissions/<name>.csv and copies it to the workspace's submission.csv; returns the first."""
    frame = submission_frame(probabilities)
    target = paths.submissions_dir() / f"{name or run_id}.csv"
    with storage.atomic_path(target) as tmp:
        frame.to_csv(tmp, index=False)
        check_file(tmp, len(probabilities))
    storage.write_atomic(paths.workspace() / "submission.csv", lambda tmp: shutil.copyfile(target, tmp))
    return target


def changed_predictions(probabilities: np.ndarray, reference: np.ndarray) -> int:
    return int(np.sum(np.argmax(probabilities, axis=1) != np.argmax(reference, axis=1)))


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


# ----------------------------------------------------------------------------------------------
# Submitting


def submit(
    file: Path | None = None,
    message: str | None = None,
    wait: bool = False,
    log=print,
    poll_seconds: float = 10.0,
    max_wait_seconds: float = 900.0,
) -> dict:
    """Validates, checks today's allowance, uploads, records in the ledger, optionally waits for the score."""
    from competition.kaggle import api as kaggle_api

    path = Path(file) if file is not None else paths.workspace() / "submission.csv"
    check_file(path, expected_rows())
    run_id, cv, expected = run_of(path)
    message = message or (f"kaggle-mnist {run_id} CV {cv:.5f}" if run_id else f"kaggle-mnist {path.name}")

    limits = _submission_limits(log)
    if limits is not None and getattr(limits, "num_allowed_now", 1) == 0:
        raise UserError(
            f"no submissions left today ({getattr(limits, 'num_today', '?')} made); Kaggle's daily limit resets "
            "at 00:00 UTC. Nothing was uploaded"
        )
    response = kaggle_api.submit(path, message)
    ref = str(getattr(response, "ref", "") or "")
    entry = {
        "time": now(),
        "run_id": run_id or "",
        "file": str(path),
        "sha256": storage.sha256_file(path),
        "cv_accuracy": f"{cv:.5f}" if cv is not None else "",
        "expected_accuracy": f"{expected['low']:.5f}-{expected['high']:.5f}" if expected else "",
        "message": message,
        "ref": ref,
        "status": "PENDING",
    }
    record(entry)
    log(f"Submitted {path} as '{message}' (ref {ref or 'unknown'}).")
    if wait:
        try:
            entry.update(_wait_for_score(entry, log, poll_seconds, max_wait_seconds))
        except UserError as exc:
            if "could not score" in exc.message:
                raise
            # The upload is done and counted: say so, or the user submits the same file twice.
            raise UserError(
                f"the file was submitted (ref {ref or 'unknown'}, recorded in {ledger_path()}) but its "
                f"score could not be fetched: {exc.message}. Do not submit it again: "
                "`kaggle-mnist submissions` shows its score later"
            ) from None
    return entry


def _submission_limits(log):
    """Today's allowance, or None when Kaggle cannot tell us: the check only saves a wasted upload, so
    its failure does not block one (Kaggle refuses an upload over the limit itself). Credentials and
    rules problems are real, though: the upload would fail the same way."""
    from competition.kaggle import api as kaggle_api

    # Signing in first, outside the warning: without a client (no or bad credentials) the upload fails
    # the same way, and the user needs to read that once, as the error it is.
    kaggle_api.client()
    try:
        return kaggle_api.submission_limits()
    except UserError as exc:
        if exc.status in (401, 403):
            raise
        log(f"warning: could not check today's submission count ({exc.message}); submitting anyway")
        return None


def _wait_for_score(entry: dict, log, poll_seconds: float, max_wait_seconds: float) -> dict:
    from competition.kaggle import api as kaggle_api

    ref, message = entry["ref"], entry["message"]
    # Without a ref the ledger row is found again by its time and file, so it is updated, not doubled.
    key = {"ref": ref} if ref else {"time": entry["time"], "sha256": entry["sha256"]}
    deadline = time.monotonic() + max_wait_seconds
    while True:
        mine = [
            s
            for s in kaggle_api.submissions()
            if kaggle_api.submission_ref(s) == ref or (not ref and kaggle_api.field(s, "description") == message)
        ]
        status = kaggle_api.status_name(kaggle_api.field(mine[0], "status")) if mine else "PENDING"
        if status in ("COMPLETE", "ERROR"):
            score = str(kaggle_api.field(mine[0], "public_score") or "")
            found = {"ref": ref or kaggle_api.submission_ref(mine[0]), "status": status, "public_score": score}
            record(found, key=key)
            if status == "ERROR":
                reason = kaggle_api.field(mine[0], "error_description") or "no reason given"
                raise UserError(f"Kaggle could not score the submission (ref {found['ref']}): {reason}")
            log(f"Public score: {score}")
            return found
        if time.monotonic() > deadline:
            raise UserError(
                f"the submission (ref {ref}) is still {status} after {max_wait_seconds:.0f} s: "
                "`kaggle-mnist submissions` shows its score once Kaggle has it"
            )
        time.sleep(poll_seconds)


def expected_rows() -> int:
    """Rows the submission must have: the local test.csv's, or without local data the competition's
    (Kaggle knows its test has 28,000 rows, and a file of any other length wastes a daily submission)."""
    from competition import data

    try:
        return len(data.load().test_images)
    except UserError:
        return data.COMPETITION_ROWS[data.TEST]


def run_of(path: Path) -> tuple[str | None, float | None, dict | None]:
    """The run a submission file came from, found by content among submissions/<run>.csv files: its
    id, the out-of-fold accuracy of the blend written, and the expected score predict gave it."""
    digest = storage.sha256_file(path)
    for candidate in sorted(paths.submissions_dir().glob("*.csv")):
        if candidate.name != "ledger.csv" and storage.sha256_file(candidate) == digest:
            about = candidate.with_suffix(".json")  # written by predict: the blend's own OOF accuracy
            if about.is_file():
                facts = storage.read_json(about)
                return facts["run_id"], float(facts["oof_accuracy"]), facts.get("expected_submission")
            run_id = candidate.stem
            for suffix in ("-oof-tta", "-oof", "-tta"):
                run_id = run_id.removesuffix(suffix)
            metrics = paths.ensembles_dir() / run_id / "metrics.json"
            if metrics.is_file():
                facts = storage.read_json(metrics)
                return run_id, float(facts["cv_accuracy"]), facts.get("expected_submission")
    return None, None, None
