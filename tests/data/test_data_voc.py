"""VOCDataModule: palette masks read as indices, 255 borders, the aug split, root variants."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hrseg_data_trees import make_voc_tree
from PIL import Image

from hrseg.data import DatasetError, VOCDataModule


def _dm(root: Path, **kw) -> VOCDataModule:
    return VOCDataModule(root=str(root), crop_size=(16, 16), batch_size=2, **kw)


def test_palette_masks_read_as_indices(voc_root: Path) -> None:
    dm = _dm(voc_root)
    dm.setup("fit")
    assert len(dm.train_dataset) == 3 and len(dm.val_dataset) == 2
    for i, s in enumerate(dm.val_dataset.samples):
        img = Image.open(s.mask)
        assert img.mode == "P"
        expected = np.asarray(img)  # palette indices, never colours
        _, mask, _ = dm.val_dataset.load(i)
        np.testing.assert_array_equal(mask, expected)
        assert 255 in mask  # borders kept as ignore
        assert set(np.unique(mask)) <= set(range(21)) | {255}
    batch = next(iter(dm.val_dataloader()))
    assert batch["mask"].shape == (1, 40, 48)
    assert dm.labels.num_classes == 21 and dm.labels.class_names[0] == "background"
    assert dm.labels.palette[1] == (128, 0, 0)


@pytest.mark.parametrize("sub", ["", "VOCdevkit", "VOCdevkit/VOC2012"])
def test_root_variants(voc_root: Path, sub: str) -> None:
    dm = _dm(voc_root / sub if sub else voc_root)
    assert dm.voc_dir == voc_root / "VOCdevkit" / "VOC2012"


def test_root_not_found(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no PASCAL VOC 2012 tree"):
        _dm(tmp_path).setup("fit")


@pytest.mark.parametrize("aug_list", ["trainaug", "aug"])
def test_aug_split(tmp_path: Path, aug_list: str) -> None:
    root = make_voc_tree(tmp_path, aug_list=aug_list)
    dm = _dm(root, aug=True)
    dm.setup("fit")
    train = dm.train_dataset.samples
    assert len(train) == 5
    assert all(s.mask.parent.name == "SegmentationClassAug" for s in train)
    assert all(s.mask.parent.name == "SegmentationClass" for s in dm.val_dataset.samples)
    for i in range(len(train)):
        _, mask, _ = dm.train_dataset.load(i)
        np.testing.assert_array_equal(mask, np.asarray(Image.open(train[i].mask)))


def test_aug_without_list_fails(tmp_path: Path) -> None:
    root = make_voc_tree(tmp_path, aug_list="none")
    with pytest.raises(DatasetError, match="no augmented training list"):
        _dm(root, aug=True).setup("fit")


def test_deeplab_style_list_lines(voc_root: Path) -> None:
    lists = voc_root / "VOCdevkit/VOC2012/ImageSets/Segmentation"
    ids = (lists / "trainaug.txt").read_text().split()
    (lists / "trainaug.txt").write_text(
        "".join(f"/JPEGImages/{i}.jpg /SegmentationClassAug/{i}.png\n" for i in ids)
    )
    dm = _dm(voc_root, aug=True)
    dm.setup("fit")
    assert [s.name for s in dm.train_dataset.samples] == ids


def test_listed_image_missing(voc_root: Path) -> None:
    (voc_root / "VOCdevkit/VOC2012/JPEGImages/2008_000001.jpg").unlink()
    with pytest.raises(DatasetError, match=r"2008_000001\.jpg: image listed in val\.txt not found"):
        _dm(voc_root).setup("validate")
