"""The settings resolved for the device, and every setting as an option."""

from __future__ import annotations

import pytest

from competition.training.settings import TrainSettings
from tests.conftest import assert_clean_failure, run_cli


def test_automatic_batch_size_and_learning_rate():
    cpu, gpu = TrainSettings().resolved(gpu=False), TrainSettings().resolved(gpu=True)
    assert (cpu.batch_size, cpu.learning_rate) == (64, 2e-3)  # the cosine schedule's peak
    assert gpu.batch_size == 256 and gpu.learning_rate == pytest.approx(4e-3)
    old = TrainSettings(schedule="exponential").resolved(gpu=False)
    assert (old.batch_size, old.learning_rate) == (64, 1e-3)  # the 2018 recipe
    mine = TrainSettings(batch_size=32, learning_rate=5e-4).resolved(gpu=True)
    assert (mine.batch_size, mine.learning_rate) == (32, 5e-4)  # given values are kept
    assert TrainSettings(batch_size=16).resolved(gpu=False).learning_rate == pytest.approx(1e-3)
    # No room for a warmup epoch in a 1-epoch run; given longer warmups are cut to leave one epoch.
    assert TrainSettings(epochs=1).resolved(gpu=False).warmup_epochs == 0
    assert TrainSettings(epochs=3, warmup_epochs=5).resolved(gpu=False).warmup_epochs == 2
    with pytest.raises(ValueError, match="--warmup-epochs must be 0 or more"):
        TrainSettings(warmup_epochs=-1)
    with pytest.raises(ValueError, match="--dropout must be at least 0 and below 1"):
        TrainSettings(dropout_rate=1.0)
    # A changed dropout is part of the command that trains the run again (config.json -> options).
    assert "--dropout 0.25" in TrainSettings(dropout_rate=0.25).cli_options()


def test_automatic_precision_and_epoch_validation():
    cpu = TrainSettings().resolved(gpu=False, cpu_bfloat16=False)
    assert (cpu.precision, cpu.epoch_validation) == ("float32", False)
    assert TrainSettings().resolved(gpu=False, cpu_bfloat16=True).precision == "bfloat16"
    # Only oneDNN (the TensorFlow backend) makes bfloat16 fast on a CPU.
    assert TrainSettings(backend="jax").resolved(gpu=False, cpu_bfloat16=True).precision == "float32"
    gpu = TrainSettings().resolved(gpu=True, cpu_bfloat16=True)
    assert (gpu.precision, gpu.epoch_validation) == ("mixed", True)
    assert TrainSettings(precision="float32").resolved(gpu=True).precision == "float32"  # given: kept
    assert TrainSettings(epoch_validation=True).resolved(gpu=False).epoch_validation is True
    assert TrainSettings(epoch_validation=False).resolved(gpu=True).epoch_validation is False
    # The plateau schedule and early stopping read every epoch's validation score.
    assert TrainSettings(schedule="plateau", epoch_validation=False).resolved(gpu=False).epoch_validation
    assert TrainSettings(early_stopping=3).resolved(gpu=False).epoch_validation is True
    with pytest.raises(ValueError, match="--precision must be one of"):
        TrainSettings(precision="float16")


def test_augmentation_ranges_are_options_of_train_and_run(tmp_path):
    # A run trained with other ranges says so in the command that trains it again.
    options = TrainSettings(rotation_degrees=5.0, zoom=0.05, shift=0.05).cli_options()
    assert {"--rotation 5.0", "--zoom 0.05", "--shift 0.05"} <= set(options)
    assert not any(o.startswith(("--rotation", "--zoom", "--shift")) for o in TrainSettings().cli_options())
    with pytest.raises(ValueError, match="--zoom and --shift at least 0 and below 1"):
        TrainSettings(shift=1.0)
    # Both commands take them, and refuse a bad range in one line before anything is loaded or fetched.
    for command in ("train", "run"):
        result = run_cli(command, "--rotation", "5", "--zoom", "0.05", "--shift", "-0.1", cwd=tmp_path)
        assert result.returncode == 1
        assert_clean_failure(result)
        assert result.stderr.strip() == (
            "error: --rotation must be 0 or more, --zoom and --shift at least 0 and below 1"
        )
        assert not (tmp_path / "data").exists()



def test_the_last_round_that_leaves_workers_idle_gets_their_threads():
    def threads(**options):
        settings = TrainSettings(**options)
        return [settings.member_threads(m) for m in settings.members]

    assert threads(folds=5, seeds=1, cpu_threads=1, cpu_workers=2) == [1, 1, 1, 1, 2]
    assert threads(folds=3, seeds=1, cpu_threads=2, cpu_workers=2) == [2, 2, 4]
    assert threads(folds=3, seeds=2, cpu_threads=1, cpu_workers=4) == [1, 1, 1, 1, 2, 2]
    assert threads(folds=5, seeds=2, cpu_threads=1, cpu_workers=2) == [1] * 10  # every round full
    assert threads(folds=5, seeds=1) == [0] * 5  # a GPU run: the device's own
    # A run saved before the last round had the cores planned none: its members keep their count.
    saved = TrainSettings(folds=5, seeds=1, cpu_threads=1).to_dict()
    del saved["cpu_workers"]
    old = TrainSettings.from_dict(saved)
    assert [old.member_threads(m) for m in old.members] == [1] * 5


def test_a_run_of_the_default_before_it_changed_is_continued_as_it_was_trained():
    # 10 members at 1x width, the default until 5 at 1.5x replaced it: its saved config.json holds every
    # setting, and the command that continues it names what is no longer the default.
    before = TrainSettings(seeds=2, width=1.0)
    assert {"--seeds 2", "--width 1.0"} <= set(before.cli_options())
    # Saved before --width existed: the published network, not today's default width.
    saved = before.to_dict()
    del saved["width"]
    assert TrainSettings.from_dict(saved).width == 1.0
