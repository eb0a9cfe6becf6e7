"""What makes a run the same run: its resolved settings and the data it trains on. config.json holds
it; `train` continues the run whose identity matches, and a run trained on Kaggle is checked against it
when it comes home. Keras-free."""

from __future__ import annotations

from competition.training.settings import INTRODUCED, RETIRED, TrainSettings


def make_identity(settings: TrainSettings, dataset) -> dict:
    """What makes a run the same run: its (resolved) settings and the data it trains on. config.json
    holds it; the same command finds its unfinished run by it, and a run trained on Kaggle is checked
    against it when it comes home."""
    return {
        "settings": settings.to_dict(),
        "train_sha256": dataset.train_sha256,
        "test_sha256": dataset.test_sha256,
        "arrays_sha256": dataset.arrays_sha256,  # the cached arrays actually trained on
    }


def same_run(config: dict, identity: dict, exact: bool = False) -> bool:
    """A run's config.json against an identity: the same settings on the same CSVs. `exact` (a run
    continued on this machine): also the same CPU thread count and cached arrays; without it (a run
    trained elsewhere), not those, which a GPU run never uses and another machine cannot know."""

    def settings(values: dict) -> dict:
        # A run saved before a setting existed trained as the code of its day (INTRODUCED, else the
        # default); one saved with a setting since retired, at the value that trains as today's code,
        # is today's.
        every = {**TrainSettings().to_dict(), **INTRODUCED, **values["settings"]}
        retired = {k for k, v in every.items() if k in RETIRED and v == RETIRED[k]}
        # cpu_workers only plans which members get more threads; a run is continued with its own plan
        # (the workers read config.json), so a run planned before the plan existed, or on a machine
        # that chose another, is still the same command's run.
        machine = ("cpu_workers",) if exact else ("cpu_threads", "cpu_workers")
        return {k: v for k, v in every.items() if k not in machine and k not in retired}

    keys = ("train_sha256", "test_sha256", *(("arrays_sha256",) if exact else ()))
    same_data = all(config.get(k) == identity.get(k) for k in keys)
    return same_data and settings(config) == settings(identity)
