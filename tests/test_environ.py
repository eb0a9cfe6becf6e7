"""The environment variables: read in environ.py only, when needed, checked, and all in the docs' table."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from competition import environ
from competition.errors import UserError
from tests.conftest import ROOT

SECONDS = {
    environ.NETWORK_TIMEOUT: (environ.network_timeout, 60.0),
    environ.KERNEL_POLL: (environ.kernel_poll, 30.0),
    environ.KERNEL_STALE: (environ.kernel_stale, 120.0),
    environ.SESSION_SECONDS: (environ.session_seconds, 43200.0),
}


@pytest.mark.parametrize("name", sorted(SECONDS))
def test_seconds_are_read_when_needed_and_checked(name, monkeypatch):
    read, default = SECONDS[name]
    monkeypatch.delenv(name, raising=False)
    assert read() == default
    monkeypatch.setenv(name, "2.5")  # after import: still heeded
    assert read() == 2.5
    for bad in ("soon", "0", "-1", "nan"):
        monkeypatch.setenv(name, bad)
        with pytest.raises(UserError, match=rf"^{name}='{bad}' is not a number of seconds above 0"):
            read()


def test_the_deadline_is_unset_outside_a_kernel(monkeypatch):
    monkeypatch.delenv(environ.DEADLINE, raising=False)
    assert environ.deadline() is None
    monkeypatch.setenv(environ.DEADLINE, "1796000000.5")
    assert environ.deadline() == 1796000000.5


def test_paths_follow_the_workspace_and_the_kaggle_root(tmp_path, monkeypatch):
    from competition import paths

    monkeypatch.setenv(environ.WORKSPACE, str(tmp_path / "ws"))
    monkeypatch.setenv(environ.KAGGLE_ROOT, str(tmp_path / "kaggle"))
    assert paths.workspace() == tmp_path / "ws"
    assert paths.kaggle_root() == tmp_path / "kaggle"
    monkeypatch.setenv(environ.WORKSPACE, "")  # empty counts as unset
    assert environ.workspace() is None


def _project_variables() -> set[str]:
    return {v for k, v in vars(environ).items() if k.isupper() and isinstance(v, str)}


def _reads(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, key) of each read of os.environ: .get(...), os.getenv(...), or os.environ[...] loaded; the
    key as written ("NAME") or through environ's constant (environ.NAME)."""

    def key(node: ast.AST) -> str:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "environ":
            return getattr(environ, node.attr, "")
        return ""

    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args:
            called = ast.unparse(node.func)
            if called in ("os.environ.get", "os.getenv"):
                found.append((node.lineno, key(node.args[0])))
        if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load):
            if ast.unparse(node.value) == "os.environ":
                found.append((node.lineno, key(node.slice)))
    return found


def test_no_other_module_reads_the_project_variables():
    ours = _project_variables()
    offenders = [
        f"{path.relative_to(ROOT)}:{line} reads {name}"
        for path in sorted((ROOT / "competition").rglob("*.py"))
        if path.name != "environ.py"
        for line, name in _reads(ast.parse(path.read_text(encoding="utf-8")))
        if name in ours
    ]
    assert offenders == []
    # The check itself finds a read, in either spelling.
    sample = 'import os\nx = os.environ.get("KAGGLE_MNIST_DEBUG")\ny = os.environ[environ.DEADLINE]\n'
    assert [n for _, n in _reads(ast.parse(sample))] == ["KAGGLE_MNIST_DEBUG", "KAGGLE_MNIST_DEADLINE"]


def test_every_variable_is_in_the_docs_table():
    table = Path(ROOT / "docs" / "robustness.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `([A-Z_]+)` \|", table, flags=re.MULTILINE))
    assert _project_variables() <= documented
    assert {n for n in documented if n.startswith("KAGGLE_MNIST_")} <= _project_variables()
