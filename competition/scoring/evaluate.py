"""`kaggle-mnist evaluate [RUN]`: how good the ensemble is, and where it goes wrong, from its
out-of-fold predictions (every training row predicted by members that never trained on it)."""

from __future__ import annotations

import numpy as np
from rich.table import Table
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from competition.runs.folder import Run
from competition.scoring import ensemble

DIGITS = list(range(10))


def evaluate(run: str | None = None) -> dict:
    """The run's out-of-fold scores: ensemble, folds, members, per digit, and the confusion matrix."""
    found = Run.open(run)
    probs, labels = found.oof()
    metrics = found.metrics
    return {
        "run_id": found.id,
        "run_dir": str(found.dir),
        **scores(probs, labels),
        "members": [
            {k: m[k] for k in ("name", "fold", "seed_index", "val_accuracy")} for m in metrics["members"]
        ],
        "fold_accuracy": metrics["fold_accuracy"],
    }


def scores(probs: np.ndarray, labels: np.ndarray) -> dict:
    """Accuracy, per-digit precision/recall/F1/support and the confusion matrix (rows: true digit)."""
    predicted = np.argmax(probs, axis=1)
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predicted, labels=DIGITS, zero_division=0
    )
    return {
        "accuracy": ensemble.accuracy(probs, labels),
        "rows": int(len(labels)),
        "errors": int(np.sum(predicted != labels)),
        "per_class": [
            {
                "digit": d,
                "precision": float(precision[d]),
                "recall": float(recall[d]),
                "f1": float(f1[d]),
                "support": int(support[d]),
            }
            for d in DIGITS
        ],
        "confusion": confusion_matrix(labels, predicted, labels=DIGITS).tolist(),
    }


def tables(result: dict) -> list[Table]:
    """The terminal view of `evaluate`'s result."""
    members = Table(title=f"Out-of-fold accuracy, run {result['run_id']}")
    for column in ("", "fold", "seed", "accuracy"):
        members.add_column(column, justify="right")
    for m in result["members"]:
        members.add_row(m["name"], str(m["fold"]), str(m["seed_index"]), f"{m['val_accuracy']:.4%}")
    for fold, accuracy in result["fold_accuracy"].items():
        members.add_row(f"fold {fold} ensemble", fold, "all", f"{accuracy:.4%}", style="cyan")
    members.add_row(
        "ensemble",
        "all",
        "all",
        f"{result['accuracy']:.4%} ({result['errors']} wrong of {result['rows']:,})",
        style="bold green",
    )

    per_class = Table(title="Per digit (out of fold)")
    for column in ("digit", "precision", "recall", "F1", "rows"):
        per_class.add_column(column, justify="right")
    worst = min(result["per_class"], key=lambda c: c["f1"])["digit"]
    for c in result["per_class"]:
        per_class.add_row(
            str(c["digit"]),
            f"{c['precision']:.4f}",
            f"{c['recall']:.4f}",
            f"{c['f1']:.4f}",
            f"{c['support']:,}",
            style="yellow" if c["digit"] == worst else None,
        )

    confusion = Table(title="Confusion matrix (rows: true digit, columns: predicted)")
    confusion.add_column("true", justify="right")
    for d in DIGITS:
        confusion.add_column(str(d), justify="right")
    for d, row in enumerate(result["confusion"]):
        cells = [
            f"[bold]{n}[/]" if i == d else (f"[red]{n}[/]" if n else "[dim]0[/]") for i, n in enumerate(row)
        ]
        confusion.add_row(str(d), *cells)
    return [members, per_class, confusion]
