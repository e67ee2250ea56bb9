"""hrseg.images: listing image files and opening them, with errors that name the file."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from hrseg.images import ImageFileError, list_images, open_image


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    for rel in ("b.png", "a.JPG", "notes.txt", "city/c.png", "city/deeper/d.jpeg"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith(".txt"):
            (tmp_path / rel).write_text("not an image")
        else:
            Image.new("RGB", (4, 3)).save(tmp_path / rel, format="PNG" if rel.endswith(".png") else "JPEG")
    return tmp_path


def test_list_images_folder_glob_and_file(folder: Path) -> None:
    assert [p.name for p in list_images(folder)] == ["a.JPG", "b.png"]
    assert [p.name for p in list_images(folder, recursive=True)] == ["a.JPG", "b.png", "c.png", "d.jpeg"]
    assert [p.name for p in list_images(str(folder / "**" / "*.png"))] == ["b.png", "c.png"]
    assert list_images(folder / "b.png") == [folder / "b.png"]


def test_list_images_names_what_is_missing(folder: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere: neither a folder"):
        list_images(folder / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"city/deeper/\*\.png: no images found"):
        list_images(str(folder / "city" / "deeper" / "*.png"))


def test_open_image_names_a_corrupt_file(folder: Path) -> None:
    bad = folder / "bad.png"
    bad.write_bytes((folder / "b.png").read_bytes()[:20])
    with pytest.raises(ImageFileError, match=r"bad\.png: unreadable or corrupt"):
        open_image(bad)
    with pytest.raises(FileNotFoundError, match=r"missing\.png: image file not found"):
        open_image(folder / "missing.png")
