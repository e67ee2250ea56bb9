"""EXIF orientation: every reader turns an image as it is displayed, so label maps line up with it.

A "phone photo" here is a generated 60x100 (HxW) street scene stored with EXIF orientation 6 ("turn 90
degrees clockwise"): viewers, OpenCV and hrseg show it 100x60.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hrseg.data.scenes import generate_scene
from hrseg.images import exif_orientation, open_image, to_image_tensor, upright

STORED = (60, 100)  # HxW of the pixels in the file
SHOWN = (100, 60)  # HxW as displayed


def oriented(orientation: int = 6, fmt: str = "PNG") -> tuple[bytes, np.ndarray, np.ndarray]:
    """A scene saved with an EXIF orientation tag: (file bytes, stored pixels, stored mask)."""
    image, mask = generate_scene(1, size=STORED)
    exif = Image.Exif()
    exif[0x0112] = orientation  # Orientation
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=fmt, exif=exif)
    return buffer.getvalue(), image, mask


def hrseg(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run(
        [sys.executable, "-m", "hrseg", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300
    )


@pytest.mark.parametrize(
    ("orientation", "turn"),
    [
        (1, lambda a: a),
        (3, lambda a: a[::-1, ::-1]),
        (6, lambda a: np.rot90(a, -1)),
        (8, lambda a: np.rot90(a)),
    ],
)
def test_files_and_pil_images_are_read_as_displayed(tmp_path: Path, orientation: int, turn: object) -> None:
    data, pixels, _ = oriented(orientation)  # PNG: lossless, so the pixels compare exactly
    path = tmp_path / "photo.png"
    path.write_bytes(data)
    expected = np.ascontiguousarray(turn(pixels))  # type: ignore[operator]
    with Image.open(path) as raw:
        assert exif_orientation(raw) == orientation
        np.testing.assert_array_equal(np.asarray(upright(raw)), expected)
    opened = open_image(path)
    np.testing.assert_array_equal(np.asarray(opened), expected)
    assert exif_orientation(opened) == 1  # the tag is applied once, never twice
    assert upright(opened) is opened
    for given in (path, Image.open(path)):  # a path and a PIL image straight from Image.open
        x, _ = to_image_tensor(given)
        np.testing.assert_array_equal((x[0].permute(1, 2, 0).numpy() * 255).round(), expected)


def test_segmenter_predicts_in_the_displayed_orientation(tiny_checkpoint: Path, tmp_path: Path) -> None:
    from hrseg.deploy import Segmenter

    data, _, _ = oriented(6, "JPEG")
    path = tmp_path / "phone.jpg"
    path.write_bytes(data)
    seg = Segmenter.from_checkpoint(tiny_checkpoint, device="cpu")
    mask = seg.predict(path)
    assert mask.shape == SHOWN
    np.testing.assert_array_equal(mask, seg.predict(np.asarray(open_image(path))))
    np.testing.assert_array_equal(seg.predict(Image.open(path)), mask)


def test_predict_command_writes_label_maps_as_displayed(tiny_checkpoint: Path, tmp_path: Path) -> None:
    data, _, _ = oriented(6, "JPEG")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "phone.jpg").write_bytes(data)
    out = tmp_path / "out"
    result = hrseg(
        "predict", "--ckpt_path", str(tiny_checkpoint), "--input", "in", "--output", str(out), "--overlay",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    written = sorted(out.glob("*.png"))
    assert len(written) >= 2, written
    for png in written:
        with Image.open(png) as img:
            assert (img.height, img.width) == SHOWN, png.name


def test_data_check_reports_a_mask_drawn_on_the_stored_pixels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    data, _, mask = oriented(6, "JPEG")
    (images / "phone.jpg").write_bytes(data)
    Image.fromarray(mask).save(
        masks / "phone.png"
    )  # the stored orientation: does not fit the displayed image
    (images / "fine.jpg").write_bytes(data)
    Image.fromarray(np.ascontiguousarray(np.rot90(mask, -1))).save(masks / "fine.png")  # drawn as displayed
    args = ["data", "check", "--datamodule", "folder", "--images-dir", "images", "--masks-dir", "masks"]
    result = hrseg(*args, "--num-classes", "19", "--no-progress", cwd=tmp_path)
    assert result.returncode == 1
    problems = [line.strip() for line in result.stdout.splitlines() if ": EXIF orientation" in line]
    assert problems == [
        "images/phone.jpg: EXIF orientation 6: the image is displayed (and read) turned 90 degrees "
        "clockwise, as 100x60 (HxW), but its mask masks/phone.png is 60x100, the size of the stored pixels; "
        "draw the mask on the image as displayed, or save the image's pixels turned and without the tag"
    ]
    assert "FAILED: 1 problem(s) found" in result.stdout
    assert "Traceback" not in result.stderr

    from hrseg.commands.data import main  # the same command in-process: a second start costs seconds

    Image.fromarray(np.ascontiguousarray(np.rot90(mask, -1))).save(masks / "phone.png")
    monkeypatch.chdir(tmp_path)
    assert main([*args[1:], "--num-classes", "19", "--no-progress"]) == 0


def test_dataset_samples_are_read_as_displayed(tmp_path: Path) -> None:
    from hrseg.data.checks import LabelSpec, Sample, load_sample

    data, pixels, mask = oriented(6)
    (tmp_path / "phone.png").write_bytes(data)
    Image.fromarray(np.ascontiguousarray(np.rot90(mask, -1))).save(tmp_path / "phone_mask.png")
    spec = LabelSpec(num_classes=19)
    image, labels = load_sample(Sample(tmp_path / "phone.png", tmp_path / "phone_mask.png", "phone"), spec)
    np.testing.assert_array_equal(image, np.rot90(pixels, -1))
    assert labels is not None and labels.shape == SHOWN
