"""Submission files, their checks, and `submit` (and `run --submit`) through the real client against the
fake Kaggle: invalid files never uploaded, limits, errors."""

from __future__ import annotations

from importlib.metadata import version

import numpy as np
import pandas as pd
import pytest

from competition.errors import UserError
from competition.kaggle import submission
from competition.scoring import predict as predicting
from tests.conftest import assert_clean_failure, kaggle_env, run_cli
from tests.kaggle.conftest import N_TEST, fetched, write_submission

# kaggle >= 2.2.4 can tell today's submission count before uploading; Kaggle's image ships 2.0.x.
LIMITS_CALL = tuple(int(part) for part in version("kaggle").split(".")[:3]) >= (2, 2, 4)


def probs(labels):
    out = np.full((len(labels), 10), 0.01)
    out[np.arange(len(labels)), labels] = 0.91
    return out


@pytest.mark.slow
def test_run_end_to_end_submits_and_records_the_score(workspace, tmp_path, kaggle):
    env = kaggle_env(tmp_path, kaggle.proxy)
    result = run_cli(
        "run",
        "--folds",
        "2",
        "--seeds",
        "1",
        "--epochs",
        "1",
        "--batch-size",
        "32",
        "--submit",
        "--quiet",
        cwd=workspace,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.output
    assert "Public score:" in result.stdout
    assert kaggle.methods_called().count("CreateSubmission") == 1
    uploaded = next(iter(kaggle.state.uploads.values())).decode()
    assert uploaded == (workspace / "submission.csv").read_text()
    ledger = pd.read_csv(workspace / "submissions" / "ledger.csv", dtype=str, keep_default_na=False)
    assert len(ledger) == 1 and ledger.loc[0, "status"] == "COMPLETE"
    score = kaggle.state.submissions[0]["publicScore"]
    assert ledger.loc[0, "public_score"] == score and score in result.stdout
    assert ledger.loc[0, "run_id"] and "CV" in ledger.loc[0, "message"]
    shown = run_cli("submissions", cwd=workspace, env=env)
    assert shown.returncode == 0 and score in shown.stdout


@pytest.mark.parametrize(
    "labels, needle",
    [(list(range(10)) * 10, "100 rows, test.csv has 40"), ([12] + [1] * (N_TEST - 1), "Label '12'")],
)
def test_invalid_files_are_never_uploaded(workspace, tmp_path, kaggle, labels, needle):
    env = kaggle_env(tmp_path, kaggle.proxy)
    assert run_cli("fetch", cwd=workspace, env=env).returncode == 0
    write_submission(workspace, labels)
    result = run_cli("submit", cwd=workspace, env=env)
    assert_clean_failure(result, needle, "Nothing was uploaded")
    assert "StartSubmissionUpload" not in kaggle.methods_called() and not kaggle.state.uploads


def test_daily_limit_reached(workspace, tmp_path, kaggle):
    kaggle.state.allowed_per_day = 0
    env = fetched(workspace, tmp_path, kaggle)
    write_submission(workspace, [1] * N_TEST)
    result = run_cli("submit", cwd=workspace, env=env)
    assert_clean_failure(result, "no submissions left today", "00:00 UTC", "nothing was")
    if LIMITS_CALL:  # checked before the upload; older clients upload, then Kaggle refuses to submit it
        assert not kaggle.state.uploads
    assert not (workspace / "submissions" / "ledger.csv").exists()


def test_could_not_submit_is_a_failure(workspace, tmp_path, kaggle):
    kaggle.state.fail_upload = True
    env = fetched(workspace, tmp_path, kaggle)
    write_submission(workspace, [1] * N_TEST)
    result = run_cli("submit", cwd=workspace, env=env)
    assert_clean_failure(result, "Could not submit to competition")
    assert not (workspace / "submissions" / "ledger.csv").exists()


def test_error_status_is_reported(workspace, tmp_path, kaggle):
    kaggle.state.submit_status = "ERROR"
    env = fetched(workspace, tmp_path, kaggle)
    write_submission(workspace, [1] * N_TEST)
    result = run_cli("submit", "--wait", "--message", "try", cwd=workspace, env=env)
    assert_clean_failure(result, "could not score")
    ledger = pd.read_csv(workspace / "submissions" / "ledger.csv", dtype=str, keep_default_na=False)
    assert ledger.loc[0, "status"] == "ERROR"


@pytest.mark.parametrize("status, needle", [(401, "rejected your credentials"), (403, "rules")])
@pytest.mark.parametrize("method", ["GetSubmissionLimits", "StartSubmissionUpload", "CreateSubmission"])
def test_submit_api_errors(workspace, tmp_path, kaggle, status, needle, method):
    if method == "GetSubmissionLimits" and not LIMITS_CALL:
        pytest.skip("this kaggle client has no submission-limits call")
    kaggle.state.always[method] = status
    env = fetched(workspace, tmp_path, kaggle)
    write_submission(workspace, [1] * N_TEST)
    assert_clean_failure(run_cli("submit", cwd=workspace, env=env), needle)


def test_submit_without_credentials_says_so_once(workspace, tmp_path, kaggle):
    env = fetched(workspace, tmp_path, kaggle)
    (tmp_path / "home" / ".kaggle" / "kaggle.json").unlink()  # the fetch used it; now it is gone
    write_submission(workspace, [1] * N_TEST)
    result = run_cli("submit", cwd=workspace, env=env)
    assert_clean_failure(result, "no Kaggle credentials")
    # One line in all: no warning repeating it first (warnings go to stdout with the progress lines).
    assert len(result.stderr.strip().splitlines()) == 1 and "credentials" not in result.stdout, result.output
    assert "StartSubmissionUpload" not in kaggle.methods_called() and not kaggle.state.uploads


def test_submit_without_a_file(workspace, tmp_path, kaggle):
    result = run_cli("submit", cwd=workspace, env=kaggle_env(tmp_path, kaggle.proxy))
    assert_clean_failure(result, "does not exist")


def test_submit_without_local_data_needs_the_competition_row_count(workspace, tmp_path, kaggle):
    env = kaggle_env(tmp_path, kaggle.proxy)  # no fetch: Kaggle's test has 28,000 rows
    write_submission(workspace, [1] * N_TEST)
    assert_clean_failure(run_cli("submit", cwd=workspace, env=env), "40 rows, test.csv has 28,000")
    assert not kaggle.state.uploads


@pytest.mark.skipif(not LIMITS_CALL, reason="this kaggle client has no submission-limits call")
def test_a_failing_limits_check_does_not_block_the_submission(workspace, tmp_path, kaggle):
    env = fetched(workspace, tmp_path, kaggle)
    kaggle.state.always["GetSubmissionLimits"] = 400
    write_submission(workspace, [1] * N_TEST)
    result = run_cli("submit", cwd=workspace, env=env)
    assert result.returncode == 0, result.output
    assert "could not check today's submission count" in result.output
    assert kaggle.methods_called().count("CreateSubmission") == 1


def test_a_failed_score_poll_says_the_file_was_submitted(workspace, tmp_path, kaggle):
    env = fetched(workspace, tmp_path, kaggle)
    kaggle.state.always["ListSubmissions"] = 400
    write_submission(workspace, [1] * N_TEST)
    result = run_cli("submit", "--wait", cwd=workspace, env=env)
    assert_clean_failure(result, "the file was submitted (ref 1000", "Do not submit it again")
    assert kaggle.methods_called().count("CreateSubmission") == 1
    ledger = pd.read_csv(workspace / "submissions" / "ledger.csv", dtype=str, keep_default_na=False)
    assert ledger["ref"].tolist() == ["1000"]


def test_submit_finds_the_blend_and_its_own_accuracy(in_run):
    workspace, run_dir = in_run
    result = predicting.predict(run_dir.name, weights="oof", log=lambda _: None)
    run_id, accuracy, _ = submission.run_of(workspace / "submission.csv")
    assert run_id == run_dir.name and accuracy == pytest.approx(result["oof_accuracy"])


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

