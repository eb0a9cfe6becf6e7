"""The archive and receipt both sides share: extracted only inside its run folder; the receipt's format."""

from __future__ import annotations

import pytest

from tests.kaggle.conftest import zip_of


@pytest.mark.parametrize("name", ["../escaped.txt", "run-1/../../escaped.txt", "another-run/model.keras"])
def test_an_archive_with_files_outside_its_run_folder_is_refused_whole(tmp_path, name):
    from competition.errors import UserError
    from competition.kaggle import job as kernel_job

    archive = zip_of(tmp_path / "out.zip", {"run-1/config.json": b"{}", name: b"x"})
    target = tmp_path / "home" / "staging"
    target.mkdir(parents=True)
    with pytest.raises(UserError, match="holds files outside its run folder: refusing it"):
        kernel_job.extract(archive, "run-1", target, "the archive")
    assert list(target.iterdir()) == [] and not (tmp_path / "home" / "escaped.txt").exists()


def test_a_receipt_round_trips_and_a_foreign_one_is_refused(tmp_path):
    from competition.kaggle.contract import Receipt

    receipt = Receipt("run-1", "ab" * 32, ["f0-s0"], False, ["f0-s0"])
    receipt.save(tmp_path / "r.json")
    assert Receipt.load(tmp_path / "r.json") == receipt
    for text in ("{", "[]", '{"run_id": 1, "sha256": "x"}', '{"run_id": "r", "sha256": "x", "done": "f0-s0"}'):
        (tmp_path / "bad.json").write_text(text)
        with pytest.raises(ValueError):
            Receipt.load(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError):
        Receipt.load(tmp_path / "none.json")

