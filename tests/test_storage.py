"""Files written whole or not at all, the same bytes for the same array, and the disk checked first."""

from __future__ import annotations

import errno
import os

import numpy as np
import pytest

from competition import storage


def test_a_write_that_fails_leaves_the_old_file_and_no_partial_one(tmp_path):
    target = tmp_path / "sub" / "metrics.json"
    storage.write_json(target, {"a": np.float32(0.5), "b": np.arange(2)})
    assert storage.read_json(target) == {"a": 0.5, "b": [0, 1]}

    def half_then_fail(tmp):
        tmp.write_text('{"a": ')
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        storage.write_atomic(target, half_then_fail)
    assert storage.read_json(target) == {"a": 0.5, "b": [0, 1]}
    assert sorted(p.name for p in target.parent.iterdir()) == ["metrics.json"]


def test_the_same_array_is_the_same_bytes_and_checksum(tmp_path):
    array = np.arange(12, dtype=np.float32).reshape(3, 4)[:, ::2]  # not contiguous
    first, second = storage.save_npy(tmp_path / "a.npy", array), storage.save_npy(tmp_path / "b.npy", array.copy())
    assert first.read_bytes() == second.read_bytes()
    assert storage.sha256_file(first) == storage.sha256_file(second)
    np.testing.assert_array_equal(np.load(first), array)
    assert storage.partial_path(first).suffix == ".npy" and str(os.getpid()) in storage.partial_path(first).name


def test_a_write_that_would_not_fit_fails_before_it_starts(tmp_path, monkeypatch):
    usage = type("Usage", (), {"free": 5 << 20})
    monkeypatch.setattr(storage.shutil, "disk_usage", lambda folder: usage)
    storage.ensure_free_space(tmp_path, 4 << 20)
    with pytest.raises(OSError) as full:
        storage.ensure_free_space(tmp_path, 16 << 20)
    assert full.value.errno == errno.ENOSPC and "5 MB free, 16 MB needed" in str(full.value)
