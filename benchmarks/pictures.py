"""Digits from train.csv saved as the pictures a user would feed `kaggle-mnist predict-images`:
dark ink on light paper, scaled up, off-centre in a larger RGB canvas (slightly tinted paper).

    python benchmarks/pictures.py OUT_DIR --rows 36000:36500    # writes PNGs + labels.csv
    kaggle-mnist predict-images OUT_DIR --csv predicted.csv
    python benchmarks/pictures.py OUT_DIR --score predicted.csv  # accuracy against labels.csv

Use rows the run never trained on (train with --subset N, take rows from N on) for an honest figure.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
from PIL import Image

from competition import data


def write_pictures(out: Path, rows: range, seed: int = 0) -> None:
    dataset = data.load()
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "labels.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "label"])
        for row in rows:
            scale = int(rng.integers(3, 9))
            side = 28 * scale
            width, height = side + int(rng.integers(40, 400)), side + int(rng.integers(40, 300))
            paper = tuple(int(v) for v in rng.integers(215, 256, size=3))
            ink = Image.fromarray(dataset.train_images[row]).resize((side, side), Image.Resampling.BICUBIC)
            ink_canvas = np.zeros((height, width), dtype=np.float64)
            top, left = int(rng.integers(0, height - side)), int(rng.integers(0, width - side))
            ink_canvas[top : top + side, left : left + side] = np.asarray(ink, dtype=np.float64) / 255
            # Dark ink on tinted paper: each channel is the paper's colour darkened by the ink.
            pixels = np.array(paper, dtype=np.float64) * (1 - np.clip(ink_canvas, 0, 1))[..., None]
            canvas = Image.fromarray(pixels.round().astype(np.uint8), "RGB")
            name = f"row{row:05d}.png"
            canvas.save(out / name)
            writer.writerow([name, int(dataset.train_labels[row])])


def score(out: Path, predicted: Path) -> float:
    labels = {r["file"]: int(r["label"]) for r in csv.DictReader(open(out / "labels.csv"))}
    guesses = {Path(r["path"]).name: int(r["label"]) for r in csv.DictReader(open(predicted))}
    right = sum(guesses.get(name) == label for name, label in labels.items())
    print(
        f"{right} of {len(labels)} right ({right / len(labels):.2%}); {len(labels) - len(guesses)} not predicted"
    )
    return right / len(labels)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("out", type=Path)
    parser.add_argument("--rows", default="36000:36500", help="START:STOP rows of train.csv")
    parser.add_argument("--score", type=Path, help="a predict-images --csv file to score")
    args = parser.parse_args()
    if args.score:
        score(args.out, args.score)
    else:
        start, stop = map(int, args.rows.split(":"))
        write_pictures(args.out, range(start, stop))
