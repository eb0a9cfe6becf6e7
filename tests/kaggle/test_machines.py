"""Kaggle's GPU machines: the estimate printed before a push."""

from __future__ import annotations

import pytest

from competition.kaggle import machines
from competition.training.settings import TrainSettings


def test_the_gpu_estimate_prices_a_wider_network_by_its_multiply_adds():
    # bncnn at 1.5x and 2x width costs 2.24x and 3.97x the training FLOPs of width 1
    # (test_model.test_every_network_trains_and_prices_itself): width^2, within 1%.
    start = machines.KERNEL_START_SECONDS
    plain = TrainSettings(seeds=2, width=1.0).resolved(gpu=True)
    base = machines.gpu_seconds(plain, 33_600, "NvidiaTeslaT4") - start
    assert base == pytest.approx(10 * 20 * 33_600 / machines.GPU_IMAGES_PER_SECOND["NvidiaTeslaT4"])
    for width in (1.5, 2.0):
        wide = TrainSettings(seeds=2, width=width).resolved(gpu=True)
        assert machines.gpu_seconds(wide, 33_600, "NvidiaTeslaT4") - start == pytest.approx(width**2 * base)
    line = machines.estimate_line(3600.0, "NvidiaTeslaT4", 1, 1.5)
    assert "over 1.5^2 at width 1.5" in line
    assert "width" not in machines.estimate_line(3600.0, "NvidiaTeslaT4", 1)

