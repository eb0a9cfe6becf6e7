"""The kernels record: a round trip, and the older format read."""

from __future__ import annotations

import json

from competition.kaggle.record import Kernel, KernelRecord, State


def test_the_kernels_record_round_trips_and_reads_the_older_format(tmp_path):
    from competition.kaggle.record import KernelRecord, State

    record = KernelRecord(tmp_path)
    assert record.runs == {}  # none yet
    entry = record.entry("abc", "NvidiaTeslaT4")
    entry.kernels.append(Kernel("me/k-1", 0, 0, None, State.LIVE, 1.0))
    entry.kernels.append(Kernel("me/k-1-p2", 0, 1, "me/k-1", State.STOPPED, 2.0, seen_running=True))
    record.save()
    again = KernelRecord(tmp_path)
    assert again.runs == record.runs and again.runs["abc"].latest(0).ref == "me/k-1-p2"
    assert json.loads((tmp_path / ".kaggle-kernels.json").read_text())["abc"]["kernels"][0]["state"] == "live"
    # Written before kernels had shares and parts: one live kernel per share.
    older = {"old": {"accelerator": "NvidiaTeslaT4", "pushed": [{"ref": "me/a", "time": 5.0}, {"ref": "me/b"}]}}
    (tmp_path / ".kaggle-kernels.json").write_text(json.dumps({**older, "bad": {"kernels": "?"}}))
    converted = KernelRecord(tmp_path).runs
    assert list(converted) == ["old"]  # the entry that does not parse is dropped
    assert [(k.ref, k.share, k.part, k.state) for k in converted["old"].kernels] == [
        ("me/a", 0, 0, State.LIVE),
        ("me/b", 1, 0, State.LIVE),
    ]
    (tmp_path / ".kaggle-kernels.json").write_text("{not json")
    assert KernelRecord(tmp_path).runs == {}


def test_a_kernels_record_saved_by_an_earlier_version_reads_and_its_run_is_not_trained_again(saved_before):
    """The kernels record and the run it brought home, written before the package's layout changed:
    the record reads (and saves in today's format), and the same `train --on kaggle` command finds its
    run installed instead of pushing anything."""
    from tests.conftest import SAVED_KAGGLE_RUN, SAVED_OPTIONS, run_cli

    record = KernelRecord(saved_before / "ensembles")
    ((key, entry),) = record.runs.items()
    (kernel,) = entry.kernels
    assert (entry.accelerator, kernel.state, kernel.share, kernel.part) == ("NvidiaTeslaT4", State.DONE, 0, 0)
    record.save()
    assert KernelRecord(saved_before / "ensembles").runs == record.runs
    # No Kaggle to talk to here: a push would fail, so this passes only if nothing is pushed.
    again = run_cli("train", "--on", "kaggle", *SAVED_OPTIONS, "--precision", "float32", cwd=saved_before)
    assert again.returncode == 0 and "already trained on Kaggle" in again.stdout, again.output
    assert SAVED_KAGGLE_RUN in again.stdout
