"""`kaggle-mnist predict [RUN]`: the ensemble's test predictions as submission.csv.

The plain mean of the members' softmax outputs, or with `--tta` the mean over small shifts of every
image as well. Whether TTA is used is decided fold by fold on the *other* folds' out-of-fold rows, so
the accuracy reported is never fitted on the rows it is measured on; if that still scores below the
plain mean, the plain mean is kept.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from competition import data, ensemble, storage, submission
from competition.settings import TrainSettings

# One-pixel shifts (no flips: a flipped 6 is a 9); each adds one forward pass per member.
TTA_SHIFTS = ((0, 1), (0, -1), (1, 0), (-1, 0))


def shift_images(images: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Moves (N, H, W) images by whole pixels, filling with black (MNIST's background)."""
    out = np.zeros_like(images)
    h, w = images.shape[1:3]
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[:, yd, xd] = images[:, ys, xs]
    return out


def choose_per_fold(
    candidates: dict[str, np.ndarray], labels: np.ndarray, folds: np.ndarray
) -> tuple[np.ndarray, dict]:
    """For each fold, the candidate blend that is most accurate on the other folds' rows.

    Returns the stitched out-of-fold probabilities and the choice per fold.
    """
    chosen = np.empty_like(next(iter(candidates.values())))
    choice = {}
    for fold in np.unique(folds):
        inside, outside = folds == fold, folds != fold
        best = max(candidates, key=lambda name: ensemble.accuracy(candidates[name][outside], labels[outside]))
        chosen[inside] = candidates[best][inside]
        choice[str(int(fold))] = best
    return chosen, choice


def predict(run: str | None = None, tta: bool = False, log: Callable[[str], None] = print) -> dict:
    from competition import train as training  # imports keras: only once the backend is chosen

    run_dir = training.resolve_run(run)
    settings = TrainSettings.from_dict(storage.read_json(run_dir / "config.json")["settings"])
    metrics = storage.read_json(run_dir / "metrics.json")
    labels = np.load(run_dir / "oof_labels.npy")
    folds = np.load(run_dir / "folds.npy")
    plain_oof = np.load(run_dir / "oof_probs.npy")
    plain_test = np.load(run_dir / "test_probs.npy")
    plain_accuracy = ensemble.accuracy(plain_oof, labels)

    oof, test, note, name = plain_oof, plain_test, "plain mean", run_dir.name
    if tta:
        tta_oof, tta_test = _tta(run_dir, settings, log)
        chosen_oof, choice = choose_per_fold({"mean": plain_oof, "tta": tta_oof}, labels, folds)
        if ensemble.accuracy(chosen_oof, labels) >= plain_accuracy and "tta" in choice.values():
            oof, note, name = chosen_oof, f"TTA chosen on other folds: {choice}", f"{run_dir.name}-tta"
            # The test rows belong to no fold: use TTA if most folds chose it.
            test = tta_test if list(choice.values()).count("tta") * 2 > len(choice) else plain_test
        else:
            note = "TTA did not beat the plain mean out of fold; kept the plain mean"
    path = submission.write(test, run_dir.name, name)
    result = {
        "run_id": run_dir.name,
        "file": str(path),
        "oof_accuracy": ensemble.accuracy(oof, labels),
        "plain_mean_accuracy": plain_accuracy,
        "members": len(metrics["members"]),
        "changed_vs_mean": submission.changed_predictions(test, plain_test),
        "blend": note,
    }
    log(
        f"Wrote {path} and submission.csv: {result['members']} members, {note}; out-of-fold accuracy "
        f"{result['oof_accuracy']:.4%} (plain mean {plain_accuracy:.4%}); "
        f"{result['changed_vs_mean']} test predictions differ from the plain mean"
    )
    return result


def _tta(run_dir, settings: TrainSettings, log) -> tuple[np.ndarray, np.ndarray]:
    import keras

    dataset = data.load()
    images = dataset.train_images[: settings.subset or None]
    oof_parts, tests = [], []
    for fold, seed_index in settings.members:
        folder = run_dir / "members" / f"f{fold}-s{seed_index}"
        model = keras.models.load_model(folder / "model.keras")
        with np.load(folder / "oof.npz") as saved:
            rows, probs = saved["rows"], saved["probs"]
        oof_views, test_views = [probs], [np.load(folder / "test.npy")]
        for dy, dx in TTA_SHIFTS:
            oof_views.append(model.predict(shift_images(images[rows], dy, dx), batch_size=1024, verbose=0))
            test_views.append(
                model.predict(shift_images(dataset.test_images, dy, dx), batch_size=1024, verbose=0)
            )
        oof_parts.append((rows, ensemble.average(oof_views)))
        tests.append(ensemble.average(test_views))
        log(f"TTA: member {folder.name} done")
    oof, _ = ensemble.out_of_fold(oof_parts, len(images))
    return oof, ensemble.average(tests)
