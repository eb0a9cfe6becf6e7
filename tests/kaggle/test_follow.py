"""Following kernels: the live log's latest progress line."""

from __future__ import annotations

from competition.kaggle import follow


def test_the_log_stream_keeps_the_latest_progress_or_member_line():
    log = [
        "Training 2 members into",
        "progress: 0% done, 0 s elapsed, time left: after the first steps",
        "member 1/2 (fold 0, seed 0): val acc 99.1000% in 4 s",
        "progress: 75% done, 8 s elapsed, about 3 s left",
        "Epoch 2/2",
    ]

    shown = [0]  # lines the kernel has logged so far

    def stream(ref):  # the client's stream: server-sent events, one per log line
        yield from ({"data": line + "\n"} for line in log[: shown[0]])

    streams = follow.LogStreams(stream)
    assert streams.can_stream and streams.latest() == ""
    seen = []
    for upto in range(1, len(log) + 1):
        shown[0] = upto
        streams.read("me/kernel")  # what the background thread does, here in step
        seen.append(streams.latest())
    assert seen == ["", log[1], log[2], log[3], log[3]]

