"""`kaggle-mnist report [RUN]`: the pictures a competitor looks at after training, written into the
run's `report/` folder with a `report.md` that shows them beside the settings and scores.

Figures are built with matplotlib's object API (no pyplot global state) and saved atomically.
Import after `backend.select(...)`: the augmentation preview runs the run's own Keras layers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from competition import backend, data, storage
from competition.runs.folder import Run
from competition.scoring import evaluate
from competition.scoring.expected import explain
from competition.training.settings import TrainSettings

DPI = 110


def report(run: str | None = None) -> list[Path]:
    """Writes the report for a run; returns the files written (pictures first, report.md last)."""
    found = Run.open(run)
    run_dir, settings, metrics = found.dir, found.settings, found.metrics
    probs, labels = found.oof()
    images = found.rows(data.load()).images
    result = evaluate.scores(probs, labels)
    folder = run_dir / "report"
    folder.mkdir(exist_ok=True)

    pictures = {
        "confusion.png": confusion_figure(np.array(result["confusion"]), result["accuracy"]),
        "confidently_wrong.png": wrong_figure(images, probs, labels),
        "learning_curves.png": learning_curves_figure(run_dir, metrics["members"]),
        "augmentation.png": augmentation_figure(images, labels, settings),
        "members.png": members_figure(metrics),
    }
    written = []
    for name, figure in pictures.items():
        path = folder / name
        storage.write_atomic(path, lambda tmp, f=figure: f.savefig(tmp, dpi=DPI, bbox_inches="tight"))
        written.append(path)
    markdown = folder / "report.md"
    storage.write_text(markdown, _markdown(run_dir, settings, metrics, result))
    written.append(markdown)
    return written


# ----------------------------------------------------------------------------------------------
# The pictures: each a pure function of arrays, returning a Figure.


def confusion_figure(confusion: np.ndarray, accuracy: float) -> Figure:
    """Counts on a log colour scale: with 99% on the diagonal, a linear scale would hide every error."""
    figure = Figure(figsize=(7, 6), layout="constrained")
    ax = figure.subplots()
    shown = np.where(confusion > 0, confusion, np.nan)
    image = ax.imshow(shown, cmap="viridis", norm=LogNorm(vmin=1, vmax=max(2, confusion.max())))
    for (row, col), n in np.ndenumerate(confusion):
        if n:
            ax.text(
                col,
                row,
                str(n),
                ha="center",
                va="center",
                fontsize=7,
                color="white" if row == col else "black",
            )
    ax.set_xticks(range(10))
    ax.set_yticks(range(10))
    ax.set_xlabel("predicted digit")
    ax.set_ylabel("true digit")
    errors = int(confusion.sum() - np.trace(confusion))
    ax.set_title(f"Out-of-fold confusion matrix: {accuracy:.2%} right, {errors} wrong")
    figure.colorbar(image, ax=ax, label="rows (log scale)")
    return figure


def wrong_figure(images: np.ndarray, probs: np.ndarray, labels: np.ndarray, count: int = 30) -> Figure:
    """The out-of-fold mistakes the ensemble was surest of: often mislabelled or truly ambiguous digits."""
    predicted = np.argmax(probs, axis=1)
    wrong = np.flatnonzero(predicted != labels)
    order = wrong[np.argsort(-probs[wrong, predicted[wrong]])][:count]
    columns = 6
    rows = max(1, -(-len(order) // columns))
    figure = Figure(figsize=(columns * 1.6, rows * 1.9 + 0.6), layout="constrained")
    axes = np.atleast_1d(figure.subplots(rows, columns)).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, row in zip(axes, order, strict=False):
        ax.imshow(images[row], cmap="gray_r", vmin=0, vmax=255)
        ax.set_title(
            f"row {row}\ntrue {labels[row]}, said {predicted[row]} ({probs[row, predicted[row]]:.0%})",
            fontsize=8,
        )
    title = "Most confidently wrong out-of-fold digits" if len(order) else "No out-of-fold mistakes"
    figure.suptitle(f"{title} ({len(wrong)} wrong in all)")
    return figure


def learning_curves_figure(run_dir: Path, members: list[dict]) -> Figure:
    """Loss, accuracy and learning rate per epoch for every member (dashed: training, solid: validation)."""
    figure = Figure(figsize=(13, 4.2), layout="constrained")
    loss_ax, acc_ax, lr_ax = figure.subplots(1, 3)
    colors = [f"C{i % 10}" for i in range(len(members))]
    lowest, last_epoch, any_rate = 1.0, 1, False
    for member, color in zip(members, colors, strict=True):
        history = Run.history(run_dir / "members" / member["name"])
        if not history:
            continue
        epochs = [h["epoch"] + 1 for h in history]
        last_epoch = max(last_epoch, epochs[-1])
        style = {"color": color, "linewidth": 1, "marker": "o", "markersize": 2.5}
        # Keras' CSVLogger writes NA in the val_ columns when the fold was not scored each epoch
        # (--no-epoch-validation, the CPU default).
        validated = all(np.isfinite(float(h.get("val_accuracy", np.nan))) for h in history)
        loss_ax.plot(epochs, [h["loss"] for h in history], "--", label=member["name"], **style)
        acc_ax.plot(epochs, [h["accuracy"] for h in history], "--", **style)
        if validated:
            loss_ax.plot(epochs, [h["val_loss"] for h in history], "-", **style)
            acc_ax.plot(epochs, [h["val_accuracy"] for h in history], "-", **style)
        else:  # the fold is still scored once, after the last epoch
            acc_ax.plot([epochs[-1]], [member["val_accuracy"]], "*", color=color, markersize=8)
        rates = [h.get("learning_rate", np.nan) for h in history]
        lr_ax.plot(epochs, rates, "-", **style)
        any_rate = any_rate or any(r > 0 for r in rates)
        # Zoom on where the curves end up: the first epochs' low accuracy would flatten the rest.
        late = history[len(history) // 3 :]
        scores = [h["accuracy"] for h in late] + ([h["val_accuracy"] for h in late] if validated else [])
        lowest = min(lowest, member["val_accuracy"], *scores)
    loss_ax.set(title="Loss", xlabel="epoch", yscale="log")
    acc_ax.set(title="Accuracy", xlabel="epoch", ylim=(max(0.0, lowest - 0.01), 1.0))
    # The cosine schedule ends at zero, which a log scale drops; a one-epoch run has nothing else.
    lr_ax.set(title="Learning rate", xlabel="epoch", yscale="log" if any_rate else "linear")
    for ax in (loss_ax, acc_ax, lr_ax):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlim(0.5, last_epoch + 0.5)
    if len(members) <= 15:
        loss_ax.legend(fontsize=7, ncol=2)
    figure.suptitle(
        "Learning curves per member (dashed: training; solid: validation fold after each epoch, "
        "star: after the last, where --epoch-validation was off)"
    )
    return figure


def augmentation_figure(
    images: np.ndarray, labels: np.ndarray, settings: TrainSettings, copies: int = 6
) -> Figure:
    """One digit of each class beside copies passed through the augmentation layer with the run's settings."""
    import keras

    from competition.training.model import RandomAffine

    rows = [int(np.flatnonzero(labels == d)[0]) for d in range(10) if np.any(labels == d)]
    originals = images[rows]
    if settings.augment:
        backend.seed(settings.seed)
        layers = RandomAffine(settings.rotation_degrees, settings.zoom, settings.shift)
        batch = keras.ops.cast(originals[..., None], "float32")
        augmented = [keras.ops.convert_to_numpy(layers(batch, training=True))[..., 0] for _ in range(copies)]
    else:
        augmented = []
    figure = Figure(figsize=((1 + len(augmented)) * 1.2, len(rows) * 1.2 + 0.6), layout="constrained")
    axes = figure.subplots(len(rows), 1 + len(augmented), squeeze=False)
    for r, original in enumerate(originals):
        for c, picture in enumerate([original, *(a[r] for a in augmented)]):
            axes[r, c].imshow(picture, cmap="gray_r", vmin=0, vmax=255)
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
    axes[0, 0].set_title("original", fontsize=9)
    for c in range(1, 1 + len(augmented)):
        axes[0, c].set_title(f"augmented {c}", fontsize=9)
    if settings.augment:
        what = f"rotation ±{settings.rotation_degrees:g}°, zoom ±{settings.zoom:.0%}, shift ±{settings.shift:.0%}"
    else:
        what = "augmentation was off for this run"
    figure.suptitle(f"Training augmentation: {what}")
    return figure


def members_figure(metrics: dict) -> Figure:
    """Each member's accuracy on its validation fold against its fold's ensemble and the CV accuracy."""
    members = metrics["members"]
    figure = Figure(figsize=(max(6, 0.55 * len(members) + 2), 4.2), layout="constrained")
    ax = figure.subplots()
    x = np.arange(len(members))
    values = [m["val_accuracy"] for m in members]
    ax.bar(x, values, color=[f"C{m['fold'] % 10}" for m in members], label="member (its fold)")
    for i, m in enumerate(members):
        fold_accuracy = metrics["fold_accuracy"][str(m["fold"])]
        ax.plot([i - 0.4, i + 0.4], [fold_accuracy] * 2, color="black", linewidth=2)
    ax.axhline(
        metrics["cv_accuracy"], color="red", linestyle="--", label=f"ensemble CV {metrics['cv_accuracy']:.4%}"
    )
    ax.plot([], [], color="black", linewidth=2, label="ensemble on that fold")
    ax.set_xticks(x, [m["name"] for m in members], rotation=45, ha="right", fontsize=8)
    low = min([*values, metrics["cv_accuracy"]])
    ax.set_ylim(
        max(0.0, low - 0.3 * (1 - low) - 0.001), min(1.0, max([*values, metrics["cv_accuracy"]]) + 0.002)
    )
    ax.set_ylabel("out-of-fold accuracy")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(axis="y", alpha=0.3)
    ax.set_title("Members against the ensemble")
    return figure


def _markdown(run_dir: Path, settings: TrainSettings, metrics: dict, result: dict) -> str:
    lines = [
        f"# Run {run_dir.name}",
        "",
        f"CV accuracy (out of fold, {result['rows']:,} rows): **{result['accuracy']:.4%}**, "
        f"{result['errors']} wrong; mean member {metrics['mean_member_accuracy']:.4%}; "
        f"{len(metrics['members'])} members. "
        + explain(metrics.get("expected_submission"), result["accuracy"], settings.folds, settings.seeds)
        + ".",
        "",
        "| fold | ensemble accuracy |",
        "| --- | --- |",
        *(f"| {fold} | {accuracy:.4%} |" for fold, accuracy in metrics["fold_accuracy"].items()),
        "",
        "## Per digit",
        "",
        "| digit | precision | recall | rows |",
        "| --- | --- | --- | --- |",
        *(
            f"| {c['digit']} | {c['precision']:.4f} | {c['recall']:.4f} | {c['support']:,} |"
            for c in result["per_class"]
        ),
        "",
        "## Pictures",
        "",
        "![Confusion matrix](confusion.png)",
        "",
        "![Most confidently wrong digits](confidently_wrong.png)",
        "",
        "![Learning curves](learning_curves.png)",
        "",
        "![Augmentation](augmentation.png)",
        "",
        "![Members against the ensemble](members.png)",
        "",
        "## Settings",
        "",
        "| setting | value |",
        "| --- | --- |",
        *(f"| {k} | {v} |" for k, v in settings.to_dict().items()),
        "",
    ]
    return "\n".join(lines)
