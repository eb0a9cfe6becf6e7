"""`kaggle-mnist predict-images PATH...`: the ensemble on your own digit pictures.

Any size, grayscale or colour, dark-on-light or light-on-dark, digit anywhere in the frame: each picture
is brought to MNIST form the way MNIST itself was made (LeCun et al.): grayscale, background black,
cropped to the digit, fitted in a 20x20 box keeping its aspect ratio, then placed in 28x28 so that its
centre of mass is the centre. A model trained on MNIST expects exactly that.
"""

from __future__ import annotations

import csv as csv_module
import io
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from competition import storage
from competition.errors import UserError
from competition.runs.folder import Run

SUFFIXES = {".png", ".jpg", ".jpeg"}
BOX = 20  # MNIST: the digit fits in 20x20 ...
SIDE = 28  # ... centred by mass in 28x28
INK = 0.2  # a pixel counts as part of the digit above 20% of the darkest-to-brightest range


@dataclass(frozen=True)
class Prediction:
    path: Path
    label: int | None = None
    probability: float | None = None
    error: str | None = None


def to_mnist(image: Image.Image) -> np.ndarray:
    """A picture of one digit as a (28, 28) uint8 MNIST digit: white ink on black, centred by mass."""
    gray = _grayscale(image)
    background = np.median(np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]]))
    # The ink is whatever strays furthest from the paper (the frame's typical level): darker means dark
    # ink on light paper, which MNIST stores inverted. Percentiles, so a few noisy pixels do not decide.
    darkest, brightest = np.percentile(gray, [0.1, 99.9])
    if background - darkest > brightest - background:
        gray, background = 255.0 - gray, 255.0 - background
    brightest = np.percentile(gray, 99.9)
    if brightest - background < 32:
        raise ValueError("no digit found: the picture is almost uniform")
    ink = np.clip((gray - background) / (brightest - background), 0.0, 1.0)
    ys, xs = np.nonzero(ink > INK)
    digit = ink[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]

    scale = BOX / max(digit.shape)
    height, width = (max(1, round(n * scale)) for n in digit.shape)
    resized = Image.fromarray((digit * 255).astype(np.uint8)).resize(
        (width, height), Image.Resampling.LANCZOS
    )
    small = np.asarray(resized, dtype=np.float64)

    total = small.sum()
    rows, cols = np.indices(small.shape)
    centre_y, centre_x = (rows * small).sum() / total, (cols * small).sum() / total
    top = int(np.clip(round(SIDE / 2 - 0.5 - centre_y), 0, SIDE - height))
    left = int(np.clip(round(SIDE / 2 - 0.5 - centre_x), 0, SIDE - width))
    out = np.zeros((SIDE, SIDE), dtype=np.float64)
    out[top : top + height, left : left + width] = small
    return np.clip(out, 0, 255).round().astype(np.uint8)


def image_files(paths: Iterable[Path]) -> list[Path]:
    """Files named on the command line as they are; folders walked for PNG/JPEG files, sorted."""
    found = []
    for path in map(Path, paths):
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)
        else:
            found.append(path)
    return found


def predict_images(
    paths: Iterable[Path], run: str | None = None, csv: Path | None = None, log: Callable[[str], None] = print
) -> list[Prediction]:
    """Predicts every picture with the run's ensemble; unreadable files get an error, the rest go on."""
    from competition.training.model import load as load_model
    from competition.training.resume import predict_rows

    files = image_files(paths)
    if not files:
        raise UserError("no PNG or JPEG files found in the paths given")
    found = Run.open(run)
    digits, results = [], {}
    for path in files:
        try:
            with Image.open(path) as image:
                digits.append((path, to_mnist(image)))
        except FileNotFoundError:
            results[path] = Prediction(path, error="no such file")
        except IsADirectoryError:
            results[path] = Prediction(path, error="a folder, not a picture")
        except (Image.DecompressionBombError, MemoryError) as exc:
            # PIL refuses pictures big enough to be a decompression bomb; a phone photo is far below.
            results[path] = Prediction(path, error=f"too large to read ({type(exc).__name__}: {exc})")
        except (UnidentifiedImageError, OSError) as exc:
            results[path] = Prediction(path, error=f"not a readable PNG/JPEG image ({type(exc).__name__})")
        except ValueError as exc:
            results[path] = Prediction(path, error=str(exc))
    if digits:
        batch = np.stack([d for _, d in digits])
        probs = []
        for member in found.members:
            model = load_model(found.member_file(*member, "model.keras"))
            probs.append(predict_rows(model, batch))
        mean = np.mean(probs, axis=0)
        for (path, _), p in zip(digits, mean, strict=True):
            results[path] = Prediction(path, int(np.argmax(p)), float(np.max(p)))
    predictions = [results[p] for p in files]
    if csv is not None:
        out = io.StringIO()
        writer = csv_module.writer(out, lineterminator="\n")  # quotes paths with commas or quotes
        writer.writerow(["path", "label", "probability"])
        writer.writerows(
            [str(p.path), p.label, f"{p.probability:.6f}"] for p in predictions if p.error is None
        )
        storage.write_text(Path(csv), out.getvalue())
    return predictions


def _grayscale(image: Image.Image) -> np.ndarray:
    """Luminance as float; transparent pixels become the background the visible ink stands out from."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        alpha = np.asarray(rgba.getchannel("A"), dtype=np.float64) / 255.0
        luminance = np.asarray(rgba.convert("L"), dtype=np.float64)
        visible = luminance[alpha > 0.5]
        paper = 255.0 if visible.size == 0 or visible.mean() < 128 else 0.0  # dark ink: light paper
        return luminance * alpha + paper * (1 - alpha)
    return np.asarray(image.convert("L"), dtype=np.float64)


def show_predictions(predictions: list[Prediction], log: Callable[[str], None] = print) -> None:
    """The predictions as a table on the console, each unreadable file in a line of its own; refuses
    (one line) when not one picture could be read."""
    from rich.table import Table

    from competition.progress import console

    failed = [p for p in predictions if p.error is not None]
    if len(failed) == len(predictions):
        first = failed[0]
        more = f" (and {len(failed) - 1} more files)" if len(failed) > 1 else ""
        raise UserError(f"no digit picture could be read: {first.path}: {first.error}{more}")
    table = Table(title="Predictions")
    for column in ("file", "label", "probability"):
        table.add_column(column, justify="left" if column == "file" else "right")
    for p in predictions:
        if p.error is None:
            table.add_row(str(p.path), str(p.label), f"{p.probability:.2%}")
        else:
            table.add_row(str(p.path), "[red]error[/]", f"[red]{p.error}[/]")
    console.print(table)
    for p in failed:
        log(f"skipped {p.path}: {p.error}")
