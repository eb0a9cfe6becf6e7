"""The submission's own accuracy: a recipe run end to end on train.csv less a held-out set of labelled
rows, its submission's predictor scored on those rows (`kaggle-mnist run --holdout N`).

    python benchmarks/holdout.py --holdout 8400 --holdout-seeds 0 1 --name default
    python benchmarks/holdout.py --holdout 8400 --holdout-seeds 0 1 --name tta -- --tta
    python benchmarks/holdout.py --compare default tta
    python benchmarks/holdout.py --curve --name default --holdout 8400 --holdout-seeds 0 1
    python benchmarks/holdout.py --member --name epochs40 --holdout-seeds 0 -- --epochs 40
    python benchmarks/holdout.py --mix default bncnn-w1.5 --holdout-seeds 0 1
    python benchmarks/holdout.py --precise-bn --name default --holdout-seeds 0 1

`--member` screens a lever on one member instead of a whole run: `kaggle-mnist train --members f0-s0`
with the options after `--`, scored on the same held-out rows; `--curve` gives the default run's ten
members to set it against (a member's spread is the noise such a screen must beat).

Everything after `--` is passed to `kaggle-mnist run` as it is (a recipe's options). Each (recipe,
holdout seed) is one run in a workspace of its own under --workdir, which keeps the runs, so an
interrupted benchmark continues where it stopped (the same command again). Appends one JSON line per
run to benchmarks/holdout.jsonl: commit, command, device, the CV, the held-out accuracy with its
standard error, the training work (images), the wall time, and the held-out rows it got wrong (row
numbers of train.csv), so `--compare` can pair two recipes row by row on the same held-out rows: the
difference of two recipes on the same rows is far less noisy than either accuracy.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from bench import DEFAULT_DATA, commit, device_name  # noqa: E402

LOG = HERE / "holdout.jsonl"


# The CPU seconds that processes other than the measured command spent while it ran, from the last
# one (`others_cpu_seconds` in a run's entry): a wall time is the recipe's alone when they are few.
last_others_cpu_seconds: float | None = None


def busy_cpu_seconds() -> float | None:
    """CPU seconds the whole machine has spent busy since it booted (Linux's /proc/stat)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def kaggle_mnist(command: list[str], workspace: Path) -> tuple[str, float]:
    """The command line of this checkout in `workspace`: its output and wall seconds; exits on failure."""
    global last_others_cpu_seconds
    env = {**os.environ, "PYTHONPATH": str(ROOT), "KAGGLE_MNIST_WORKSPACE": str(workspace)}
    busy, own = busy_cpu_seconds(), own_cpu_seconds()
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "competition", *command],
        cwd=workspace,
        env=env,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    if busy is not None:
        last_others_cpu_seconds = round(busy_cpu_seconds() - busy - (own_cpu_seconds() - own), 1)
    if result.returncode != 0:
        raise SystemExit(
            f"kaggle-mnist {shlex.join(command)} failed:\n{result.stdout[-2000:]}{result.stderr}"
        )
    return result.stdout, seconds


def held_out(workspace: Path, holdout: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """train.csv's labels in `workspace`, and the row numbers `--holdout` draws for this seed."""
    sys.path.insert(0, str(ROOT))
    os.environ["KAGGLE_MNIST_WORKSPACE"] = str(workspace)
    from competition import data
    from competition.runs.rows import holdout_split

    labels = data.load(log=lambda *a, **k: None).train_labels
    return labels, holdout_split(labels, holdout, seed)[1]


def measure(name: str, holdout: int, seed: int, options: list[str], workdir: Path, data: Path) -> dict:
    """One recipe on one holdout seed: `kaggle-mnist run` in its own workspace; the run's figures."""
    workspace = workdir / f"{name}-h{holdout}-s{seed}"
    workspace.mkdir(parents=True, exist_ok=True)
    command = ["run", "--holdout", str(holdout), "--holdout-seed", str(seed), "--from", str(data), "--quiet"]
    command += options
    # A workspace that already holds trained members continues its run: the wall time is then only
    # this part's, not the recipe's.
    resumed = any((workspace / "ensembles").glob("2*/members/*"))
    output, seconds = kaggle_mnist(command, workspace)
    line = next(x for x in output.splitlines()[::-1] if "this submission's predictor scores" in x)
    runs = sorted((workspace / "ensembles").glob("*/metrics.json"), key=lambda p: p.stat().st_mtime)
    run_dir = runs[-1].parent
    metrics = json.loads((run_dir / "metrics.json").read_text())
    config = json.loads((run_dir / "config.json").read_text())["settings"]
    predicted = json.loads(
        max((workspace / "submissions").glob("*.holdout.json"), key=lambda p: p.stat().st_mtime).read_text()
    )
    accuracy = predicted["holdout"]["accuracy"]
    return {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "commit": commit(),
        "command": "kaggle-mnist " + shlex.join(command),
        "device": device_name("tensorflow"),
        "repeats": 1,  # one run per line: a recipe's repeats are its holdout seeds
        "recipe": name,
        "holdout": holdout,
        "holdout_seed": seed,
        "members": len(metrics["members"]),
        "epochs": config["epochs"],
        "images_trained": int(sum(m["train_rows"] * m["epochs_run"] for m in metrics["members"])),
        "cv_accuracy": metrics["cv_accuracy"],
        "mean_member_accuracy": metrics["mean_member_accuracy"],
        "holdout_accuracy": accuracy,
        "holdout_standard_error": predicted["holdout"]["standard_error"],
        "plain_mean_holdout_accuracy": metrics["holdout"]["accuracy"],
        "predictor": predicted["blend"],
        "wall_seconds": round(seconds, 1),
        # What else ran meanwhile: near 0 when the wall time is the recipe's alone (the 2 cores give
        # 2 CPU seconds a second).
        "others_cpu_seconds": last_others_cpu_seconds,
        "resumed": resumed,
        "printed": line.strip(),
        # Row numbers of train.csv that the predictor got wrong, for paired comparisons.
        "wrong_rows": predicted["holdout"]["wrong_rows"],
    }


def measure_member(name: str, holdout: int, seed: int, options: list[str], workdir: Path, data: Path) -> dict:
    """One member (fold 0, seed index 0) trained with `options` on the rows a holdout run trains on,
    scored on its held-out rows: a cheap screen of a lever before a whole run is spent on it."""
    workspace = workdir / f"member-{name}-h{holdout}-s{seed}"
    workspace.mkdir(parents=True, exist_ok=True)
    kaggle_mnist(["fetch", "--from", str(data)], workspace)
    command = [
        "train",
        "--holdout",
        str(holdout),
        "--holdout-seed",
        str(seed),
        "--members",
        "f0-s0",
        "--quiet",
    ]
    command += options
    _, seconds = kaggle_mnist(command, workspace)
    labels, held = held_out(workspace, holdout, seed)
    from competition.runs.folder import Run

    run = Run(max((workspace / "ensembles").glob("2*"), key=lambda p: p.stat().st_mtime))
    predicted = np.argmax(run.member_predictions(0, 0)[2], axis=1)
    info = run.member_info(0, 0)
    return {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "commit": commit(),
        "command": "kaggle-mnist " + shlex.join(command),
        "device": device_name("tensorflow"),
        "repeats": 1,
        "recipe": f"member:{name}",
        "holdout": holdout,
        "holdout_seed": seed,
        "members": 1,
        "epochs": info["epochs_run"],
        "images_trained": int(info["train_rows"] * info["epochs_run"]),
        "fold_accuracy": info.get("val_accuracy"),
        "holdout_accuracy": float(np.mean(predicted == labels[held])),
        "wall_seconds": round(seconds, 1),
        "wrong_rows": [int(r) for r in held[predicted != labels[held]]],
    }


def precise(workdir: Path, name: str, holdout: int, seed: int) -> dict:
    """A kept run of recipe `name` as it would have come out with `--precise-bn`: each member's
    batch-norm statistics recomputed from its saved final weights exactly as `train` does after the
    last epoch (the training before that step is the same), its held-out rows predicted again and the
    plain mean scored. For runs trained before precise_bn existed, or with it off."""
    workspace = workdir / f"{name}-h{holdout}-s{seed}"
    labels, held = held_out(workspace, holdout, seed)
    from competition import backend, data
    from competition.runs.folder import Run

    run = max((Run(p.parent) for p in (workspace / "ensembles").glob("*/metrics.json")), key=lambda r: r.id)
    backend.select(run.settings.backend)
    from competition.training import member, precise_bn
    from competition.training.model import load
    from competition.training.resume import predict_rows

    member.configure_device(run.settings, [])
    rows, folds = run.rows(data.load(log=lambda *a, **k: None)), run.array("folds.npy")
    started = time.perf_counter()
    probs = []
    for fold, seed_index in run.members:
        model = load(run.member_dir(fold, seed_index) / "model.keras")
        member_seed = run.settings.member_seed(fold, seed_index)
        precise_bn.recompute(model, rows.images[folds != fold], member_seed, run.settings.epochs)
        probs.append(predict_rows(model, rows.test_images))
    predicted = np.argmax(np.mean(probs, axis=0), axis=1)
    before = next(
        e for e in map(json.loads, LOG.read_text().splitlines()) if (e["recipe"], e["holdout_seed"]) == (name, seed)
    )
    return {
        **{k: before[k] for k in ("command", "holdout", "holdout_seed", "members", "epochs", "images_trained")},
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "commit": commit(),
        "trained_at": before["commit"],
        "device": device_name("tensorflow"),
        "repeats": 1,
        "recipe": f"{name}+precise-bn",
        "holdout_accuracy": float(np.mean(predicted == labels[held])),
        "seconds": round(time.perf_counter() - started, 1),
        "wrong_rows": [int(r) for r in held[predicted != labels[held]]],
    }


def append(entry: dict) -> None:
    with open(LOG, "a") as log:
        log.write(json.dumps(entry) + "\n")


def compare(names: list[str]) -> None:
    """Each recipe's held-out accuracy per seed and its mean; then each against the first, paired on
    the same rows: rows only it got right, rows only the first got right."""
    entries = [json.loads(line) for line in LOG.read_text().splitlines() if line.strip()]
    latest = {(e["recipe"], e["holdout"], e["holdout_seed"]): e for e in entries}
    for name in names:
        found = sorted((k, e) for k, e in latest.items() if k[0] == name)
        scores = [e["holdout_accuracy"] for _, e in found]
        # A member: its fold's accuracy; a rescored run (--precise-bn): none.
        cvs = [c for _, e in found if (c := e.get("cv_accuracy", e.get("fold_accuracy"))) is not None]
        per_seed = ", ".join(f"seed {k[2]}: {e['holdout_accuracy']:.3%}" for k, e in found)
        cv = f"CV {statistics.mean(cvs):.3%}; " if cvs else ""
        print(
            f"{name}: held out {statistics.mean(scores):.3%} ({per_seed}); {cv}"
            f"{found[0][1]['members']} members x {found[0][1]['epochs']} epochs, "
            f"{found[0][1]['images_trained'] / 1e6:.2f} M images"
        )
    base = names[0]
    for name in names[1:]:
        gains = []
        for (recipe, holdout, seed), e in sorted(latest.items()):
            other = latest.get((base, holdout, seed))
            if recipe != name or other is None:
                continue
            mine, theirs = set(e["wrong_rows"]), set(other["wrong_rows"])
            gains.append((len(theirs - mine) - len(mine - theirs)) / holdout)
            print(
                f"  {name} vs {base}, holdout seed {seed}: {len(theirs - mine)} rows fixed, "
                f"{len(mine - theirs)} broken: {gains[-1]:+.3%}"
            )
        if gains:
            print(f"  {name} vs {base}: {statistics.mean(gains):+.3%} on average over {len(gains)} seeds")


def curve(workdir: Path, name: str, holdout: int, seed: int) -> None:
    """How the held-out accuracy of the plain mean grows with members, in training order (all folds of
    seed 0 first): what more members buy, from one logged run's files."""
    labels, held = held_out(workdir / f"{name}-h{holdout}-s{seed}", holdout, seed)
    from competition.runs.folder import Run

    run = Run.latest()
    probs = [run.member_predictions(*member)[2] for member in run.members]
    for count in range(1, len(probs) + 1):
        mean = np.mean(probs[:count], axis=0)
        single = np.mean(np.argmax(probs[count - 1], axis=1) == labels[held])
        accuracy = np.mean(np.argmax(mean, axis=1) == labels[held])
        print(
            f"{name} holdout seed {seed}: first {count:2d} members {accuracy:.3%} (member {count}: {single:.3%})"
        )


def mix(workdir: Path, names: list[str], holdout: int, seed: int) -> list[dict]:
    """Every finished member of the `--member` screens `names` on one holdout seed, alone and averaged
    in pairs and all together: whether members of different recipes make different mistakes (a pair of
    one recipe's members, where screened, is the yardstick). Returns one figure per combination."""
    from itertools import combinations

    from competition.runs.folder import Run, member_name

    labels = held = None
    members = {}
    for name in names:
        workspace = workdir / f"member-{name}-h{holdout}-s{seed}"
        labels, held = held_out(workspace, holdout, seed)
        run = Run(max((workspace / "ensembles").glob("2*"), key=lambda p: p.stat().st_mtime))
        for fold, seed_index in run.members:
            if run.member_done(fold, seed_index):
                members[f"{name}:{member_name(fold, seed_index)}"] = run.member_predictions(fold, seed_index)[2]
    figures = []
    for size in (1, 2, len(members)):
        for combo in combinations(sorted(members), size):
            mean = np.mean([members[m] for m in combo], axis=0)
            wrong = np.flatnonzero(np.argmax(mean, axis=1) != labels[held])
            figures.append({"members": list(combo), "holdout_seed": seed, "accuracy": 1 - len(wrong) / len(held)})
            print(f"holdout seed {seed}: {' + '.join(combo)}: {figures[-1]['accuracy']:.3%}")
        if size == len(members):
            break
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--name", help="the recipe's name in the log")
    parser.add_argument("--holdout", type=int, default=8400)
    parser.add_argument("--holdout-seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/kaggle-mnist-holdout"))
    parser.add_argument("--compare", nargs="+", metavar="RECIPE", help="summarise logged recipes instead")
    parser.add_argument("--curve", action="store_true", help="accuracy against members, from kept runs")
    parser.add_argument("--member", action="store_true", help="screen the options on one member (f0-s0)")
    parser.add_argument("--mix", nargs="+", metavar="RECIPE", help="members of these screens, alone and averaged")
    parser.add_argument(
        "--precise-bn", action="store_true", help="a kept run of --name, its batch-norm statistics recomputed"
    )
    args, options = parser.parse_known_args()
    if args.compare:
        compare(args.compare)
        return
    if args.mix:
        for seed in args.holdout_seeds:
            mix(args.workdir, args.mix, args.holdout, seed)
        return
    if args.curve:
        for seed in args.holdout_seeds:
            curve(args.workdir, args.name, args.holdout, seed)
        return
    if not args.name:
        parser.error("--name is required to measure")
    if args.precise_bn:
        for seed in args.holdout_seeds:
            entry = precise(args.workdir, args.name, args.holdout, seed)
            append(entry)
            print(f"{entry['recipe']} holdout seed {seed}: {entry['holdout_accuracy']:.3%}", flush=True)
        return
    options = [o for o in options if o != "--"]
    if args.member:
        for seed in args.holdout_seeds:
            entry = measure_member(args.name, args.holdout, seed, options, args.workdir, args.data.resolve())
            append(entry)
            print(
                f"member {args.name} holdout seed {seed}: {entry['holdout_accuracy']:.3%} "
                f"({entry['wall_seconds']:.0f} s)",
                flush=True,
            )
        return
    for seed in args.holdout_seeds:
        entry = measure(args.name, args.holdout, seed, options, args.workdir, args.data.resolve())
        append(entry)
        print(
            entry["printed"], f"CV {entry['cv_accuracy']:.4%}", f"({entry['wall_seconds']:.0f} s)", flush=True
        )


if __name__ == "__main__":
    main()
