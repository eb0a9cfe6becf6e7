"""fetch from local copies and notebook mounts, validation, cache; every bad file gives one clear error."""

from __future__ import annotations

import gzip
import os
import shutil
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from competition import data, paths
from competition.errors import UserError
from tests import digits
from tests.conftest import assert_clean_failure, run_cli


def _fetch(source, force=False):
    lines: list[str] = []
    summary = data.fetch(source=source, force=force, log=lines.append)
    return summary, "\n".join(lines)


def _leftovers(ws: Path) -> list[str]:
    parent = ws / "data"
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(".digit")) if parent.exists() else []


def test_fetch_from_zip_validates_and_caches(workspace, tmp_path):
    archive = tmp_path / "digit-recognizer.zip"
    archive.write_bytes(digits.competition_zip(120, 30)[0])
    summary, log = _fetch(archive)
    assert summary["rows"] == {"train.csv": 120, "test.csv": 30}
    assert sum(summary["class_counts"].values()) == 120
    assert "the competition has 42,000" in log  # counts differ from the competition's: say so
    target = workspace / "data" / "digit-recognizer"
    assert {p.name for p in target.iterdir()} >= {"train.csv", "test.csv", "sample_submission.csv", "cache"}
    loaded = data.load()
    assert loaded.train_images.shape == (120, 28, 28) and loaded.train_images.dtype == np.uint8
    assert loaded.test_images.shape == (30, 28, 28)
    assert loaded.train_labels.dtype == np.uint8 and set(loaded.train_labels) == set(range(10))
    # The cache holds exactly what the CSV says.
    labels, images, _, _ = digits.make_frames(120, 30)
    np.testing.assert_array_equal(loaded.train_images, images)
    np.testing.assert_array_equal(loaded.train_labels, labels)
    assert _leftovers(workspace) == []


def test_second_fetch_does_nothing_and_force_fetches_again(workspace, tmp_path, monkeypatch):
    folder = tmp_path / "csvs"
    digits.write_csvs(folder, 60, 20)
    _fetch(folder)
    shutil.rmtree(folder)  # a second fetch would fail to read it: it must not try
    _, log = _fetch(folder)
    assert "nothing to fetch" in log
    digits.write_csvs(folder, 80, 20, seed=3)
    summary, _ = _fetch(folder, force=True)
    assert summary["rows"]["train.csv"] == 80


def test_cache_follows_a_changed_csv(workspace, tmp_path):
    folder = tmp_path / "csvs"
    digits.write_csvs(folder, 60, 20)
    _fetch(folder)
    train = workspace / "data" / "digit-recognizer" / "train.csv"
    lines = train.read_text().splitlines()
    train.write_text("\n".join(lines[:41]) + "\n")  # keep 40 rows
    os.utime(train, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert len(data.load().train_labels) == 40


@pytest.mark.parametrize(
    "damage",
    ["zeros", "shifted labels", "truncated", "deleted"],
)
def test_a_damaged_cache_is_rebuilt_from_the_csvs(workspace, tmp_path, damage):
    folder = tmp_path / "csvs"
    digits.write_csvs(folder, 60, 20)
    good_labels = digits.make_frames(60, 20)[0]
    _fetch(folder)
    cache = workspace / "data" / "digit-recognizer" / "cache"
    if damage == "zeros":  # same size, every byte zero: every test image black
        target = cache / "test_images.npy"
        target.write_bytes(bytes(target.stat().st_size))
    elif damage == "shifted labels":  # a valid .npy, but not the labels of the CSV
        target = cache / "train_labels.npy"
        np.save(target, np.roll(np.load(target), 1))
    elif damage == "truncated":
        target = cache / "train_images.npy"
        target.write_bytes(target.read_bytes()[:1000])
    else:
        target = cache / "train_images.npy"
        target.unlink()
    lines: list[str] = []
    loaded = data.load(log=lines.append)
    assert f"{target} is damaged" in "\n".join(lines)
    np.testing.assert_array_equal(loaded.train_labels, good_labels)
    assert loaded.test_images.any()
    # Repaired for good: the next load is silent, and fetch says the data is in place.
    lines.clear()
    data.load(log=lines.append)
    assert lines == []
    assert "nothing to fetch" in _fetch(None)[1]


def test_fetch_revalidates_a_csv_edited_in_place(workspace, tmp_path):
    folder = tmp_path / "csvs"
    digits.write_csvs(folder, 60, 20)
    _fetch(folder)
    train = workspace / "data" / "digit-recognizer" / "train.csv"
    stat = train.stat()
    text = train.read_text()
    train.write_text(text[:-2] + ("1" if text[-2] != "1" else "2") + "\n")  # one pixel, same size
    os.utime(train, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # and the same modification time
    _, log = _fetch(None)
    assert "changed since it was validated" in log and "nothing to fetch" in log


def test_csv_values_written_as_floats_are_read(workspace, tmp_path):
    folder = tmp_path / "csvs"
    labels, images, _, _ = digits.make_frames(60, 20)
    digits.write_csvs(folder, 60, 20)
    train = folder / "train.csv"
    import pandas as pd

    pd.read_csv(train).astype(float).to_csv(train, index=False)  # "5.0,0.0,0.0,..."
    assert "0.0," in train.read_text().splitlines()[1]
    _fetch(folder)
    np.testing.assert_array_equal(data.load().train_images, images)
    # A real fraction is still refused, with its line and column.
    text = train.read_text().splitlines()
    text[3] = text[3].replace(",0.0", ",0.5", 1)
    train.write_text("\n".join(text) + "\n")
    with pytest.raises(UserError, match="line 4, column pixel.*0.5 is not an integer"):
        data.read_digits_csv(train, has_labels=True)


def test_a_second_fetch_waits_for_the_first(workspace, tmp_path):
    from competition import locks

    folder = tmp_path / "csvs"
    digits.write_csvs(folder, 60, 20)
    _fetch(folder)
    lock = workspace / "data" / ".lock-digit-recognizer"
    result = {}
    import threading

    with locks.hold(lock, "test"):
        worker = threading.Thread(target=lambda: result.update(out=_fetch(None)[1]))
        worker.start()
        worker.join(timeout=1.0)
        assert worker.is_alive()  # waiting for the lock, not fetching beside the holder
    worker.join(timeout=30)
    assert "Waiting for another kaggle-mnist process" in result["out"] and "nothing to fetch" in result["out"]


def test_load_without_data_says_run_fetch(workspace):
    with pytest.raises(UserError, match="kaggle-mnist fetch"):
        data.load()


def _bad_train(rows_edit):
    labels, images, test_images, _ = digits.make_frames(20, 5)
    lines = digits.train_csv(labels, images).splitlines()
    lines = rows_edit(lines)
    return "\n".join(lines) + "\n", digits.test_csv(test_images)


def _replace_cell(line: str, column: int, value: str) -> str:
    cells = line.split(",")
    cells[column] = value
    return ",".join(cells)


BAD_FILES = {
    "wrong header": (lambda ls: [ls[0].replace("pixel5,", "pixel_5,"), *ls[1:]], "column 7 is 'pixel_5'"),
    "short row": (
        lambda ls: [ls[0], ls[1], ",".join(ls[2].split(",")[:700]), *ls[3:]],
        "line 3 is short: 700 values",
    ),
    "non-numeric": (lambda ls: [ls[0], _replace_cell(ls[1], 10, "abc"), *ls[2:]], "'abc' is not a number"),
    "missing value": (
        lambda ls: [ls[0], _replace_cell(ls[1], 10, ""), *ls[2:]],
        "column pixel9: missing value",
    ),
    "pixel out of range": (
        lambda ls: [ls[0], _replace_cell(ls[1], 3, "300"), *ls[2:]],
        "300 is out of range",
    ),
    "negative pixel": (lambda ls: [ls[0], _replace_cell(ls[1], 3, "-1"), *ls[2:]], "-1 is out of range"),
    "label out of range": (
        lambda ls: [ls[0], _replace_cell(ls[1], 0, "12"), *ls[2:]],
        "labels must be digits 0-9",
    ),
    "non-integer": (lambda ls: [ls[0], _replace_cell(ls[1], 5, "1.5"), *ls[2:]], "1.5 is not an integer"),
    "header only": (lambda ls: [ls[0]], "header but no rows"),
    "long first row": (lambda ls: [ls[0], ls[1] + ",7", *ls[2:]], "malformed"),
    "long row": (lambda ls: [ls[0], ls[1], ls[2] + ",7", *ls[3:]], "Expected 785 fields in line 3, saw 786"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_train_csv_is_refused_and_nothing_is_left(workspace, tmp_path, case):
    edit, needle = BAD_FILES[case]
    train, test = _bad_train(edit)
    archive = tmp_path / "bad.zip"
    archive.write_bytes(digits.zip_bytes({"train.csv": train, "test.csv": test}))
    with pytest.raises(UserError) as info:
        _fetch(archive)
    assert needle in info.value.message and "train.csv" in info.value.message
    assert not (workspace / "data" / "digit-recognizer").exists()
    assert _leftovers(workspace) == []


def test_bad_file_does_not_replace_good_data(workspace, tmp_path):
    good = tmp_path / "good"
    digits.write_csvs(good, 30, 10)
    _fetch(good)
    train, test = _bad_train(lambda ls: [ls[0]])
    archive = tmp_path / "bad.zip"
    archive.write_bytes(digits.zip_bytes({"train.csv": train, "test.csv": test}))
    with pytest.raises(UserError):
        _fetch(archive, force=True)
    assert len(data.load().train_labels) == 30  # the valid data is still there and still trusted


def test_test_csv_with_label_column_is_refused(workspace, tmp_path):
    labels, images, _, _ = digits.make_frames(20, 5)
    archive = tmp_path / "leak.zip"
    archive.write_bytes(
        digits.zip_bytes(
            {"train.csv": digits.train_csv(labels, images), "test.csv": digits.train_csv(labels, images)}
        )
    )
    with pytest.raises(UserError, match="test.csv has a 'label' column"):
        _fetch(archive)


@pytest.mark.parametrize(
    "content, needle",
    [(b"", "is empty (0 bytes)"), (b"this is not a zip at all", "is not a zip archive")],
)
def test_not_a_zip(workspace, tmp_path, content, needle):
    archive = tmp_path / "download.zip"
    archive.write_bytes(content)
    with pytest.raises(UserError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        _fetch(archive)


def test_zip_member_escaping_the_folder_is_refused(workspace, tmp_path):
    archive = tmp_path / "evil.zip"
    good, _ = digits.competition_zip(20, 5)
    import io
    import zipfile

    members = {
        info.filename: zipfile.ZipFile(io.BytesIO(good)).read(info)
        for info in zipfile.ZipFile(io.BytesIO(good)).infolist()
    }
    members["../../escaped.txt"] = b"gotcha"
    archive.write_bytes(digits.zip_bytes(members))
    with pytest.raises(UserError, match="escapes the folder"):
        _fetch(archive)
    assert not list(tmp_path.rglob("escaped.txt"))
    assert not (workspace / "data" / "digit-recognizer").exists()


def test_empty_csv_and_missing_member(workspace, tmp_path):
    archive = tmp_path / "a.zip"
    archive.write_bytes(
        digits.zip_bytes({"train.csv": "", "test.csv": digits.test_csv(np.zeros((1, 28, 28)))})
    )
    with pytest.raises(UserError, match="train.csv is empty"):
        _fetch(archive)
    archive.write_bytes(digits.zip_bytes({"train.csv": "x"}))
    with pytest.raises(UserError, match="has no test.csv"):
        _fetch(archive)


@pytest.mark.parametrize("layout", ["digit-recognizer", "competitions/digit-recognizer", "some-copy/files"])
def test_kaggle_notebook_mounted_input(workspace, tmp_path, monkeypatch, layout):
    root = tmp_path / "kaggle"
    digits.write_csvs(root / "input" / layout, 40, 10)
    (root / "working").mkdir()
    monkeypatch.setenv("KAGGLE_MNIST_KAGGLE_ROOT", str(root))
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Interactive")
    assert paths.workspace() == root / "working"
    summary, log = _fetch(None)
    assert summary["rows"]["train.csv"] == 40 and layout in log
    # Not in /kaggle/working, which Kaggle saves as the notebook's output.
    assert (root / "temp" / "data" / "digit-recognizer" / "cache" / "manifest.json").is_file()
    assert not (root / "working" / "data").exists()


def test_kaggle_notebook_without_competition_input(workspace, tmp_path, monkeypatch):
    root = tmp_path / "kaggle"
    (root / "input").mkdir(parents=True)
    monkeypatch.setenv("KAGGLE_MNIST_KAGGLE_ROOT", str(root))
    with pytest.raises(UserError, match="Add Input"):
        _fetch(None)


def test_unwritable_workspace(workspace, tmp_path, monkeypatch):
    # A file where a folder should be fails for root too, unlike chmod.
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    monkeypatch.setenv("KAGGLE_MNIST_WORKSPACE", str(blocker / "ws"))
    folder = tmp_path / "csvs"
    digits.write_csvs(folder, 20, 5)
    with pytest.raises(UserError, match="cannot write to"):
        _fetch(folder)


def test_cli_fetch_reports_errors_in_one_line(workspace, tmp_path):
    missing = run_cli("fetch", "--from", str(tmp_path / "nowhere.zip"), cwd=workspace)
    assert_clean_failure(missing, "no such file or folder")
    archive = tmp_path / "bad.zip"
    archive.write_bytes(b"junk")
    bad = run_cli("fetch", "--from", str(archive), cwd=workspace)
    assert_clean_failure(bad, "not a zip archive")
    assert len(bad.stderr.strip().splitlines()) == 1


def test_cli_help_explains_every_option(workspace):
    import typer
    from typer.testing import CliRunner

    from competition import cli

    group = typer.main.get_command(cli.app)
    top = CliRunner().invoke(cli.app, ["--help"])
    assert top.exit_code == 0
    for name, command in group.commands.items():
        assert name in top.output, name  # every command listed
        page = CliRunner().invoke(cli.app, [name, "--help"], terminal_width=200)
        assert page.exit_code == 0, name
        for param in command.params:  # every option named and explained
            if param.param_type_name == "option":
                assert param.opts[0] in page.output, (name, param.opts[0])
                assert param.help, (name, param.opts[0])
    assert "zip" in CliRunner().invoke(cli.app, ["fetch", "--help"]).output


def _competition_csvs(tmp_path: Path) -> tuple[Path, Path]:
    """The competition zip and the same CSVs unpacked."""
    archive = tmp_path / "digit-recognizer.zip"
    archive.write_bytes(digits.competition_zip(120, 30)[0])
    csvs = tmp_path / "csvs"
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(csvs)
    return archive, csvs


def _cached_arrays(ws: Path) -> dict[str, bytes]:
    cache = ws / "data" / "digit-recognizer" / "cache"
    return {p.name: p.read_bytes() for p in sorted(cache.glob("*.npy"))}


@pytest.mark.parametrize("packing", ["zip", "gz"])
def test_fetch_from_a_folder_of_one_file_downloads(workspace, tmp_path, packing):
    # `kaggle competitions download -c digit-recognizer -f train.csv` (and -f test.csv) leaves
    # train.csv.zip and test.csv.zip, each holding its CSV; gzip'd CSVs are read too.
    archive, csvs = _competition_csvs(tmp_path)
    _fetch(archive)
    reference = _cached_arrays(workspace)
    folder = tmp_path / "downloads"
    folder.mkdir()
    for name in ("train.csv", "test.csv"):
        if packing == "zip":
            with zipfile.ZipFile(folder / f"{name}.zip", "w", zipfile.ZIP_DEFLATED) as zf:
                zf.write(csvs / name, name)
        else:
            with open(csvs / name, "rb") as src, gzip.open(folder / f"{name}.gz", "wb") as dst:
                shutil.copyfileobj(src, dst)
    summary, _ = _fetch(folder, force=True)
    assert summary["rows"] == {"train.csv": 120, "test.csv": 30}
    assert _cached_arrays(workspace) == reference


@pytest.mark.parametrize("packing", ["zip", "gz"])
def test_a_damaged_one_file_download_is_refused_in_one_line(workspace, tmp_path, packing):
    _, csvs = _competition_csvs(tmp_path)
    folder = tmp_path / "downloads"
    folder.mkdir()
    shutil.copyfile(csvs / "test.csv", folder / "test.csv")
    (folder / f"train.csv.{packing}").write_bytes(b"PK\x03\x04 cut short" if packing == "zip" else b"\x1f\x8b cut")
    with pytest.raises(UserError, match=f"train.csv.{packing} (is damaged|is not a zip)"):
        _fetch(folder)
    assert not (workspace / "data" / "digit-recognizer").exists() and not _leftovers(workspace)
    (folder / f"train.csv.{packing}").unlink()
    with pytest.raises(UserError, match=r"has no train.csv \(nor train.csv.zip or train.csv.gz\)"):
        _fetch(folder)
