"""Small synthetic competition data, so tests never need the real download.

Each class is a different stroke (a bar at its own angle and place) plus noise: easy enough that a
tiny CNN learns it in one epoch, so training tests can assert that learning happened.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np

PIXELS = [f"pixel{i}" for i in range(784)]


def make_images(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 40, size=(len(labels), 28, 28)).astype(np.int32)
    for i, label in enumerate(labels):
        angle = np.pi * label / 10
        cx, cy = 14 + rng.integers(-2, 3), 14 + rng.integers(-2, 3)
        for t in np.linspace(-8, 8, 40):
            x = int(round(cx + t * np.cos(angle)))
            y = int(round(cy + t * np.sin(angle)))
            images[i, max(y - 1, 0) : y + 1, max(x - 1, 0) : x + 1] = 255
        # a blob whose place also depends on the class, so 0 and 5 etc. differ in more than angle
        bx, by = 4 + 2 * label, 4 if label % 2 else 23
        images[i, by - 2 : by + 2, bx - 2 : bx + 2] = 200
    return np.clip(images, 0, 255).astype(np.uint8)


def make_frames(
    n_train: int = 200, n_test: int = 50, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n_train) % 10
    rng.shuffle(labels)
    test_labels = rng.integers(0, 10, size=n_test)
    return labels, make_images(labels, seed), make_images(test_labels, seed + 1), test_labels


def train_csv(labels: np.ndarray, images: np.ndarray) -> str:
    rows = [",".join(["label", *PIXELS])]
    rows += [
        ",".join(map(str, [int(lab), *img.reshape(-1).tolist()]))
        for lab, img in zip(labels, images, strict=True)
    ]
    return "\n".join(rows) + "\n"


def test_csv(images: np.ndarray) -> str:
    rows = [",".join(PIXELS)] + [",".join(map(str, img.reshape(-1).tolist())) for img in images]
    return "\n".join(rows) + "\n"


def sample_csv(n: int) -> str:
    return "ImageId,Label\n" + "".join(f"{i},0\n" for i in range(1, n + 1))


def write_csvs(folder: Path, n_train: int = 200, n_test: int = 50, seed: int = 0) -> np.ndarray:
    """Writes train.csv, test.csv and sample_submission.csv; returns the (secret) test labels."""
    folder.mkdir(parents=True, exist_ok=True)
    labels, images, test_images, test_labels = make_frames(n_train, n_test, seed)
    (folder / "train.csv").write_text(train_csv(labels, images))
    (folder / "test.csv").write_text(test_csv(test_images))
    (folder / "sample_submission.csv").write_text(sample_csv(n_test))
    return test_labels


def zip_bytes(members: dict[str, str | bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in members.items():
            zf.writestr(name, content)
    return buffer.getvalue()


def competition_zip(n_train: int = 200, n_test: int = 50, seed: int = 0) -> tuple[bytes, np.ndarray]:
    labels, images, test_images, test_labels = make_frames(n_train, n_test, seed)
    data = zip_bytes(
        {
            "train.csv": train_csv(labels, images),
            "test.csv": test_csv(test_images),
            "sample_submission.csv": sample_csv(n_test),
        }
    )
    return data, test_labels
