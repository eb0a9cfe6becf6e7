"""submissions/ledger.csv: every submission with its run, CV and expected score, and the public score
Kaggle gave it (`kaggle-mnist submissions`). Rewritten whole under a lock, so two submits lose no row;
a ledger written before a column existed reads with that column empty."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from competition import locks, paths, storage
from competition.scoring.expected import PUBLIC_ROWS, public_noise

LEDGER_COLUMNS = [
    "time",
    "run_id",
    "file",
    "sha256",
    "cv_accuracy",
    "expected_accuracy",  # what predict expected on the whole test set: "low-high" (about 95%)
    "message",
    "ref",
    "status",
    "public_score",
]


def ledger_path() -> Path:
    return paths.submissions_dir() / "ledger.csv"


def read_ledger() -> pd.DataFrame:
    path = ledger_path()
    if not path.is_file():
        return pd.DataFrame(columns=LEDGER_COLUMNS)
    # A ledger written before a column existed reads with that column empty.
    return pd.read_csv(path, dtype=str, keep_default_na=False).reindex(columns=LEDGER_COLUMNS, fill_value="")


def record(entry: dict, key: dict | None = None) -> None:
    """Adds or updates one ledger row, found by `key` (column values; default: the entry's submission
    ref); the whole file is rewritten atomically, under a lock so two submits cannot lose a row."""
    with locks.hold(ledger_path().with_name(".ledger.lock"), "the submissions ledger", wait=True):
        ledger = read_ledger()
        row = {
            column: "" if entry.get(column) is None else str(entry.get(column, ""))
            for column in LEDGER_COLUMNS
        }
        key = key if key is not None else ({"ref": row["ref"]} if row["ref"] else {})
        match = (
            ledger.index[np.logical_and.reduce([ledger[c] == str(v) for c, v in key.items()])] if key else []
        )
        if len(match):
            for column, value in row.items():
                if value != "":
                    ledger.loc[match[0], column] = value
        else:
            ledger = pd.concat([ledger, pd.DataFrame([row])], ignore_index=True)
        storage.write_atomic(ledger_path(), lambda tmp: ledger.to_csv(tmp, index=False))


def show_submissions(log=print) -> pd.DataFrame:
    """The ledger beside what the API says now, so CV and leaderboard sit side by side, shown with how
    far apart two public scores must be to be told apart; returns it."""
    ledger = _ledger_with_scores()
    if ledger.empty:
        log("No submissions recorded yet: `kaggle-mnist submit` records them in submissions/ledger.csv.")
        return ledger
    columns = ["time", "run_id", "cv_accuracy", "expected_accuracy", "public_score", "status", "ref", "message"]
    log(ledger[columns].to_string(index=False))
    scores = [float(s) for s in ledger["public_score"] if s.replace(".", "", 1).isdigit()]
    if scores:
        noise = public_noise(max(scores))
        log(
            f"The public score is measured on about {PUBLIC_ROWS:,} test rows: one standard error is "
            f"{noise:.2%} at {max(scores):.2%}, so scores closer than about {2 * noise:.2%} are not told apart."
        )
    return ledger


def _ledger_with_scores() -> pd.DataFrame:
    """The ledger, each row's status and public score refreshed from the API (and recorded)."""
    from competition.kaggle import api as kaggle_api

    ledger = read_ledger()
    if ledger.empty:  # nothing to match: no need for credentials or the network
        return ledger
    by_ref = {kaggle_api.submission_ref(s): s for s in kaggle_api.submissions()}
    for index, row in ledger.iterrows():
        remote = by_ref.get(row["ref"])
        if remote is not None:
            status = kaggle_api.status_name(kaggle_api.field(remote, "status"))
            score = str(kaggle_api.field(remote, "public_score") or "")
            if status != row["status"] or score != row["public_score"]:
                ledger.loc[index, ["status", "public_score"]] = [status, score]
                record({"ref": row["ref"], "status": status, "public_score": score})
    return ledger
