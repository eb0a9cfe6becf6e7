"""Bringing a run home: an output that does not match its receipt, other settings or data, missing or
damaged members are refused."""

from __future__ import annotations

import json

import pytest

from competition.kaggle import home


def _fake_output(monkeypatch, receipt: dict | str | None, archive: bytes | None):
    """kaggle_api.kernel_output leaving this receipt and archive in the folder, as a download would."""
    from competition.kaggle import api as kaggle_api
    from competition.kaggle import job as kernel_job

    def download(ref, folder, names, missing):
        folder.mkdir(parents=True, exist_ok=True)
        if receipt is not None:
            text = receipt if isinstance(receipt, str) else json.dumps(receipt)
            (folder / kernel_job.RECEIPT).write_text(text)
        if archive is not None:
            (folder / kernel_job.ARCHIVE).write_bytes(archive)
        return []

    monkeypatch.setattr(kaggle_api, "kernel_output", download)


@pytest.fixture
def kernel_run(trained_run, tmp_path):
    """A copy of the shared trained run, as a kernel's unpacked output."""
    import shutil

    from competition.runs.folder import Run

    _, run_dir = trained_run
    copy = tmp_path / "kernel-0" / run_dir.name
    shutil.copytree(run_dir, copy)
    return Run(copy)


def test_an_archive_whose_checksum_does_not_match_its_receipt_is_refused(tmp_path, monkeypatch):
    import hashlib

    from competition.errors import UserError

    archive = b"the archive's bytes"
    good = {"run_id": "run-1", "sha256": hashlib.sha256(archive).hexdigest(), "finished": True}
    _fake_output(monkeypatch, good, archive)
    receipt = home.download_output("me/k", tmp_path / "a")
    assert (receipt.run_id, receipt.sha256, receipt.finished) == ("run-1", good["sha256"], True)
    _fake_output(monkeypatch, {**good, "sha256": "0" * 64}, archive)
    with pytest.raises(UserError, match="is damaged \\(its checksum does not match the receipt\\)"):
        home.download_output("me/k", tmp_path / "b")
    _fake_output(monkeypatch, "{not json", archive)
    with pytest.raises(UserError, match="is damaged \\(not the receipt the kernel writes\\)"):
        home.download_output("me/k", tmp_path / "c")
    _fake_output(monkeypatch, None, archive)
    with pytest.raises(home.MissingOutput, match="left no kaggle-mnist-run.json"):
        home.download_output("me/k", tmp_path / "d")


def test_a_run_from_kaggle_trained_with_other_settings_is_refused(kernel_run, tmp_path):
    from competition.errors import UserError

    identity = kernel_run.identity()
    merged = home.merge([kernel_run], tmp_path / "merged", identity, None)
    assert merged.finished and merged.metrics["cv_accuracy"] == kernel_run.metrics["cv_accuracy"]
    other = {**identity, "settings": {**identity["settings"], "epochs": identity["settings"]["epochs"] + 1}}
    with pytest.raises(UserError, match="was trained with other settings or data than this command's"):
        home.merge([kernel_run], tmp_path / "other-settings", other, None)
    other_data = {**identity, "train_sha256": "0" * 64}
    with pytest.raises(UserError, match="was trained with other settings or data than this command's"):
        home.merge([kernel_run], tmp_path / "other-data", other_data, None)
    assert not (tmp_path / "other-settings").exists() and not (tmp_path / "other-data").exists()


def test_a_run_from_kaggle_missing_or_damaging_a_member_is_refused(kernel_run, tmp_path):
    import shutil

    from competition.errors import UserError

    identity = kernel_run.identity()
    shutil.rmtree(kernel_run.member_dir(1, 0))
    kernel_run.member_dir(0, 1).joinpath("test.npy").write_bytes(b"damaged")
    with pytest.raises(UserError, match="incomplete or damaged: f1-s0, f0-s1 \\(test.npy\\)"):
        home.merge([kernel_run], tmp_path / "merged", identity, None)

