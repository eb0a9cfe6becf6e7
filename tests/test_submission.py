"""submission.csv: the frame, validation that refuses bad files, the ledger."""

from __future__ import annotations

import numpy as np
import pytest

from competition.errors import UserError
from competition.kaggle import ledger, submission


def probs(labels):
    out = np.full((len(labels), 10), 0.01)
    out[np.arange(len(labels)), labels] = 0.91
    return out


def test_frame_is_one_based_in_test_order():
    frame = submission.submission_frame(probs([3, 1, 4]))
    assert list(frame.columns) == ["ImageId", "Label"]
    assert frame["ImageId"].tolist() == [1, 2, 3] and frame["Label"].tolist() == [3, 1, 4]


def test_write_validates_and_copies_to_workspace(workspace):
    path = submission.write(probs([0, 9, 5]), "run-1")
    assert path == workspace / "submissions" / "run-1.csv"
    assert (workspace / "submission.csv").read_text() == "ImageId,Label\n1,0\n2,9\n3,5\n"
    assert submission.validation_errors(path, 3) == []


@pytest.mark.parametrize(
    "body, needle",
    [
        ("ImageId,Label\n1,0\n2,12\n3,1\n", "Label '12' is not a digit"),
        ("ImageId,Label\n1,0\n1,2\n3,1\n", "appears twice"),
        ("ImageId,Label\n1,0\n2,2\n", "2 rows, test.csv has 3"),
        ("Id,Label\n1,0\n2,2\n3,1\n", "header must be 'ImageId,Label'"),
        ("ImageId,Label\n0,0\n1,2\n2,1\n", "ImageId '0' is not a positive integer"),
        ("ImageId,Label\n1,0\n2,2\n4,1\n", "ImageId 4 is beyond the 3 rows"),
        ("ImageId,Label\n1,0\n2,\u00b3\n3,1\n", "Label '\u00b3' is not a digit"),
        ("ImageId,Label\n1,0\n\u0662,2\n3,1\n", "ImageId '\u0662' is not a positive integer"),
        ("ImageId,Label\n1,0\n2,x\n3,1\n", "Label 'x'"),
        ("ImageId,Label\n1,0,5\n2,1\n3,1\n", "3 values"),
        ("", "header"),
    ],
)
def test_invalid_files_are_refused(tmp_path, body, needle):
    path = tmp_path / "sub.csv"
    path.write_text(body, encoding="utf-8")
    with pytest.raises(UserError) as info:
        submission.check_file(path, 3)
    assert needle in info.value.message and "Nothing was uploaded" in info.value.message


def test_ledger_adds_then_updates_by_ref(workspace):
    ledger.record({"time": "t", "run_id": "r", "ref": "7", "status": "PENDING"})
    ledger.record({"ref": "7", "status": "COMPLETE", "public_score": "0.99"})
    ledger.record({"time": "t2", "run_id": "r2", "ref": "8", "status": "PENDING"})
    table = ledger.read_ledger()
    assert table["ref"].tolist() == ["7", "8"]
    row = table.iloc[0]
    assert (row["status"], row["public_score"], row["run_id"]) == ("COMPLETE", "0.99", "r")


@pytest.mark.parametrize(
    "body",
    [
        "\ufeffImageId,Label\n1,0\n2,2\n3,1\n",  # Excel's UTF-8 byte-order mark
        "ImageId,Label\n3,1\n1,0\n2,2\n",  # any order, as Kaggle scores by ImageId
        "ImageId,Label\r\n1,0\r\n2,2\r\n3,1\r\n",  # Windows line ends
    ],
)
def test_what_kaggle_accepts_is_accepted(tmp_path, body):
    path = tmp_path / "sub.csv"
    path.write_text(body, encoding="utf-8", newline="")
    assert submission.validation_errors(path, 3) == []


def test_a_folder_or_missing_file_is_named_as_such(tmp_path):
    assert submission.validation_errors(tmp_path, 3) == [f"{tmp_path} is a folder, not a CSV file"]
    assert submission.validation_errors(tmp_path / "nope.csv", 3) == [
        f"{tmp_path / 'nope.csv'} does not exist"
    ]


def test_without_local_data_the_competition_test_size_is_required(workspace):
    # No data/ here: a file one row short of Kaggle's 28,000 would waste a daily submission.
    path = workspace / "submission.csv"
    path.write_text("ImageId,Label\n" + "".join(f"{i},1\n" for i in range(1, 28_000)))
    with pytest.raises(UserError, match="27,999 rows, test.csv has 28,000"):
        submission.check_file(path, submission.expected_rows())


def test_ledger_update_by_time_and_file_when_there_is_no_ref(workspace):
    entry = {"time": "t", "run_id": "r", "sha256": "abc", "ref": "", "status": "PENDING"}
    ledger.record(entry)
    ledger.record({"status": "COMPLETE", "public_score": "0.98"}, key={"time": "t", "sha256": "abc"})
    table = ledger.read_ledger()
    assert len(table) == 1
    assert (table.loc[0, "status"], table.loc[0, "public_score"]) == ("COMPLETE", "0.98")
