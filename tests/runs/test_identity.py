"""What makes a run the same run: retired and introduced settings."""

from __future__ import annotations

from competition.runs.identity import same_run
from competition.training.settings import TrainSettings


def test_a_run_saved_with_a_retired_setting_at_its_neutral_value_is_the_same_run():
    today = {"settings": TrainSettings().to_dict(), "train_sha256": "a", "test_sha256": "b"}
    saved = {**today, "settings": {**today["settings"], "elastic": 0.0, "ema": False}}
    assert same_run(saved, today)
    bent = {**today, "settings": {**today["settings"], "elastic": 8.0}}  # trained otherwise than today's code
    assert not same_run(bent, today)


def test_a_run_saved_before_precise_bn_existed_is_continued_without_it():
    # Its config.json has no precise_bn: it was trained with the moving averages, and is continued so.
    today = {"settings": TrainSettings().to_dict(), "train_sha256": "a", "test_sha256": "b", "arrays_sha256": "c"}
    before = {**today, "settings": {k: v for k, v in today["settings"].items() if k != "precise_bn"}}
    old = TrainSettings.from_dict(before["settings"])
    assert old.precise_bn is False and TrainSettings().precise_bn is True
    assert "--no-precise-bn" in old.cli_options()
    assert not same_run(before, today) and not same_run(before, today, exact=True)
    off = {**today, "settings": {**today["settings"], "precise_bn": False}}
    assert same_run(before, off) and same_run(before, off, exact=True)
    # Continuing on this machine also takes the same thread count and cached arrays.
    assert not same_run(before, {**off, "arrays_sha256": "d"}, exact=True)
    assert not same_run(before, {**off, "settings": {**off["settings"], "cpu_threads": 7}}, exact=True)
    assert same_run(before, {**off, "settings": {**off["settings"], "cpu_threads": 7}})



def test_a_run_is_continued_with_the_workers_it_planned_whatever_this_machine_would_plan():
    # Saved before the plan existed (no cpu_workers), or planned for other workers: the same command
    # finds it, and its members train with its own plan (config.json).
    settings = TrainSettings(cpu_threads=1, cpu_workers=2).to_dict()
    config = {"settings": settings, "train_sha256": "t", "test_sha256": "s", "arrays_sha256": "a"}
    before = {**config, "settings": {k: v for k, v in settings.items() if k != "cpu_workers"}}
    assert same_run(before, config, exact=True)
    assert same_run({**config, "settings": {**settings, "cpu_workers": 1}}, config, exact=True)
