"""How far can more members go? Pools every trained member of one fold found in the given runs (any
recipe, same 5-fold split of all rows) and scores their averages on that fold's validation rows.

    python benchmarks/ceiling.py --workspace W RUN_DIR [RUN_DIR ...] --min-epochs 15 --picture hard.png

Prints each member's accuracy, the average of all of them, the mean (min-max) of averages of k members
drawn at random, and how many rows most members get wrong: rows that no recipe of this network gets
right are a floor under the error that more members, epochs or seeds cannot lower. --picture draws
the rows most often wrong, with their label and the pooled prediction. Nothing here is chosen on the
rows it scores except what it says it reports (the pool is every member trained, not the best ones).
See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", type=Path, nargs="+", help="run folders (ensembles/<run-id>)")
    parser.add_argument("--workspace", type=Path, required=True, help="a workspace with the data fetched")
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--min-epochs", type=int, default=15, help="leave out members trained shorter")
    parser.add_argument("--draws", type=int, default=300, help="random ensembles per size")
    parser.add_argument("--picture", type=Path, help="PNG of the rows most often wrong")
    args = parser.parse_args()

    os.environ["KAGGLE_MNIST_WORKSPACE"] = str(args.workspace.resolve())
    sys.path.insert(0, str(HERE.parent))
    from competition import data, ensemble
    from competition.runs import Run

    dataset = data.load()
    names, probs, rows = [], [], None
    for folder in args.runs:
        run = Run(folder.resolve())
        settings = run.settings
        if settings.folds != 5 or settings.subset or settings.epochs < args.min_epochs:
            continue
        for fold, seed_index in run.members:
            if fold != args.fold or not run.member_done(fold, seed_index):
                continue
            member_rows, member_probs, _ = run.member_predictions(fold, seed_index)
            if rows is not None and not np.array_equal(rows, member_rows):
                raise SystemExit(f"{run.id} was split differently: pool runs of one split only")
            rows = member_rows
            if any(np.array_equal(member_probs, earlier) for earlier in probs):
                continue  # the same member trained again (same seed and settings): count it once
            recipe = f"{settings.schedule} e{settings.epochs} b{settings.batch_size} d{settings.dropout_rate}"
            names.append(f"{run.id}/f{fold}-s{seed_index} ({recipe})")
            probs.append(member_probs)
    if len(probs) < 2:
        raise SystemExit("fewer than two members of that fold in those runs")
    pool, labels = np.stack(probs), dataset.train_labels[rows]
    singles = np.array([ensemble.accuracy(p, labels) for p in pool])
    for name, accuracy in zip(names, singles, strict=True):
        print(f"{accuracy:.3%}  {name}")
    result = {
        "fold": args.fold,
        "rows": int(len(rows)),
        "members": len(pool),
        "member_mean": float(singles.mean()),
        "member_min": float(singles.min()),
        "member_max": float(singles.max()),
        "all_together": ensemble.accuracy(pool.mean(axis=0), labels),
    }
    print(
        f"\n{len(pool)} members of fold {args.fold} ({len(rows):,} rows): alone {singles.mean():.3%} "
        f"({singles.min():.3%}-{singles.max():.3%}); all averaged {result['all_together']:.3%}"
    )
    rng = np.random.default_rng(0)
    for k in (2, 3, 5, 10, 20):
        if k >= len(pool):
            break
        draws = [
            ensemble.accuracy(pool[rng.choice(len(pool), k, replace=False)].mean(axis=0), labels)
            for _ in range(args.draws)
        ]
        result[f"random_{k}"] = [float(np.mean(draws)), float(np.min(draws)), float(np.max(draws))]
        print(f"  {k:>2} members at random: {np.mean(draws):.3%} ({np.min(draws):.3%}-{np.max(draws):.3%})")
    wrong = (pool.argmax(axis=2) != labels).mean(axis=0)  # per row: the share of members wrong on it
    for share in (1.0, 0.5, 0.1):
        count = int(np.sum(wrong >= share))
        result[f"rows_wrong_in_{share:.0%}_of_members"] = count
        print(f"  rows wrong for at least {share:.0%} of the members: {count} ({count / len(rows):.3%})")
    print(json.dumps(result))
    if args.picture:
        from matplotlib.figure import Figure

        order = np.argsort(-wrong, kind="stable")[:36]
        pooled = pool.mean(axis=0).argmax(axis=1)
        figure = Figure(figsize=(11, 5.8))
        axes = figure.subplots(4, 9)
        for ax, i in zip(axes.flat, order, strict=False):
            ax.imshow(dataset.train_images[rows[i]], cmap="gray_r")
            ax.set_axis_off()
            ax.set_title(f"label {labels[i]}, said {pooled[i]}\n{wrong[i]:.0%} wrong", fontsize=8)
        figure.suptitle(
            f"Fold {args.fold}: the 36 validation rows most often wrong, {len(pool)} members", fontsize=10
        )
        figure.tight_layout()
        figure.savefig(args.picture, dpi=80)
        print(f"picture: {args.picture}")


if __name__ == "__main__":
    main()
