"""Which rows a run trains on, validates on and predicts: the --holdout rows kept out first, then the
--subset of the rest, then the stratified folds. Pure functions of the labels and the settings, so the
same command cuts the same rows on any machine (and a lost folds.npy is rebuilt exactly)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from competition.errors import UserError
from competition.training.settings import TrainSettings


@dataclass(frozen=True)
class RunRows:
    """What a run trains on and predicts: its training rows (validated fold by fold), and the images
    its members predict as the test set: test.csv's, or in a --holdout run the held-out rows, whose
    labels only scoring reads."""

    images: np.ndarray
    labels: np.ndarray
    test_images: np.ndarray
    held_labels: np.ndarray | None = None
    held_rows: np.ndarray | None = None  # their row numbers in train.csv


def run_rows(settings: TrainSettings, dataset) -> RunRows:
    """The one place a run's rows are cut from the competition data (`data.Dataset`): the --holdout
    rows out first, then the first --subset of the rest (all with 0)."""
    images, labels = dataset.train_images, dataset.train_labels
    test_images, held_labels, held = dataset.test_images, None, None
    if settings.holdout:
        kept, held = holdout_split(labels, settings.holdout, settings.holdout_seed)
        test_images, held_labels = images[held], labels[held]
        images, labels = images[kept], labels[kept]
    available = len(images)
    if settings.subset > available:
        # config.json would say N rows while fewer were trained on.
        raise UserError(
            f"--subset {settings.subset:,} is more than train.csv's {available:,} rows"
            f"{' left after --holdout' if settings.holdout else ''}: use a smaller --subset, or 0 for all rows"
        )
    keep = slice(settings.subset or None)
    return RunRows(images[keep], labels[keep], test_images, held_labels, held)


def holdout_split(labels: np.ndarray, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept rows, held-out rows), each sorted: a stratified draw of `size` rows, the same for the same
    labels, size and seed, so two recipes measured with one seed are scored on the same rows."""
    from sklearn.model_selection import train_test_split

    classes = len(np.unique(labels))
    if not classes <= size <= len(labels) - classes:
        raise UserError(
            f"--holdout {size:,} must leave at least one row of every digit on each side of the split "
            f"of {len(labels):,} rows: use between {classes} and {len(labels) - classes:,}"
        )
    kept, held = train_test_split(
        np.arange(len(labels)), test_size=size, stratify=labels, random_state=seed, shuffle=True
    )
    return np.sort(kept), np.sort(held)


def make_folds(labels: np.ndarray, settings: TrainSettings) -> np.ndarray:
    """The fold of every row: a stratified split seeded by `split_seed`, so the same labels and settings
    give the same folds (what lets `Run.repair` rebuild a lost folds.npy)."""
    from sklearn.model_selection import StratifiedKFold

    splitter = StratifiedKFold(n_splits=settings.folds, shuffle=True, random_state=settings.split_seed)
    folds = np.empty(len(labels), dtype=np.int8)
    for fold, (_, val_rows) in enumerate(splitter.split(np.zeros(len(labels)), labels)):
        folds[val_rows] = fold
    return folds
