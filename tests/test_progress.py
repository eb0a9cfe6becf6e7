"""The progress bar's ETA."""

from __future__ import annotations

from competition import backend
from competition.progress import RunProgress

backend.select("tensorflow")


def test_the_eta_follows_the_runs_average_pace_not_its_last_burst():

    now = [0.0]
    progress = RunProgress(100, quiet=False, get_time=lambda: now[0])
    eta, task = progress.progress.columns[-1], progress.progress.tasks[0]
    assert eta.render(task).plain == "-:--:--"  # nothing done yet and no estimate: no guess
    estimated = RunProgress(100, quiet=False, get_time=lambda: now[0], expected_seconds=500.0)
    now[0] = 20.0
    assert eta.render(estimated.progress.tasks[0]).plain == "0:08:00"  # the estimate, counting down
    now[0] = 60.0
    progress.set(10, "2 members training")
    now[0] = 61.0
    progress.set(12, "2 members training")  # both workers ended an epoch within a second
    # 12 steps in 61 s, 88 to go: 447 s. (The last second's pace would say 44 s.)
    assert eta.render(task).plain == "0:07:27"
    now[0] = 71.0
    progress.set(12, "2 members training")  # no new steps: it counts down from the last count
    assert eta.render(task).plain == "0:07:17"
    progress.set(100, "done")
    assert eta.render(task).plain == "0:00:00"
