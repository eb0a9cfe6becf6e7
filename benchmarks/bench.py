"""Speed and accuracy, measured side by side: the project's `train` + `predict` against the classic
recipe (benchmarks/classic.py) on the same data, folds and epochs, in one run.

    python benchmarks/bench.py --folds 2 --seeds 1 --epochs 2 --subset 12000

Each side runs in its own process, timed from start to exit (imports, data loading, training,
prediction, submission file), with its peak resident memory from the kernel (wait4). With --repeat N
the sides alternate N times and the medians are kept. Prints one JSON line and appends it to
benchmarks/results.jsonl. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "digit-recognizer.zip"


def tree_rss_mb(root: int) -> float:
    """Resident memory (MB) of a process and all its descendants now, from /proc (Linux)."""
    parents, rss = {}, {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            parents[int(entry.name)] = int(fields[1])
            rss[int(entry.name)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [p for p, pp in parents.items() if pp == parent and p not in tree]
        tree.update(children)
        frontier.extend(children)
    return sum(rss.get(p, 0) for p in tree) / 2**20


def timed(command: list[str], cwd: Path, env: dict) -> dict:
    """Runs a command; returns wall seconds, its peak RSS (MB, from the kernel) and the peak of its
    whole process tree (MB, sampled twice a second: `train --workers` trains in child processes), or
    raises with its output."""
    started = time.perf_counter()
    proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    peak_tree = [0.0]

    def sample() -> None:
        while proc.poll() is None:
            peak_tree[0] = max(peak_tree[0], tree_rss_mb(proc.pid))
            time.sleep(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output = proc.stdout.read()  # to the end, so a full pipe never stalls the child
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    sampler.join()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        tail = output.decode(errors="replace").strip().splitlines()[-5:]
        raise SystemExit(f"{' '.join(command[:4])} ... failed with exit {code}:\n" + "\n".join(tail))
    return {
        "wall_s": round(seconds, 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024),
        "peak_tree_rss_mb": round(max(peak_tree[0], usage.ru_maxrss / 1024)),
    }


def checkout(rev: str, into: Path) -> Path:
    """The project's code at an earlier commit, for a side-by-side run of "before" and "after"."""
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "archive", rev, "competition"], cwd=HERE.parent, capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def full_commit(rev: str) -> str:
    """The 40-digit commit a revision names, for the results log."""
    done = subprocess.run(["git", "rev-parse", rev], cwd=HERE.parent, capture_output=True, text=True)
    return done.stdout.strip()


def commit() -> str:
    """HEAD, marked when the package has changes not yet committed."""
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "competition"], capture_output=True, text=True, cwd=HERE.parent
    )
    return full_commit("HEAD") + ("+changes" if dirty.stdout.strip() else "")


def append_result(path: Path, line: dict, repeats: int) -> dict:
    """One line of a results log, in the one format every benchmark writes: when, the commit and the
    command measured, the device and the repeats first, then the tool's own figures."""
    entry = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "commit": commit(),
        "command": "python " + shlex.join(["benchmarks/" + Path(sys.argv[0]).name, *sys.argv[1:]]),
        "device": line.pop("device", None) or device_name("tensorflow"),
        "repeats": repeats,
        **{k: v for k, v in line.items() if k not in ("time", "repeats")},
    }
    with open(path, "a") as handle:
        handle.write(json.dumps(entry) + "\n")
    return entry


def measure_project(cli: list[str], train_args: list[str], workspace: Path, env: dict) -> dict:
    train = timed([*cli, "train", *train_args, "--quiet", "--fresh"], workspace, env)
    predict = timed([*cli, "predict"], workspace, env)
    run_dir = max((workspace / "ensembles").glob("*/metrics.json"), key=lambda p: p.stat().st_mtime).parent
    metrics = json.loads((run_dir / "metrics.json").read_text())
    settings = json.loads((run_dir / "config.json").read_text())["settings"]
    # Steady state: epochs after the first (which also traces the model); code before 63439a2 did not
    # record its epochs one by one, so only the mean over all epochs compares across versions.
    later = [t for m in metrics["members"] for t in m.get("epoch_seconds", [])[1:]]
    rows = metrics["members"][0]["train_rows"]
    # All members' training images over the train command's wall time: what members trained side by
    # side (train --workers) gain, which the per-member rate does not show.
    trained = sum(rows * len(m.get("epoch_seconds", [])) for m in metrics["members"])
    return {
        "wall_s": round(train["wall_s"] + predict["wall_s"], 2),
        "train_wall_s": train["wall_s"],
        "predict_wall_s": predict["wall_s"],
        "seconds_per_epoch": round(metrics["seconds_per_epoch"], 2),
        "images_per_second_per_member": round(metrics["images_per_second_per_member"]),
        "steady_images_per_second_per_member": round(rows / statistics.median(later)) if later else None,
        "run_images_per_second": round(trained / train["wall_s"]),
        "workers": metrics.get("workers", 1),
        "peak_rss_mb": max(train["peak_rss_mb"], predict["peak_rss_mb"]),
        "peak_tree_rss_mb": max(train["peak_tree_rss_mb"], predict["peak_tree_rss_mb"]),
        "cv_accuracy": round(metrics["cv_accuracy"], 5),
        "batch_size": settings["batch_size"],
        "precision": settings.get("precision", "auto"),
    }


def measure_classic(args: argparse.Namespace, workspace: Path, env: dict) -> dict:
    out = workspace / "classic.json"
    data_dir = workspace / "data" / "digit-recognizer"
    options = [f"--folds={args.folds}", f"--epochs={args.epochs}", f"--subset={args.subset}", f"--out={out}"]
    classic = timed([sys.executable, str(HERE / "classic.py"), str(data_dir), *options], workspace, env)
    inside = json.loads(out.read_text())
    return {
        "wall_s": classic["wall_s"],
        "seconds_per_epoch": round(inside["seconds_per_epoch"], 2),
        "images_per_second_per_member": round(inside["images_per_second_per_member"]),
        "steady_images_per_second_per_member": round(inside["steady_images_per_second_per_member"]),
        "peak_rss_mb": classic["peak_rss_mb"],
        "cv_accuracy": round(inside["cv_accuracy"], 5),
        "last_epoch_train_accuracy": round(inside["last_epoch_train_accuracy"], 5),
        "members": args.folds,
    }


def median_of(results: list[dict]) -> dict:
    """Each number's median over the repeats, and every repeat's wall time."""
    summary = {}
    for key in results[0]:
        values = [r[key] for r in results]
        if any(v is None for v in values):
            summary[key] = None
            continue
        if isinstance(values[0], str):
            summary[key] = values[0]
            continue
        middle = statistics.median(values)
        summary[key] = round(middle) if all(isinstance(v, int) for v in values) else middle
    summary["wall_s_each"] = [r["wall_s"] for r in results]
    summary["images_per_second_each"] = [r["images_per_second_per_member"] for r in results]
    return summary


def device_name(backend: str) -> str:
    """The accelerator if the backend sees one, else the CPU model and core count."""
    probe = {
        "jax": "import jax; d=[x for x in jax.devices() if x.platform=='gpu']; print(d[0].device_kind if d else '')",
        "torch": "import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')",
        "tensorflow": "import tensorflow as tf; g=tf.config.list_physical_devices('GPU'); "
        "print(tf.config.experimental.get_device_details(g[0]).get('device_name','GPU') if g else '')",
    }[backend]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    found = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env
    ).stdout.strip()
    if found:
        return found
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="competition zip or folder")
    parser.add_argument("--folds", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--subset", type=int, default=12000)
    parser.add_argument(
        "--batch-size", type=int, default=0, help="project batch size (0 = its automatic choice)"
    )
    parser.add_argument("--backend", default="tensorflow", help="project backend")
    parser.add_argument("--skip-classic", action="store_true", help="measure the project only")
    parser.add_argument(
        "--project-args", default="", help="extra `train` options for the project side, quoted"
    )
    parser.add_argument(
        "--baseline",
        metavar="REV",
        help="also measure the project as it was at this git commit (a third side, alternated too)",
    )
    parser.add_argument("--repeat", type=int, default=1, help="alternate the two sides this many times")
    parser.add_argument("--results", type=Path, default=HERE / "results.jsonl")
    parser.add_argument("--workspace", type=Path, help="keep runs here instead of a temporary folder")
    args = parser.parse_args()
    if not args.data.exists():
        raise SystemExit(f"no data at {args.data}: pass --data with the competition zip or a folder")

    workspace = args.workspace or Path(tempfile.mkdtemp(prefix="kaggle-mnist-bench-"))
    workspace.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "KAGGLE_MNIST_WORKSPACE": str(workspace), "TF_CPP_MIN_LOG_LEVEL": "3"}
    cli = [sys.executable, "-m", "competition"]
    subprocess.run(
        [*cli, "fetch", "--from", str(args.data)], cwd=workspace, env=env, check=True, capture_output=True
    )

    recipe = {
        "folds": args.folds,
        "seeds": args.seeds,
        "epochs": args.epochs,
        "subset": args.subset,
        "backend": args.backend,
    }
    train_args = [f"--{k}={v}" for k, v in recipe.items()] + [f"--batch-size={args.batch_size}"]
    line = {"device": device_name(args.backend), "recipe": recipe, "project_args": args.project_args}
    projects, baselines, classics = [], [], []
    if args.baseline:
        code = checkout(args.baseline, workspace / "baseline-code")
        line["baseline_commit"] = full_commit(args.baseline)
        # PYTHONPATH goes before the installed (editable) package, so `-m competition` runs the old code.
        baseline_env = {**env, "PYTHONPATH": str(code)}
    # Alternate the sides, so a slow spell of a shared machine hits each rather than one.
    for _ in range(args.repeat):
        projects.append(measure_project(cli, train_args + shlex.split(args.project_args), workspace, env))
        if args.baseline:
            baselines.append(measure_project(cli, train_args, workspace, baseline_env))
        if not args.skip_classic:
            classics.append(measure_classic(args, workspace, {**env, "KERAS_BACKEND": args.backend}))
    line["project"] = median_of(projects)
    if baselines:
        line["baseline"] = median_of(baselines)
        line["speedup_vs_baseline_per_member"] = round(
            line["project"]["images_per_second_per_member"]
            / line["baseline"]["images_per_second_per_member"],
            2,
        )
        line["speedup_vs_baseline_whole_process"] = round(
            line["baseline"]["wall_s"] / line["project"]["wall_s"], 2
        )
    if classics:
        line["classic"] = median_of(classics)
        # The classic recipe trains one net per fold; with --seeds > 1 the project does more work.
        line["speedup_whole_process"] = round(line["classic"]["wall_s"] / line["project"]["wall_s"], 2)
        line["speedup_per_epoch"] = round(
            line["classic"]["seconds_per_epoch"] / line["project"]["seconds_per_epoch"], 2
        )
        line["speedup_per_member_images_per_second"] = round(
            line["project"]["images_per_second_per_member"] / line["classic"]["images_per_second_per_member"],
            2,
        )
    print(json.dumps(append_result(args.results, line, args.repeat)))


if __name__ == "__main__":
    main()
