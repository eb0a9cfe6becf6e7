"""The kaggle client fenced in, through the real client against the fake Kaggle: fetch's download,
credentials, retries, timeouts, cut downloads, and every error as one line."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from competition.errors import UserError
from tests import digits
from tests.conftest import assert_clean_failure, kaggle_env, run_cli
from tests.fake_kaggle import FakeKaggle, KaggleState


@pytest.fixture
def kaggle(tmp_path):
    archive, _ = digits.competition_zip(100, 20)
    with FakeKaggle(KaggleState(archive=archive)) as fake:
        yield fake


def fetch(ws: Path, env: dict[str, str], *args: str):
    return run_cli("fetch", *args, cwd=ws, env=env, timeout=120)


def data_ok(ws: Path) -> bool:
    return (ws / "data" / "digit-recognizer" / "cache" / "manifest.json").is_file()


def nothing_trusted_left(ws: Path) -> bool:
    target = ws / "data" / "digit-recognizer"
    staging = list((ws / "data").glob(".digit-recognizer.*")) if (ws / "data").exists() else []
    return not target.exists() and not staging


def test_a_404_names_what_kaggle_did_not_find_not_the_competition():
    import requests

    from competition.kaggle import api as kaggle_api

    response = requests.Response()
    response.status_code = 404
    response.url = "https://storage.example/kernel-output/tester/k1/kaggle-mnist-run.zip?sig=x"
    error = requests.HTTPError("404 Client Error", response=response)
    missing = ("output of kernel tester/k1", "run the same command again")
    message = kaggle_api.explain(error, "downloading the kernel's output", missing=missing).message
    assert message == (
        "Kaggle found no output of kernel tester/k1 (kaggle-mnist-run.zip) (404) while downloading the "
        "kernel's output: run the same command again"
    )
    # The competition's calls say so; any other call does not blame the competition.
    competition = kaggle_api.explain(error, "submitting", missing=kaggle_api.COMPETITION_MISSING)
    assert "no competition 'digit-recognizer'" in competition.message
    assert "competition" not in kaggle_api.explain(error, "pushing the kernel").message


def test_a_value_error_while_submitting_is_not_called_a_cut_download(monkeypatch, tmp_path):
    from competition.kaggle import api as kaggle_api

    class Client:
        def competition_submit(self, *args, **kwargs):
            raise ValueError("Invalid value for `ref`")

    monkeypatch.setattr(kaggle_api, "client", lambda: Client())
    with pytest.raises(UserError) as info:
        kaggle_api.submit(tmp_path / "s.csv", "m")
    assert "cut short" not in info.value.message
    assert info.value.message == "the kaggle client failed while submitting: Invalid value for `ref`"


@pytest.mark.parametrize("credentials", ["file", "env", "token"])
def test_fetch_through_the_api(workspace, tmp_path, kaggle, credentials):
    env = kaggle_env(tmp_path, kaggle.proxy, credentials)
    first = fetch(workspace, env)
    assert first.returncode == 0, first.output
    assert "100 rows" in first.stdout and "Traceback" not in first.output
    assert data_ok(workspace)
    assert "DownloadDataFiles" in kaggle.methods_called()
    assert not (workspace / "data" / ".downloads" / "digit-recognizer.zip").exists()
    calls = len(kaggle.methods_called())
    second = fetch(workspace, env)
    assert second.returncode == 0 and "nothing to fetch" in second.stdout
    assert len(kaggle.methods_called()) == calls  # nothing was asked of Kaggle


def test_force_downloads_again(workspace, tmp_path, kaggle):
    env = kaggle_env(tmp_path, kaggle.proxy)
    assert fetch(workspace, env).returncode == 0
    kaggle.state.archive = digits.competition_zip(60, 20, seed=5)[0]
    again = fetch(workspace, env, "--force")
    assert again.returncode == 0 and "60 rows" in again.stdout
    assert kaggle.methods_called().count("DownloadDataFiles") == 2


def test_no_credentials(workspace, tmp_path, kaggle):
    result = fetch(workspace, kaggle_env(tmp_path, kaggle.proxy, credentials="none"))
    assert_clean_failure(result, "no Kaggle credentials", "kaggle.json", "kaggle.json.example")
    assert kaggle.methods_called() == [] and nothing_trusted_left(workspace)


def test_malformed_kaggle_json(workspace, tmp_path, kaggle):
    env = kaggle_env(tmp_path, kaggle.proxy, credentials="none")
    (tmp_path / "home" / ".kaggle").mkdir()
    (tmp_path / "home" / ".kaggle" / "kaggle.json").write_text("{not json")
    assert_clean_failure(fetch(workspace, env), "is not valid", "username")


@pytest.mark.parametrize(
    "status, needles",
    [
        (401, ["rejected your credentials", "401"]),
        (403, ["403", "https://www.kaggle.com/c/digit-recognizer/rules"]),
        (404, ["404", "no competition"]),
        (429, ["rate limiting", "429"]),
        (500, ["HTTP 500", "try again later"]),
        (503, ["HTTP 503"]),
    ],
)
def test_api_errors_give_one_clear_line(workspace, tmp_path, kaggle, status, needles):
    kaggle.state.always["DownloadDataFiles"] = status
    result = fetch(workspace, kaggle_env(tmp_path, kaggle.proxy))
    assert_clean_failure(result, *needles)
    assert nothing_trusted_left(workspace)
    tries = kaggle.methods_called().count("DownloadDataFiles")
    assert tries == (4 if status == 429 or status >= 500 else 1)  # only worth-retrying errors retried


def test_wrong_key_is_a_401_from_the_server(workspace, tmp_path, kaggle):
    result = fetch(workspace, kaggle_env(tmp_path, kaggle.proxy, credentials="wrong"))
    assert_clean_failure(result, "rejected your credentials")


def test_invalid_token(workspace, tmp_path, kaggle):
    env = kaggle_env(tmp_path, kaggle.proxy, credentials="none")
    env["KAGGLE_API_TOKEN"] = "expired-token"
    assert_clean_failure(fetch(workspace, env), "did not accept your credentials")


def test_transient_server_errors_are_retried(workspace, tmp_path, kaggle):
    kaggle.state.failures["DownloadDataFiles"] = [503, 429]
    result = fetch(workspace, kaggle_env(tmp_path, kaggle.proxy))
    assert result.returncode == 0, result.output
    assert kaggle.methods_called().count("DownloadDataFiles") == 3 and data_ok(workspace)


def test_connection_refused(workspace, tmp_path):
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = fetch(workspace, kaggle_env(tmp_path, f"http://127.0.0.1:{port}"))
    assert_clean_failure(result, "could not reach Kaggle", "internet")
    assert nothing_trusted_left(workspace)


def test_server_that_never_answers_times_out(workspace, tmp_path, kaggle):
    kaggle.state.hang_seconds = 30
    result = fetch(workspace, kaggle_env(tmp_path, kaggle.proxy))
    assert_clean_failure(result, "did not answer in time")
    assert nothing_trusted_left(workspace)


def test_download_cut_short_once_resumes(workspace, tmp_path, kaggle):
    kaggle.state.cut_short = 1
    result = fetch(workspace, kaggle_env(tmp_path, kaggle.proxy))
    assert result.returncode == 0, result.output
    assert data_ok(workspace)


def test_download_cut_short_every_time(workspace, tmp_path, kaggle):
    kaggle.state.cut_short = 100
    result = fetch(workspace, kaggle_env(tmp_path, kaggle.proxy))
    assert_clean_failure(result, "cut short", "run the same command again")
    assert nothing_trusted_left(workspace)


@pytest.mark.parametrize(
    "archive, needle",
    [
        (b"<html>not a zip</html>", "is not a zip archive"),
        (
            digits.zip_bytes({"train.csv": "label,pixel0\n1,2\n", "test.csv": "pixel0\n1\n"}),
            "unexpected header",
        ),
        (digits.zip_bytes({"../evil.csv": "x", "train.csv": "x", "test.csv": "x"}), "escapes the folder"),
    ],
)
def test_bad_archives_from_the_api(workspace, tmp_path, kaggle, archive, needle):
    kaggle.state.archive = archive
    result = fetch(workspace, kaggle_env(tmp_path, kaggle.proxy))
    assert_clean_failure(result, needle)
    assert nothing_trusted_left(workspace)
    assert not (tmp_path / "evil.csv").exists() and not (workspace / "data" / "evil.csv").exists()


def test_unwritable_home(workspace, tmp_path, kaggle):
    env = kaggle_env(tmp_path, kaggle.proxy, credentials="env")
    blocker = tmp_path / "blocker"
    blocker.write_text("")  # a home below a file cannot be created, even by root
    env["HOME"] = str(blocker / "home")
    result = fetch(workspace, env)
    assert_clean_failure(result, "KAGGLE_CONFIG_DIR")
    env["KAGGLE_CONFIG_DIR"] = str(tmp_path / "kaggle-config")
    assert fetch(workspace, env).returncode == 0


def test_unwritable_workspace_via_cli(workspace, tmp_path, kaggle):
    env = kaggle_env(tmp_path, kaggle.proxy)
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    env["KAGGLE_MNIST_WORKSPACE"] = str(blocker / "ws")
    assert_clean_failure(fetch(workspace, env), "cannot write to")


def test_a_notebook_without_credentials_is_told_how_notebooks_use_them(tmp_path, monkeypatch):
    from competition.errors import UserError
    from competition.kaggle import api as kaggle_api

    for name in ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_CONFIG_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KAGGLE_MNIST_KAGGLE_ROOT", str(tmp_path / "kaggle"))
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Interactive")
    with pytest.raises(UserError, match="Save & Run All") as refused:
        kaggle_api.reset_client()
        kaggle_api.client()
    assert "Secrets" in refused.value.message and "KAGGLE_USERNAME" in refused.value.message
