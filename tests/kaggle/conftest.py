"""What the tests of the Kaggle route share: a fake Kaggle that scores submissions (test files that need
one running kernels, or only serving the data, define their own `kaggle`), and small helpers."""

from __future__ import annotations

import zipfile

import pytest

from tests import digits
from tests.conftest import kaggle_env, run_cli
from tests.fake_kaggle import FakeKaggle, KaggleState

N_TEST = 40


@pytest.fixture
def kaggle(workspace):
    archive, test_labels = digits.competition_zip(300, N_TEST)
    with FakeKaggle(KaggleState(archive=archive, labels=test_labels.tolist())) as fake:
        yield fake


def write_submission(ws, labels) -> None:
    rows = "".join(f"{i},{label}\n" for i, label in enumerate(labels, start=1))
    (ws / "submission.csv").write_text("ImageId,Label\n" + rows)


def fetched(workspace, tmp_path, kaggle) -> dict[str, str]:
    """The environment for the CLI, with the competition data fetched (so test.csv has N_TEST rows)."""
    env = kaggle_env(tmp_path, kaggle.proxy)
    assert run_cli("fetch", cwd=workspace, env=env).returncode == 0
    return env


def zip_of(path, names: dict[str, bytes]):
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in names.items():
            archive.writestr(name, content)
    return path
