"""The CPU time estimate: its arithmetic, and that train prints it and keeps it beside the real time."""

from __future__ import annotations

import pytest

from competition import backend, storage
from competition.progress import duration
from competition.training.settings import TrainSettings
from tests.conftest import TINY

backend.select("tensorflow")

from competition.training import estimate  # noqa: E402
from competition.training import train as training  # noqa: E402


def test_time_estimate_adds_epochs_predictions_and_fixed_costs():
    # 2 members x (3 epochs x 1,000 rows at 100/s + 500 scored rows at 250/s + 4 s) = 2 x 36 s
    assert estimate.estimate_seconds(2, 3, 1000, 500, 100.0, 250.0, 4.0) == pytest.approx(72.0)


def test_the_cpu_estimate_is_printed_and_kept_beside_the_real_time(tiny_data, monkeypatch, capsys):
    # Normally only for runs of 300,000 images or more; here on 150 rows per member, repeated into full
    # timed batches.
    monkeypatch.setattr(estimate, "ESTIMATE_MIN_IMAGES", 0)
    calls, said = [], []
    real = estimate.estimate_seconds

    def spy(*args, **kwargs):
        calls.append(args)
        said.append(real(*args, **kwargs))
        return said[-1]

    monkeypatch.setattr(estimate, "estimate_seconds", spy)
    run_dir = training.train(TrainSettings(**{**TINY, "subset": 300}), quiet=True)
    # 2 members of 1 epoch on the other fold's 150 rows, each scoring its own 150 rows once and the 40
    # test rows, in one process.
    members, epochs, train_rows, scored_rows, *_ = calls[0]
    assert (members, epochs, train_rows, scored_rows) == (2, 1, 150, 150 + 40)
    out = capsys.readouterr().out
    assert f"No GPU found: 2 members x 1 epochs on this CPU take about {duration(said[0])}" in out
    # Kept beside the real time: the estimate plus what the command had spent before it, which is part
    # of the command's wall time too.
    metrics = storage.read_json(run_dir / "metrics.json")
    assert said[0] < metrics["estimated_seconds"] < said[0] + metrics["wall_seconds"]
    assert metrics["workers"] == 1


def test_time_estimate_with_workers_lasts_as_long_as_the_busiest_share():
    # 3 members on 2 workers: one worker trains 2 of them, so the run takes 2 members' time.
    assert estimate.estimate_seconds(3, 3, 1000, 500, 100.0, 250.0, 4.0, workers=2) == pytest.approx(72.0)
    assert estimate.estimate_seconds(4, 3, 1000, 500, 100.0, 250.0, 4.0, workers=4) == pytest.approx(36.0)


def test_a_last_round_alone_is_priced_at_the_faster_rate_of_more_threads():
    # 5 members on 2 workers: 2 rounds of 36 s, then the fifth alone on both cores, 1.5x as fast.
    seconds = estimate.estimate_seconds(5, 3, 1000, 500, 100.0, 250.0, 4.0, workers=2, alone=1)
    assert seconds == pytest.approx(2 * 36.0 + 36.0 / estimate.ALONE_SPEEDUP)
