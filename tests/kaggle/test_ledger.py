"""The submissions ledger: rows added and updated, a submission without a ref, an empty ledger."""

from __future__ import annotations

import pandas as pd

from competition.kaggle import ledger
from tests import digits
from tests.conftest import kaggle_env, run_cli
from tests.fake_kaggle import FakeKaggle, KaggleState
from tests.kaggle.conftest import N_TEST, fetched, write_submission


def test_submissions_with_an_empty_ledger_needs_no_credentials(workspace):
    shown = run_cli("submissions", cwd=workspace)
    assert shown.returncode == 0, shown.output
    assert "No submissions recorded yet" in shown.stdout


def test_a_submission_without_a_ref_is_one_ledger_row(workspace, tmp_path, kaggle):
    env = fetched(workspace, tmp_path, kaggle)
    kaggle.state.no_ref = True
    write_submission(workspace, [1] * N_TEST)
    result = run_cli("submit", "--wait", "--message", "no ref", cwd=workspace, env=env)
    assert result.returncode == 0, result.output
    ledger = pd.read_csv(workspace / "submissions" / "ledger.csv", dtype=str, keep_default_na=False)
    assert len(ledger) == 1, ledger
    assert ledger.loc[0, "status"] == "COMPLETE" and ledger.loc[0, "ref"] == "1000"


def test_ledger_adds_then_updates_by_ref(workspace):
    ledger.record({"time": "t", "run_id": "r", "ref": "7", "status": "PENDING"})
    ledger.record({"ref": "7", "status": "COMPLETE", "public_score": "0.99"})
    ledger.record({"time": "t2", "run_id": "r2", "ref": "8", "status": "PENDING"})
    table = ledger.read_ledger()
    assert table["ref"].tolist() == ["7", "8"]
    row = table.iloc[0]
    assert (row["status"], row["public_score"], row["run_id"]) == ("COMPLETE", "0.99", "r")


def test_ledger_update_by_time_and_file_when_there_is_no_ref(workspace):
    entry = {"time": "t", "run_id": "r", "sha256": "abc", "ref": "", "status": "PENDING"}
    ledger.record(entry)
    ledger.record({"status": "COMPLETE", "public_score": "0.98"}, key={"time": "t", "sha256": "abc"})
    table = ledger.read_ledger()
    assert len(table) == 1
    assert (table.loc[0, "status"], table.loc[0, "public_score"]) == ("COMPLETE", "0.98")


def test_a_ledger_saved_by_an_earlier_version_is_shown_and_updated(saved_before, tmp_path):
    from tests.conftest import SAVED_LOCAL_RUN

    table = ledger.read_ledger()
    assert table["run_id"].tolist() == [SAVED_LOCAL_RUN] and table["public_score"].tolist() == ["0.15000"]
    archive, test_labels = digits.competition_zip(300, 40)
    with FakeKaggle(KaggleState(archive=archive, labels=test_labels.tolist())) as fake:
        shown = run_cli("submissions", cwd=saved_before, env=kaggle_env(tmp_path, fake.proxy))
    assert shown.returncode == 0 and SAVED_LOCAL_RUN in shown.stdout and "0.15000" in shown.stdout, shown.output
    ledger.record({"ref": "1000", "status": "COMPLETE", "public_score": "0.16000"})
    assert ledger.read_ledger()["public_score"].tolist() == ["0.16000"]
