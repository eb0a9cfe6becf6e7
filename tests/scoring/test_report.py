"""`kaggle-mnist report`: valid pictures and a page."""

from __future__ import annotations

import pytest
from PIL import Image

from tests.conftest import run_cli


@pytest.mark.slow
def test_report_writes_valid_pictures_and_a_page(in_run):
    workspace, run_dir = in_run
    result = run_cli("report", cwd=workspace)
    assert result.returncode == 0, result.output
    printed = result.stdout.split()
    names = {
        "confusion.png",
        "confidently_wrong.png",
        "learning_curves.png",
        "augmentation.png",
        "members.png",
    }
    folder = run_dir / "report"
    assert {p.name for p in folder.glob("*.png")} == names
    for name in names:
        assert str(folder / name) in printed
        with Image.open(folder / name) as picture:
            picture.verify()
        with Image.open(folder / name) as picture:
            assert picture.format == "PNG" and min(picture.size) > 200
    page = (folder / "report.md").read_text()
    assert all(f"]({name})" in page for name in names) and "CV accuracy" in page and "| epochs | 2 |" in page
    assert not list(folder.glob("*partial*"))

