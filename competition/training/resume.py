"""What makes an interrupted member of `kaggle-mnist train` resume to exactly the numbers of an
uninterrupted one: every epoch a pure function of (member seed, epoch), and a backup that holds all the
training state, written so that a kill at any instant leaves a complete earlier backup behind.

Keras' own `BackupAndRestore` restores weights, optimizer and epoch, but not the random generators
behind augmentation and dropout, not the shuffle order, and not the counters of ReduceLROnPlateau,
EarlyStopping or ModelCheckpoint; and it writes weights and epoch number one after the other, so a kill
between the two resumes from the wrong epoch. Also the input path those batches (and every prediction)
take into Keras: `feed`, `predict_rows`. Import after `backend.select(...)`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import keras
import numpy as np

from competition import storage
from competition.runs.folder import BACKUP_MARGIN_BYTES

# The attributes that carry a callback's memory from one epoch to the next (Keras 3 names).
_CALLBACK_STATE = ("wait", "best", "best_epoch", "stopped_epoch", "cooldown_counter")


class EpochBatches(keras.utils.PyDataset):
    """Shuffled mini-batches of the in-memory uint8 arrays, the order fixed by (seed, epoch)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, batch_size: int, seed: int):
        super().__init__()
        self.images, self.labels, self.batch_size, self.seed = images, labels, batch_size, seed
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.order = np.random.default_rng([self.seed, epoch]).permutation(len(self.labels))

    def __len__(self) -> int:
        return -(-len(self.labels) // self.batch_size)

    def __getitem__(self, index: int):
        rows = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        return self.images[rows], self.labels[rows]


class Rows(keras.utils.PyDataset):
    """Rows in order, `batch_size` at a time, with their labels if given: what `predict` (and the
    per-epoch validation) read through `feed`."""

    def __init__(self, images: np.ndarray, batch_size: int, labels: np.ndarray | None = None):
        super().__init__()
        self.images, self.labels, self.batch_size = images, labels, batch_size

    def __len__(self) -> int:
        return -(-len(self.images) // self.batch_size)

    def __getitem__(self, index: int):
        rows = slice(index * self.batch_size, (index + 1) * self.batch_size)
        return self.images[rows] if self.labels is None else (self.images[rows], self.labels[rows])


def feed(batches: keras.utils.PyDataset):
    """What `fit` and `predict` read `batches` through: on TensorFlow, a tf.data pipeline over the same
    batches in the same order, with tf.data's autotuning off; other backends read the PyDataset itself.

    Keras wraps a PyDataset (and arrays) in a pipeline with autotuning on. Its optimiser thread sleeps in
    growing periods (0.32 s, 0.64 s, 1.28 s ...) and the teardown of every iterator waits for its next
    wake-up, idle: up to about a second each time, and Keras makes two iterators per epoch and one per
    `predict`. On a CPU that was a third of the wall time of a short `fit` (benchmarks/README.md, "tf.data
    autotuning off"). One prefetched batch keeps an accelerator fed while the next is sliced."""
    if keras.backend.backend() != "tensorflow":
        return batches
    import tensorflow as tf

    first = batches[0]
    parts = first if isinstance(first, tuple) else (first,)
    signature = tuple(tf.TensorSpec((None, *a.shape[1:]), a.dtype) for a in parts)
    dataset = tf.data.Dataset.from_generator(
        lambda: (batches[i] for i in range(len(batches))),
        output_signature=signature if isinstance(first, tuple) else signature[0],
    )
    # A known length, as Keras has for a PyDataset: progress, and no probing for the end of an epoch.
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(len(batches))).prefetch(1)
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


def predict_rows(model: keras.Model, images: np.ndarray, batch_size: int = 1024, **kwargs) -> np.ndarray:
    """`model.predict` over `images` in order, `batch_size` at a time, through `feed`."""
    return model.predict(feed(Rows(images, batch_size)), verbose=0, **kwargs)


class EpochSeeds(keras.callbacks.Callback):
    """Reseeds the shuffle and every seed generator (augmentation, dropout) at the start of each epoch,
    so an epoch's randomness does not depend on what ran before it in this process."""

    def __init__(self, batches: EpochBatches, seed: int):
        super().__init__()
        self.batches, self.seed = batches, seed

    def on_epoch_begin(self, epoch, logs=None):
        self.batches.set_epoch(epoch)
        reseed(self.model, self.seed, epoch)


def reseed(model: keras.Model, seed: int, epoch: int) -> None:
    """Every seed generator of `model` (augmentation, dropout) set from (seed, epoch) alone: what it
    draws next does not depend on what it drew before."""
    generators = [v for v in model.non_trainable_variables if v.path.endswith("seed_generator_state")]
    for i, state in enumerate(generators):
        mixed = np.random.SeedSequence([seed, epoch, i]).generate_state(1)[0]
        state.assign(np.array([mixed, 0], dtype=state.dtype))


class ExactBackup(keras.callbacks.BackupAndRestore):
    """BackupAndRestore that also keeps the other callbacks' counters (and EarlyStopping's best weights)
    and swaps whole backup folders, so the backup on disk is always one complete epoch.

    Put it last in the callback list: it must see an epoch only after the others have updated their
    state, and restore that state after their `on_train_begin` has reset it.
    """

    def __init__(self, backup_dir: Path, stateful: list[keras.callbacks.Callback]):
        super().__init__(str(backup_dir))
        self.root = Path(backup_dir)
        self.stateful = stateful

    def on_train_begin(self, logs=None):
        shutil.rmtree(self.root / "next", ignore_errors=True)  # a kill mid-save: incomplete, unused
        for name in ("current", "previous"):  # "previous" exists only after a kill mid-swap
            folder = self.root / name
            if (folder / "state.json").is_file():
                if self._intact(folder):
                    self._restore(folder)
                    return
                # Checked before anything is loaded, so the fresh model and optimizer are untouched.
                print(f"{folder} is damaged (its checksums do not match); not resuming from it", flush=True)
        if self.root.exists():
            print(f"{self.root}: no intact backup; training this member from its first epoch", flush=True)
            shutil.rmtree(self.root, ignore_errors=True)

    @staticmethod
    def _intact(folder: Path) -> bool:
        """Every file the backup's state.json lists, with the sha256 recorded when it was written."""
        try:
            state = json.loads((folder / "state.json").read_text())
            files = state["files"]
            return all(storage.sha256_file(folder / name) == digest for name, digest in files.items())
        except (OSError, ValueError, KeyError, TypeError):
            return False

    def on_epoch_end(self, epoch, logs=None):
        self._save(epoch + 1)

    def on_train_end(self, logs=None):
        # Keras deletes the backup here. It must outlive fit: the caller deletes it once the member's
        # model.keras is saved, so a kill in between resumes from the last epoch, not from scratch.
        pass

    def _save(self, epochs_done: int) -> None:
        storage.ensure_free_space(self.root.parent, BACKUP_MARGIN_BYTES)
        staging = self.root / "next"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        self.model.save_weights(staging / "latest.weights.h5")  # weights and optimizer state
        states = []
        for i, callback in enumerate(self.stateful):
            state = {k: _plain(getattr(callback, k)) for k in _CALLBACK_STATE if hasattr(callback, k)}
            weights = getattr(callback, "best_weights", None)
            if weights is not None:
                np.savez(staging / f"best_weights-{i}.npz", *weights)
            states.append(state)
        state = {
            "epochs_done": epochs_done,
            "stopped": bool(self.model.stop_training),
            "callbacks": states,
            "files": {p.name: storage.sha256_file(p) for p in sorted(staging.iterdir())},
        }
        (staging / "state.json").write_text(json.dumps(state))  # last: marks the folder complete
        current, previous = self.root / "current", self.root / "previous"
        if current.exists():
            current.rename(previous)
        staging.rename(current)
        shutil.rmtree(previous, ignore_errors=True)

    def _restore(self, folder: Path) -> None:
        state = json.loads((folder / "state.json").read_text())
        if not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        self.model.load_weights(folder / "latest.weights.h5")
        for i, (callback, saved) in enumerate(zip(self.stateful, state["callbacks"], strict=True)):
            for key, value in saved.items():
                setattr(callback, key, value)
            best = folder / f"best_weights-{i}.npz"
            if best.is_file():
                with np.load(best) as arrays:
                    callback.best_weights = [arrays[f"arr_{j}"] for j in range(len(arrays.files))]
        # A member that early-stopped before the kill has nothing left to train; fit then runs no epoch
        # and on_train_end still restores EarlyStopping's best weights.
        self.model._initial_epoch = self.params["epochs"] if state["stopped"] else state["epochs_done"]


def _plain(value):
    """A callback counter as a JSON value (numpy scalars become floats; json keeps +-Infinity)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    return float(value)
