"""Inside the kernel: a stopped kernel's output is continued only when it matches its receipt."""

from __future__ import annotations

import json

import pytest

from tests.kaggle.conftest import zip_of


def test_a_stopped_kernels_output_that_does_not_match_its_receipt_is_not_continued(
    workspace, tmp_path, monkeypatch
):
    import hashlib

    from competition.errors import UserError
    from competition.kaggle import job as kernel_job

    root = tmp_path / "kaggle"
    earlier = root / "input" / "kaggle-mnist-abc"
    earlier.mkdir(parents=True)
    archive = zip_of(earlier / kernel_job.ARCHIVE, {"run-1/config.json": b"{}"})
    receipt = {"run_id": "run-1", "sha256": hashlib.sha256(archive.read_bytes()).hexdigest()}
    receipt |= {"members": None, "finished": False, "done": []}
    (earlier / kernel_job.RECEIPT).write_text(json.dumps({**receipt, "sha256": "0" * 64}))
    monkeypatch.setenv("KAGGLE_MNIST_KAGGLE_ROOT", str(root))
    monkeypatch.setenv("KAGGLE_MNIST_WORKSPACE", str(workspace))
    with pytest.raises(UserError, match="does not match its receipt: the earlier kernel's output is damaged"):
        kernel_job.continue_from_input()
    assert not (workspace / "ensembles" / "run-1").exists()
    (earlier / kernel_job.RECEIPT).write_text(json.dumps(receipt))  # intact: put back to be continued
    kernel_job.continue_from_input()
    assert (workspace / "ensembles" / "run-1" / "config.json").is_file()

