"""One process at a time: a second is refused in one line naming the first, or waits where asked."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from competition import locks
from competition.errors import UserError
from tests.conftest import ROOT


def hold_elsewhere(lock, seconds: float) -> subprocess.Popen:
    """Another process holding `lock` for `seconds`; it prints "held" once it has it."""
    return subprocess.Popen(
        [sys.executable, "-c", f"from competition import locks\nimport time\nwith locks.hold({str(lock)!r}, 'x'):\n    print('held', flush=True); time.sleep({seconds})"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )


def test_a_held_lock_is_refused_in_one_line_naming_its_process(tmp_path):
    lock = tmp_path / ".lock"
    holder = hold_elsewhere(lock, 30)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UserError, match=rf"another kaggle-mnist process \(pid {holder.pid}\) is working on run r"):
            with locks.hold(lock, "run r"):
                pass
    finally:
        holder.kill()
        holder.wait()
    # Killed while holding it: the OS dropped the lock, and nothing stale is left to refuse the next.
    with locks.hold(lock, "run r"):
        assert (tmp_path / ".lock.pid").read_text() == str(os.getpid())
    assert not (tmp_path / ".lock.pid").exists()


def test_a_waiting_process_says_so_and_goes_on_when_the_lock_is_free(tmp_path):
    lock = tmp_path / ".lock"
    holder = hold_elsewhere(lock, 1)
    assert holder.stdout.readline().strip() == "held"
    said = []
    started = time.monotonic()
    with locks.hold(lock, "the ledger", wait=True, log=said.append):
        assert holder.poll() is not None or time.monotonic() - started > 0.5
    holder.wait()
    assert len(said) == 1 and said[0].startswith("Waiting for another kaggle-mnist process") and "the ledger" in said[0]
