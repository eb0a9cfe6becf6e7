"""Your own digit pictures into MNIST form, and predicted by a run."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from competition import backend
from competition.runs.folder import Run
from competition.scoring import images
from tests.conftest import assert_clean_failure, run_cli

backend.select("tensorflow")


def seven() -> np.ndarray:
    """A clean white-on-black 28x28 '7' (a bar and a diagonal stroke), slightly off MNIST's centre."""
    digit = np.zeros((28, 28), dtype=np.uint8)
    digit[6:9, 8:21] = 255
    for t in range(14):
        y, x = 8 + t, 19 - t // 2
        digit[y : y + 2, x - 1 : x + 2] = 255
    return digit


def black_on_white_canvas(digit: np.ndarray, scale: int = 6, size=(480, 360), at=(20, 170)) -> Image.Image:
    """The digit as a phone photo of paper might give it: dark ink, light paper, big, off-centre, RGB."""
    big = Image.fromarray(255 - digit).resize((28 * scale, 28 * scale), Image.Resampling.BILINEAR)
    canvas = Image.new("RGB", size, (250, 248, 240))
    canvas.paste(big.convert("RGB"), at)
    return canvas


def test_predict_images_skips_a_huge_picture_and_quotes_paths(run_copy, tmp_path, monkeypatch):
    from PIL import Image

    from competition.scoring import images

    workspace, _ = run_copy
    folder = tmp_path / "pics, mine"
    folder.mkdir()
    digit = np.zeros((28, 28), dtype=np.uint8)
    digit[6:22, 12:16] = 255
    Image.fromarray(digit).save(folder / 'a "one".png')
    Image.fromarray(np.zeros((200, 200), dtype=np.uint8)).save(folder / "huge.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # 200 x 200 is over twice that: a "bomb"
    out = tmp_path / "out.csv"
    predictions = images.predict_images([folder], csv=out)
    by_name = {p.path.name: p for p in predictions}
    assert by_name["huge.png"].error.startswith("too large to read")
    assert by_name['a "one".png'].label is not None
    import csv

    with open(out, newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[1][0] == str(folder / 'a "one".png') and len(rows) == 2


def test_off_centre_black_on_white_rgb_matches_the_original_mnist_form():
    original = images.to_mnist(Image.fromarray(seven()))
    from_canvas = images.to_mnist(black_on_white_canvas(seven()))
    assert from_canvas.shape == (28, 28) and from_canvas.dtype == np.uint8
    difference = np.abs(from_canvas.astype(int) - original.astype(int))
    assert difference.mean() < 12, difference.mean()
    assert np.corrcoef(from_canvas.ravel(), original.ravel())[0, 1] > 0.9


def test_mnist_form_is_centred_by_mass_and_fits_20x20():
    digit = images.to_mnist(black_on_white_canvas(seven(), at=(0, 0)))
    ys, xs = np.nonzero(digit > 0.2 * 255)
    assert ys.max() - ys.min() < 20 + 2 and xs.max() - xs.min() < 20 + 2
    rows, cols = np.indices(digit.shape)
    weights = digit.astype(float)
    centre = ((rows * weights).sum() / weights.sum(), (cols * weights).sum() / weights.sum())
    assert centre == pytest.approx((13.5, 13.5), abs=1.0)
    # Background is black, ink is white, whatever the polarity given.
    assert digit[0, 0] == 0 and digit.max() > 200


def test_blank_picture_is_refused():
    with pytest.raises(ValueError, match="no digit"):
        images.to_mnist(Image.new("L", (50, 50), 255))


@pytest.mark.slow
def test_mixed_folder_predicts_the_readable_files_and_names_the_rest(in_run, tmp_path):
    workspace, _ = in_run
    folder = tmp_path / "mine"
    (folder / "more").mkdir(parents=True)
    black_on_white_canvas(seven()).save(folder / "seven.png")
    Image.fromarray(seven()).save(folder / "more" / "white-on-black.jpg")
    Image.fromarray(255 - seven()).convert("RGBA").save(folder / "rgba.PNG")
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    Image.new("L", (40, 40), 255).save(folder / "blank.png")
    (folder / "notes.txt").write_text("not a picture")
    out = tmp_path / "labels.csv"
    result = run_cli("predict-images", str(folder), "--csv", str(out), cwd=workspace)
    assert result.returncode == 0, result.output
    assert "broken.png" in result.stderr and "not a readable PNG/JPEG" in result.stderr
    assert "blank.png" in result.stderr and "no digit found" in result.stderr
    assert "Traceback" not in result.output and "notes.txt" not in result.output
    rows = out.read_text().splitlines()
    assert rows[0] == "path,label,probability" and len(rows) == 4
    # Each row is the ensemble's own answer on the picture in MNIST form: the mean of the members'
    # probabilities, its arg max and its max.
    import keras


    run = Run.latest()
    models = [keras.models.load_model(run.member_dir(*m) / "model.keras") for m in run.members]
    for row in rows[1:]:
        path, label, probability = row.rsplit(",", 2)
        assert path.endswith(("seven.png", "white-on-black.jpg", "rgba.PNG"))
        with Image.open(path) as picture:
            digit = images.to_mnist(picture)[None]
        mean = np.mean([model.predict(digit, verbose=0)[0] for model in models], axis=0)
        assert int(label) == int(np.argmax(mean))
        assert float(probability) == pytest.approx(float(np.max(mean)), abs=2e-6)


@pytest.mark.slow
def test_predict_images_errors_are_one_line(in_run, tmp_path):
    workspace, _ = in_run
    (tmp_path / "broken.png").write_bytes(b"junk")
    assert_clean_failure(
        run_cli("predict-images", str(tmp_path / "broken.png"), cwd=workspace),
        "no digit picture could be read",
        "broken.png",
    )
    (tmp_path / "empty").mkdir()
    assert_clean_failure(run_cli("predict-images", str(tmp_path / "empty"), cwd=workspace), "no PNG or JPEG")

