"""FolderDataModule: pairing by stem, seeded or listed splits, custom class metadata."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hrseg.data import DatasetError, FolderDataModule


def _dm(dirs: tuple[Path, Path], **kw) -> FolderDataModule:
    kw.setdefault("num_classes", 4)
    kw.setdefault("crop_size", (16, 16))
    return FolderDataModule(images_dir=str(dirs[0]), masks_dir=str(dirs[1]), batch_size=2, **kw)


def test_pairs_by_stem_and_seeded_split(folder_dirs: tuple[Path, Path]) -> None:
    dm = _dm(folder_dirs, val_ratio=0.34, seed=3)
    dm.setup("fit")
    train = [s.name for s in dm.train_dataset.samples]
    val = [s.name for s in dm.val_dataset.samples]
    assert len(val) == 2 and len(train) == 4
    assert sorted(train + val) == [f"img{i:02d}" for i in range(6)]
    assert {s.image.suffix for s in dm.train_dataset.samples + dm.val_dataset.samples} == {".png", ".jpg"}
    again = _dm(folder_dirs, val_ratio=0.34, seed=3)
    again.setup("fit")
    assert [s.name for s in again.val_dataset.samples] == val
    for i, s in enumerate(dm.val_dataset.samples):
        _, mask, _ = dm.val_dataset.load(i)
        np.testing.assert_array_equal(mask, np.asarray(Image.open(s.mask)))
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (2, 3, 16, 16)


def test_list_files(folder_dirs: tuple[Path, Path], tmp_path: Path) -> None:
    (tmp_path / "train.txt").write_text("img00\nimg01.jpg\nimg02\n")
    (tmp_path / "val.txt").write_text("img03\n")
    dm = _dm(folder_dirs, train_list=str(tmp_path / "train.txt"), val_list=str(tmp_path / "val.txt"))
    dm.setup("fit")
    assert [s.name for s in dm.train_dataset.samples] == ["img00", "img01", "img02"]
    assert [s.name for s in dm.val_dataset.samples] == ["img03"]
    (tmp_path / "bad.txt").write_text("img00\nghost\n")
    bad = _dm(folder_dirs, train_list=str(tmp_path / "bad.txt"))
    with pytest.raises(DatasetError, match="ghost"):
        bad.setup("fit")


def test_class_metadata(folder_dirs: tuple[Path, Path]) -> None:
    names = ["a", "b", "c", "d"]
    pal = [(1, 2, 3), (4, 5, 6), (7, 8, 9), (10, 11, 12)]
    dm = _dm(folder_dirs, class_names=names, palette=pal, ignore_index=255)
    assert list(dm.labels.class_names) == names and list(dm.labels.palette) == pal
    default = _dm(folder_dirs)
    assert len(default.labels.palette) == 4 and default.labels.class_names[0] == "class_0"
    with pytest.raises(ValueError, match="class names"):
        _dm(folder_dirs, class_names=["x"])


def test_mask_suffix(tmp_path: Path) -> None:
    (tmp_path / "im").mkdir()
    (tmp_path / "gt").mkdir()
    for i in range(3):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "im" / f"x{i}.png")
        Image.fromarray(np.ones((8, 8), np.uint8), mode="L").save(tmp_path / "gt" / f"x{i}_mask.png")
    dm = FolderDataModule(
        str(tmp_path / "im"),
        str(tmp_path / "gt"),
        num_classes=2,
        mask_suffix="_mask",
        crop_size=None,
        val_ratio=0.34,
    )
    dm.setup("fit")
    assert len(dm.train_dataset) + len(dm.val_dataset) == 3


def test_orphans_and_missing_masks(folder_dirs: tuple[Path, Path]) -> None:
    masks = folder_dirs[1]
    (masks / "img02.png").unlink()
    Image.fromarray(np.zeros((4, 4), np.uint8), mode="L").save(masks / "lonely.png")
    with pytest.raises(DatasetError) as err:
        _dm(folder_dirs).setup("fit")
    msg = str(err.value)
    assert "img02" in msg and "missing mask" in msg
    assert "lonely.png" in msg and "mask without image" in msg
