"""Pseudo-labelling, measured honestly on one fold: does a member trained on its fold's training rows
plus test rows labelled by *that fold's own* earlier members score better on the fold's validation rows?

    python benchmarks/pseudo.py --workspace W --labellers W/ensembles/<run> --epochs 15 --seed-index 0
    python benchmarks/pseudo.py --workspace W --labellers W/ensembles/<run> --epochs 15 --seed-index 0 --no-pseudo

W is a workspace with the data fetched (`KAGGLE_MNIST_WORKSPACE`); <run> a run (complete or not) whose
members f<fold>-s* are trained: their test probabilities, averaged, label the test rows, and rows whose
averaged top probability is below --threshold (fixed beforehand, not tuned on any fold) are left out.
The labellers never saw this fold's validation rows, so the score on them stays an honest out-of-fold
figure. The member is built, seeded and trained exactly as `kaggle-mnist train` builds, seeds and trains
member f<fold>-s<seed-index> (same settings, same folds, same per-epoch reseeding); only the training
rows differ. Appends one JSON line to benchmarks/pseudo.jsonl. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workspace", type=Path, required=True, help="workspace with the data fetched")
    parser.add_argument("--labellers", type=Path, required=True, help="run folder whose fold members label")
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--seed-index", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--threshold", type=float, default=0.99)
    parser.add_argument("--no-pseudo", action="store_true", help="the same member without test rows")
    parser.add_argument("--results", type=Path, default=HERE / "pseudo.jsonl")
    parser.add_argument(
        "--probs", type=Path, help="also save the fold's probabilities here (.npz: rows, probs)"
    )
    args = parser.parse_args()

    os.environ["KAGGLE_MNIST_WORKSPACE"] = str(args.workspace.resolve())
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.path.insert(0, str(HERE.parent))
    from competition import backend

    backend.select("tensorflow")
    import keras
    import numpy as np

    from competition import data, ensemble
    from competition import train as training
    from competition.resume import EpochBatches, EpochSeeds, feed, predict_rows
    from competition.runs import Run, member_name
    from competition.settings import TrainSettings

    labellers = Run(args.labellers.resolve())
    folds = labellers.array("folds.npy")
    # Each trained member of the fold, read through the run's checksums: (validation rows, their
    # probabilities, test probabilities).
    found = {
        member_name(args.fold, s): labellers.member_predictions(args.fold, s)
        for s in range(labellers.settings.seeds)
        if labellers.member_done(args.fold, s)
    }
    if not found:
        raise SystemExit(f"no trained member of fold {args.fold} in {labellers.dir}")

    dataset = data.load()
    images, labels = dataset.train_images, dataset.train_labels
    if len(folds) != len(labels):
        raise SystemExit("the labellers' run trained on a subset: use a run over all rows")
    train_rows, val_rows = np.flatnonzero(folds != args.fold), np.flatnonzero(folds == args.fold)
    settings = TrainSettings(epochs=args.epochs, cpu_threads=len(os.sched_getaffinity(0)))
    settings = settings.resolved(gpu=False, cpu_bfloat16=backend.cpu_bfloat16())
    training._configure_device(settings, [])

    x, y = images[train_rows], labels[train_rows]
    kept, labeller_accuracy = 0, []
    if not args.no_pseudo:
        probs = np.mean([test for _, _, test in found.values()], axis=0)
        keep = probs.max(axis=1) >= args.threshold
        kept = int(keep.sum())
        x = np.concatenate([x, dataset.test_images[keep]])
        y = np.concatenate([y, probs[keep].argmax(axis=1).astype(y.dtype)])
        # How good the labellers are, on rows they never saw.
        labeller_accuracy = [ensemble.accuracy(p, labels[r]) for r, p, _ in found.values()]

    seed = settings.member_seed(args.fold, args.seed_index)
    keras.utils.set_random_seed(seed)
    model = training._build(settings)
    batches = EpochBatches(x, y, settings.batch_size, seed)
    model.compile(
        optimizer=training._optimizer(settings, len(batches)),
        loss=training._loss(settings),
        metrics=["accuracy"],
    )
    started = time.perf_counter()
    model.fit(
        feed(batches), epochs=settings.epochs, shuffle=False, callbacks=[EpochSeeds(batches, seed)], verbose=0
    )
    seconds = time.perf_counter() - started
    oof = predict_rows(model, images[val_rows], training.PREDICT_BATCH)
    if args.probs:
        np.savez(args.probs, rows=val_rows, probs=oof.astype(np.float32))
    result = {
        "fold": args.fold,
        "seed_index": args.seed_index,
        "epochs": args.epochs,
        "pseudo": not args.no_pseudo,
        "threshold": None if args.no_pseudo else args.threshold,
        "labellers": f"{labellers.id}: {', '.join(found)}",
        "labeller_val_accuracy": labeller_accuracy,
        "pseudo_rows": kept,
        "train_rows": int(len(y)),
        "val_rows": int(len(val_rows)),
        "val_accuracy": ensemble.accuracy(oof, labels[val_rows]),
        "seconds": round(seconds, 1),
        "images_per_second": round(len(y) * settings.epochs / seconds, 1),
        "settings": {
            k: v
            for k, v in settings.to_dict().items()
            if k in ("batch_size", "learning_rate", "schedule", "precision", "cpu_threads", "dropout_rate")
        },
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    with open(args.results, "a") as handle:
        handle.write(json.dumps(result) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
