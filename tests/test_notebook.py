"""notebooks/digit-recognizer.ipynb run top to bottom as Kaggle runs it ("Save & Run All"), headless
with nbclient, against a faked Kaggle mount on tiny data: every cell must pass, and it must leave a
valid submission.csv in the faked /kaggle/working."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from competition.kaggle.submission import validation_errors
from tests import digits

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "digit-recognizer.ipynb"
# The parameters cell (tagged "parameters", as papermill does it) set for a run of seconds.
QUICK = "%env TRAIN_OPTIONS=--folds 2 --seeds 1 --epochs 2\n%env KAGGLE_MNIST="

pytestmark = pytest.mark.slow  # its cells start kaggle-mnist processes that train


def with_parameters(notebook, source: str):
    cells = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, "the notebook has one cell tagged 'parameters'"
    cells[0].source = source
    return notebook


def kaggle_mount(tmp_path: Path, monkeypatch) -> Path:
    """/kaggle as a notebook sees it: the competition under input/, an empty working/ to write in."""
    root = tmp_path / "kaggle"
    digits.write_csvs(root / "input" / "digit-recognizer", 300, 60)
    (root / "working").mkdir()
    monkeypatch.setenv("KAGGLE_MNIST_KAGGLE_ROOT", str(root))
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Batch")  # as in "Save & Run All"
    # The notebook's `!kaggle-mnist` is this environment's.
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    return root


def run_notebook(notebook, working: Path):
    client = NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(working)}}
    )
    client.execute()
    return notebook


def outputs(notebook) -> tuple[str, list[str]]:
    """All the text the cells printed, and the MIME types of what they displayed."""
    text, shown = [], []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if output.output_type == "stream":
                text.append(output.text)
            elif output.output_type in ("display_data", "execute_result"):
                shown += list(output.data)
    return "".join(text), shown


def test_the_notebook_runs_top_to_bottom_and_leaves_a_valid_submission(workspace, tmp_path, monkeypatch):
    root = kaggle_mount(tmp_path, monkeypatch)
    notebook = with_parameters(nbformat.read(NOTEBOOK, as_version=4), QUICK)
    run_notebook(notebook, root / "working")
    text, shown = outputs(notebook)
    submission = root / "working" / "submission.csv"
    assert submission.is_file() and validation_errors(submission, 60) == []
    assert "Fetched from" in text and "/input/digit-recognizer" in text
    assert "progress: 0% done" in text  # plain lines: a notebook cell is not a terminal
    # No live bar redrawing itself: Jupyter asks for colours (FORCE_COLOR), not a terminal.
    assert not any(code in text for code in ("\r", "\x1b[2K", "\x1b[?25l", "\x1b[1A"))
    assert "CV accuracy" in text and "member 2/2" in text
    assert "image/png" in shown  # the report's pictures, inline
    # Outputs stay out of /kaggle/input and the data cache out of /kaggle/working (Kaggle's output).
    assert not (root / "working" / "data").exists()
    assert (root / "temp" / "data" / "digit-recognizer").is_dir()


def test_a_failing_cell_fails_the_run(workspace, tmp_path, monkeypatch):
    """Without the competition as input, the fetch cell fails, and so does the whole run: a broken
    notebook cannot pass CI."""
    root = kaggle_mount(tmp_path, monkeypatch)
    for csv in (root / "input" / "digit-recognizer").iterdir():
        csv.unlink()
    (root / "input" / "digit-recognizer").rmdir()
    notebook = with_parameters(nbformat.read(NOTEBOOK, as_version=4), QUICK)
    # Why the notebook's commands are %%bash cells: `!command` does not raise on a non-zero exit.
    with pytest.raises(CellExecutionError, match="kaggle-mnist fetch"):
        run_notebook(notebook, root / "working")
    assert not (root / "working" / "submission.csv").exists()
