"""`kaggle-mnist predict [RUN]`: the ensemble's test predictions as submission.csv.

The plain mean of the members' softmax outputs, or with `--tta` the mean over small shifts of every
image as well, or with `--weights oof` a weighted blend of the seed groups (and TTA views). Whether TTA
is used, and the blend weights, are decided fold by fold on the *other* folds' out-of-fold rows, so the
accuracy reported is never fitted on the rows it is measured on; if that still scores below the plain
mean, the plain mean is kept, so the reported accuracy is never below the plain mean's.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from competition import data, paths, storage
from competition.errors import UserError
from competition.kaggle import submission
from competition.runs.folder import Run
from competition.scoring import ensemble
from competition.scoring.expected import expectation, explain

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


WEIGHTS = ("mean", "oof")


def predict(
    run: str | None = None, tta: bool = False, weights: str = "mean", log: Callable[[str], None] = print
) -> dict:
    """Writes the run's submission; returns what was written and its out-of-fold accuracy.

    `weights="oof"`: blend the seed groups (and with `tta`, their TTA views) with weights from greedy
    ensemble selection, fitted fold by fold on the other folds' rows (`ensemble.cross_fitted_blend`).
    """
    if weights not in WEIGHTS:
        raise UserError(f"--weights must be one of {', '.join(WEIGHTS)}, not {weights!r}")
    found = Run.open(run)
    run_dir, settings, metrics = found.dir, found.settings, found.metrics
    if run is None:  # the latest finished run; say so where a newer one is still unfinished
        said = set()
        for newer in sorted(found.newer_unfinished(), key=lambda r: r.dir.name, reverse=True):
            try:
                how = f"`{newer.train_command()}` completes it, then predict again"
            except UserError as exc:  # its config.json is damaged: that says what to do instead
                how = exc.message
            if how not in said:  # the same command continues only the newest of runs alike
                said.add(how)
                log(f"note: {newer.dir.name}, started after this run, is unfinished; {how}")
    plain_oof, labels = found.oof()
    folds = found.array("folds.npy")
    plain_test = found.array("test_probs.npy")
    plain_accuracy = ensemble.accuracy(plain_oof, labels)

    oof, test, note, name = plain_oof, plain_test, "plain mean", run_dir.name
    predictor = "mean"  # what the expected score is looked up for
    if tta or weights == "oof":
        components = member_components(found, tta, log)
    if weights == "oof":
        names = list(components)
        stack = np.stack([components[n][0] for n in names])
        blended, _ = ensemble.cross_fitted_blend(stack, labels, folds)
        if len(names) > 1 and ensemble.accuracy(blended, labels) >= plain_accuracy:
            # The test rows belong to no fold: their weights are fitted on every out-of-fold row.
            final = ensemble.greedy_weights(stack[:, np.arange(len(labels)), labels])
            test = ensemble.average([components[n][1] for n in names], final)
            picked = ", ".join(f"{n} {w:.2f}" for n, w in zip(names, final, strict=True) if w > 0)
            oof, name = blended, f"{run_dir.name}-oof{'-tta' if tta else ''}"
            predictor = "oof-tta" if tta else "oof"
            note = f"weights fitted out of fold ({picked})"
        elif len(names) == 1:
            note = "plain mean (one seed and no TTA: nothing to weigh; try --seeds 3 or --tta)"
        else:
            note = "plain mean (the out-of-fold blend did not beat it)"
    elif tta:
        plain_names = [n for n in components if not n.endswith("-tta")]
        tta_oof = ensemble.average([components[f"{n}-tta"][0] for n in plain_names])
        tta_test = ensemble.average([components[f"{n}-tta"][1] for n in plain_names])
        chosen_oof, choice = choose_per_fold({"mean": plain_oof, "tta": tta_oof}, labels, folds)
        # The test rows belong to no fold: they get TTA if most folds chose it. Only then is the file
        # a TTA submission, and its out-of-fold figure that of the fold-by-fold choice.
        majority = list(choice.values()).count("tta") * 2 > len(choice)
        if majority and ensemble.accuracy(chosen_oof, labels) >= plain_accuracy:
            oof, note, name = chosen_oof, f"TTA chosen on other folds: {choice}", f"{run_dir.name}-tta"
            predictor = "tta"
            test = tta_test
        elif "tta" in choice.values():
            note = f"TTA chosen by too few folds ({choice}) or no better out of fold; kept the plain mean"
        else:
            note = "TTA did not beat the plain mean out of fold; kept the plain mean"
    result = {
        "run_id": run_dir.name,
        "file": None,
        "oof_accuracy": ensemble.accuracy(oof, labels),
        "plain_mean_accuracy": plain_accuracy,
        "members": len(metrics["members"]),
        "changed_vs_mean": submission.changed_predictions(test, plain_test),
        "blend": note,
    }
    result["expected_submission"] = expectation(settings, result["oof_accuracy"], len(test), predictor)
    outlook = explain(result["expected_submission"], result["oof_accuracy"], settings.folds, settings.seeds)
    summary = (
        f"{result['members']} members, {note}; out-of-fold accuracy {result['oof_accuracy']:.4%} (plain "
        f"mean {plain_accuracy:.4%}); {result['changed_vs_mean']} test predictions differ from the plain mean"
    )
    if settings.holdout:
        # Its "test set" is rows of train.csv: scored here, never written as a submission. The record
        # names the rows it got wrong, so two recipes can be compared row by row on the same rows.
        rows = found.rows(data.load())
        wrong = rows.held_rows[np.argmax(test, axis=1) != rows.held_labels]
        result["holdout"] = ensemble.scored(test, rows.held_labels) | {
            "seed": settings.holdout_seed,
            "wrong_rows": [int(r) for r in wrong],
        }
        path = paths.submissions_dir() / f"{name}.holdout.json"
        result["file"] = str(path)
        storage.write_json(path, result)
        log(f"Holdout run {run_dir.name}: {summary}; wrote {path}.")
        log(ensemble.holdout_line(result["holdout"], "this submission's predictor"))
        log(f"{outlook}.")
        return result
    path = submission.write(test, run_dir.name, name)
    result["file"] = str(path)
    # Beside the CSV, so `submit` records this blend's out-of-fold accuracy in the ledger.
    storage.write_json(path.with_suffix(".json"), result)
    log(f"Wrote {path} and submission.csv: {summary}.")
    log(f"{outlook}.")
    return result


def member_components(run: Run, tta: bool, log) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The blendable parts of a run: per seed index, the out-of-fold and test probabilities of its
    members over all folds ("s0", "s1", ...), and with `tta` the same under test-time shifts ("s0-tta").
    Each covers every training row once, so each is a complete out-of-fold prediction."""
    rows = run.rows(data.load()) if tta else None
    parts: dict[str, tuple[list, list]] = {}
    # Every member's files checked before the first slow TTA pass, so a damaged one fails at once.
    saved = {member: run.member_predictions(*member) for member in run.members}
    for (fold, seed_index), (oof_rows, probs, test) in saved.items():
        views = {f"s{seed_index}": (probs, test)}
        if tta:
            model_path = run.member_file(fold, seed_index, "model.keras")
            views[f"s{seed_index}-tta"] = _tta(
                model_path, rows.images[oof_rows], rows.test_images, probs, test
            )
            log(f"TTA: member {model_path.parent.name} done")
        for name, (oof_probs, test_probs) in views.items():
            oof_parts, tests = parts.setdefault(name, ([], []))
            oof_parts.append((oof_rows, oof_probs))
            tests.append(test_probs)
    num_rows = len(run.array("folds.npy"))
    return {
        name: (ensemble.out_of_fold(oof_parts, num_rows)[0], ensemble.average(tests))
        for name, (oof_parts, tests) in parts.items()
    }


def _tta(model_path, oof_images, test_images, oof_probs, test_probs) -> tuple[np.ndarray, np.ndarray]:
    """A member's probabilities averaged over the unshifted image and its one-pixel shifts."""
    # Only TTA runs the models; the backend was chosen by the caller.
    from competition.training.model import load as load_model
    from competition.training.resume import predict_rows

    model = load_model(model_path)
    oof_views, test_views = [oof_probs], [test_probs]
    for dy, dx in TTA_SHIFTS:
        oof_views.append(predict_rows(model, shift_images(oof_images, dy, dx)))
        test_views.append(predict_rows(model, shift_images(test_images, dy, dx)))
    return ensemble.average(oof_views), ensemble.average(test_views)
