"""Progress: the ETA, and plain lines where there is no terminal."""

from __future__ import annotations

from competition.progress import RunProgress


def test_the_eta_follows_the_runs_average_pace_not_its_last_burst():

    now = [0.0]
    progress = RunProgress(100, quiet=False, get_time=lambda: now[0], terminal=True)
    eta, task = progress.progress.columns[-1], progress.progress.tasks[0]
    assert eta.render(task).plain == "-:--:--"  # nothing done yet and no estimate: no guess
    estimated = RunProgress(100, quiet=False, get_time=lambda: now[0], expected_seconds=500.0, terminal=True)
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


def test_without_a_terminal_plain_lines_say_the_share_done_and_the_time_left(capsys):
    """A notebook cell or a pipe gets a line as training starts (the estimate's time left, if there is
    one), one 5 s in, then one about every 30 s: share done, elapsed, time left at the average pace.
    No bar, no control characters; quiet prints none of them."""
    now = [0.0]
    progress = RunProgress(200, quiet=False, get_time=lambda: now[0], expected_seconds=600.0, terminal=False)
    assert progress.progress is None
    for second in range(1, 121):
        now[0] = float(second)
        progress.advance(1, "member 1/2 (fold 0, seed 0) epoch 1/3")
    lines = capsys.readouterr().out.splitlines()
    doing = " (member 1/2 (fold 0, seed 0) epoch 1/3)"
    assert lines == [
        "progress: 0% done, 0 s elapsed, about 10 min left (estimate)",
        "progress: 2% done, 5 s elapsed, about 3 min left" + doing,  # 5 steps in 5 s, 195 to go
        "progress: 5% done, 10 s elapsed, about 3 min left" + doing,
        "progress: 10% done, 20 s elapsed, about 3 min left" + doing,
        "progress: 20% done, 40 s elapsed, about 3 min left" + doing,
        "progress: 35% done, 70 s elapsed, about 2 min left" + doing,
        "progress: 50% done, 2 min elapsed, about 2 min left" + doing,  # then every 30 s
    ]
    assert not any("\x1b" in line or "\r" in line for line in lines)
    unknown = RunProgress(10, quiet=False, get_time=lambda: 0.0, terminal=False)
    assert unknown.plain is not None
    assert capsys.readouterr().out == "progress: 0% done, 0 s elapsed, time left: after the first steps\n"
    quiet = RunProgress(10, quiet=True, get_time=lambda: 0.0, terminal=False)
    quiet.advance(5, "x")
    assert capsys.readouterr().out == ""

