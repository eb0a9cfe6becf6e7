"""The accuracy-time frontier: every whole recipe in holdout.jsonl as a point, its wall time to train
end to end on 2 workers against its held-out accuracy paired with the default's on the same rows.

    python benchmarks/frontier.py                    # redraws frontier.png and frontier.md
    python benchmarks/frontier.py --device "AMD EPYC"

Reads only benchmarks/holdout.jsonl (written by `holdout.py`), so both are redrawn from the results
file alone. A point's accuracy is the mean over holdout seeds 0 and 1 (and any further seed run for
both) of its held-out accuracy minus the default's on the same 8,400 rows (rows one fixes minus rows it
breaks), its bar the seeds' values;
its time the median wall time of its runs with 2 workers on one kind of CPU (`--device`; by default
the one with the most such runs), its bar their range: runs that had the machine to themselves
(`others_cpu_seconds`), else runs whose load was not recorded. Times from another CPU, from runs beside
other work, from runs of one core each (`--workers 1`, two seeds side by side), or of a run's last
part after a resume (`resumed`), are not comparable
and stay out of the picture; the table lists them as they are. A recipe is on the frontier when no other is at least as fast and more
accurate.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
LOG = HERE / "holdout.jsonl"
# The recipe every point is paired with: the default until session 20 (10 members at 1x width, 20
# epochs), logged as "default"; the default chosen from this frontier is logged as f5s1-w1.5.
REFERENCE = "default"
SEEDS = (0, 1)  # a point is paired when it has both; a third seed, where run, joins the mean


@dataclass
class Point:
    recipe: str
    options: str  # what follows `kaggle-mnist run --holdout ... --quiet`
    members: int
    epochs: int
    accuracy: dict[int, float] = field(default_factory=dict)  # holdout seed -> held-out accuracy
    gain: dict[int, tuple[int, int]] = field(default_factory=dict)  # seed -> (rows fixed, rows broken)
    seconds: dict[str, list[float]] = field(default_factory=dict)  # device -> 2-worker wall times
    unrecorded: dict[str, list[float]] = field(default_factory=dict)  # the same, the machine's load unknown
    shared: dict[str, list[float]] = field(default_factory=dict)  # the same, other work ran beside them
    one_core: dict[str, list[float]] = field(default_factory=dict)  # device -> times of one-core runs
    resumed: dict[str, list[float]] = field(default_factory=dict)  # the same, of a run's last part only
    commits: set[str] = field(default_factory=set)
    holdout: int = 8400

    def gain_points(self, seed: int) -> float:
        fixed, broken = self.gain[seed]
        return 100 * (fixed - broken) / self.holdout

    @property
    def paired(self) -> float | None:
        """Mean paired gain over the default, in points, over every holdout seed both ran, when that
        includes seeds 0 and 1."""
        if not all(s in self.gain for s in SEEDS):
            return None
        return statistics.mean(self.gain_points(s) for s in self.gain)


def whole_runs(entries: list[dict]) -> dict[tuple[str, int], dict]:
    """The latest logged run of each (recipe, holdout seed), leaving out one-member screens and
    rescored runs (`holdout.py --precise-bn`)."""
    latest = {}
    for entry in entries:
        if entry["recipe"].startswith("member:") or "+" in entry["recipe"] or entry["holdout"] != 8400:
            continue
        latest[entry["recipe"], entry["holdout_seed"]] = entry
    return latest


def options_of(command: str) -> str:
    """The recipe's own options: what the command adds after holdout.py's fixed ones."""
    tail = command.split("--quiet", 1)[-1]
    return re.sub(r"\s*--workers \d+", "", tail).strip()


def workers_of(command: str) -> int:
    found = re.search(r"--workers (\d+)", command)
    return int(found.group(1)) if found else 2  # `train` puts these runs on 2 workers on 2 cores


def points(entries: list[dict]) -> list[Point]:
    runs = whole_runs(entries)
    found: dict[str, Point] = {}
    for (recipe, seed), entry in sorted(runs.items()):
        point = found.setdefault(
            recipe, Point(recipe, options_of(entry["command"]), entry["members"], entry["epochs"])
        )
        point.accuracy[seed] = entry["holdout_accuracy"]
        point.commits.add(entry["commit"][:7])
        reference = runs.get((REFERENCE, seed))
        if reference is not None:
            mine, theirs = set(entry["wrong_rows"]), set(reference["wrong_rows"])
            point.gain[seed] = (len(theirs - mine), len(mine - theirs))
        if workers_of(entry["command"]) == 2:
            kinds = {"quiet": point.seconds, "unrecorded": point.unrecorded, "shared": point.shared}
            kind = point.resumed if entry.get("resumed") else kinds[load(entry)]
            kind.setdefault(entry["device"], []).append(entry["wall_seconds"])
        else:
            point.one_core.setdefault(entry["device"], []).append(entry["wall_seconds"])
    for point in found.values():  # a recipe never timed alone is drawn with the times whose load is unknown
        for device, times in point.unrecorded.items():
            point.seconds.setdefault(device, times)
    return list(found.values())


def load(entry: dict) -> str:
    """quiet: other processes took under 5% of the 2 cores while it ran (`others_cpu_seconds`, which
    holdout.py logs); shared: more, or other work is known to have run beside it (`shared_machine`);
    unrecorded: runs logged before either was."""
    others = entry.get("others_cpu_seconds")
    if entry.get("shared_machine") or (others is not None and others > 0.05 * 2 * entry["wall_seconds"]):
        return "shared"
    return "unrecorded" if others is None else "quiet"


def busiest_device(found: list[Point]) -> str:
    counts = Counter(device for p in found for device, times in p.seconds.items() for _ in times)
    return counts.most_common(1)[0][0]


def on_frontier(point: Point, others: list[Point], device: str) -> bool:
    if point.paired is None or device not in point.seconds:
        return False
    time = statistics.median(point.seconds[device])
    for other in others:
        if other is point or other.paired is None or device not in other.seconds:
            continue
        if statistics.median(other.seconds[device]) <= time and other.paired > point.paired:
            return False
    return True


def table(found: list[Point], device: str) -> str:
    lines = [
        "# The accuracy-time frontier",
        "",
        f"Written by `python benchmarks/frontier.py` from `holdout.jsonl`; the picture is `frontier.png`. "
        f"Wall time: `kaggle-mnist run --holdout 8400` end to end on 2 workers on {device} "
        "(median of the runs, range in brackets). Held-out accuracy on 8,400 rows per holdout seed; "
        f"paired: rows fixed / broken against `{REFERENCE}` (10 members at 1x width, the default before this "
        "frontier chose 5 at 1.5x) on the same rows, and the mean gain in points. Options as they were run, "
        "against the defaults of their commit (10 members at 1x width up to c24a18a, 5 at 1.5x after); today "
        "`kaggle-mnist run --folds 5` trains f5s1-w1.5 and `--recipe quick` f3s1.",
        "",
    ]
    shown = sorted({s for p in found for s in p.accuracy} | set(SEEDS))
    lines += [
        "| recipe | options after `kaggle-mnist run` | members x epochs | wall time | "
        + " | ".join(f"seed {s}" for s in shown)
        + " | paired with the default | frontier | commits |",
        "| --- " * (len(shown) + 7) + "|",
    ]
    for point in sorted(found, key=lambda p: _time(p, device) or float("inf")):
        times = point.seconds.get(device)
        if times:
            wall = f"{statistics.median(times) / 60:.1f} min"
            wall += f" ({min(times) / 60:.1f}-{max(times) / 60:.1f}, {len(times)} runs)" if len(times) > 1 else " (1 run)"
        else:
            elsewhere = [f"{statistics.median(t) / 60:.0f} min on {d}" for d, t in point.seconds.items()]
            elsewhere += [
                f"{', '.join(f'{x / 60:.0f}' for x in t)} min with one core a run, two runs side by side, on {d}"
                for d, t in point.one_core.items()
            ]
            elsewhere += [f"{', '.join(f'{x / 60:.0f}' for x in t)} min beside other work" for t in point.shared.values()]
            elsewhere += [
                f"{', '.join(f'{x / 60:.0f}' for x in t)} min for the part after a resume" for t in point.resumed.values()
            ]
            wall = "not timed here: " + "; ".join(elsewhere)
        seeds = [f"{point.accuracy[s]:.3%}" if s in point.accuracy else "" for s in shown]
        if point.recipe == REFERENCE:
            paired = "(the reference)"
        elif point.gain:
            parts = [f"seed {s}: {f} / {b}" for s, (f, b) in sorted(point.gain.items())]
            mean = f"**{point.paired:+.3f} pt**" if point.paired is not None else "one seed only"
            paired = f"{mean} ({', '.join(parts)})"
        else:
            paired = ""
        frontier = "yes" if on_frontier(point, found, device) else ""
        lines.append(
            f"| {point.recipe} | {f'`{point.options}`' if point.options else '(none)'} | {point.members} x {point.epochs} | {wall} | "
            f"{' | '.join(seeds)} | {paired} | {frontier} | {', '.join(sorted(point.commits))} |"
        )
    return "\n".join(lines) + "\n"


def _time(point: Point, device: str) -> float | None:
    times = point.seconds.get(device)
    return statistics.median(times) if times else None


def picture(found: list[Point], device: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 6.5))
    drawn = [p for p in found if p.paired is not None and device in p.seconds]
    frontier = sorted((p for p in drawn if on_frontier(p, found, device)), key=lambda p: _time(p, device))
    if len(frontier) > 1:
        ax.plot(
            [_time(p, device) / 60 for p in frontier],
            [p.paired for p in frontier],
            color="tab:green",
            alpha=0.4,
            linewidth=6,
            zorder=1,
            label="frontier",
        )
    for point in drawn:
        times = point.seconds[device]
        x = statistics.median(times) / 60
        gains = [point.gain_points(s) for s in point.gain]
        ax.errorbar(
            x,
            point.paired,
            xerr=[[x - min(times) / 60], [max(times) / 60 - x]],
            yerr=[[point.paired - min(gains)], [max(gains) - point.paired]],
            fmt="o",
            color="tab:red" if point.recipe == REFERENCE else "tab:blue",
            capsize=3,
            zorder=2,
        )
        options = point.options or "the default before: --seeds 2 --width 1 today"
        label = f"{point.recipe}: {point.members} x {point.epochs}\n{options}"
        ax.annotate(label, (x, point.paired), textcoords="offset points", xytext=(6, 4), fontsize=7)
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set_xlim(left=0)
    ax.set_xlabel(f"wall time to train and predict, minutes (2 workers, {device})")
    ax.set_ylabel("held-out accuracy minus the default's, paired (points)")
    ax.set_title(
        "Accuracy-time frontier: `kaggle-mnist run --holdout 8400`, mean over holdout seeds (0, 1; 2 where run)\n"
        "(bars: the seeds' range; the time's range over runs)",
        fontsize=10,
    )
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", help="the CPU whose wall times are drawn (a substring of the logged device)")
    args = parser.parse_args()
    entries = [json.loads(line) for line in LOG.read_text().splitlines() if line.strip()]
    found = points(entries)
    device = busiest_device(found)
    if args.device:
        device = next(d for p in found for d in p.seconds if args.device in d)
    (HERE / "frontier.md").write_text(table(found, device))
    picture(found, device, HERE / "frontier.png")
    print(f"wrote {HERE / 'frontier.md'} and {HERE / 'frontier.png'} ({device})")


if __name__ == "__main__":
    main()
