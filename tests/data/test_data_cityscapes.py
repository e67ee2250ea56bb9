"""CityscapesDataModule on generated trees in the exact distributed layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hrseg_data_trees import all_ids_mask, reference_train_ids
from PIL import Image

from hrseg.data import CityscapesDataModule, DatasetError


def _dm(root: Path, **kw) -> CityscapesDataModule:
    kw.setdefault("crop_size", (16, 32))
    return CityscapesDataModule(root=str(root), batch_size=2, **kw)


def test_labelids_mapped_pixel_by_pixel(cityscapes_root: Path) -> None:
    dm = _dm(cityscapes_root)
    dm.setup("fit")
    ds = dm.val_dataset
    assert len(ds) == 2 and len(dm.train_dataset) == 3
    for i, sample in enumerate(ds.samples):
        assert sample.mask.name.endswith("_gtFine_labelIds.png")
        raw = np.asarray(Image.open(sample.mask))
        assert set(np.unique(raw)) == set(range(34)) | {255}
        expected = reference_train_ids(raw)
        _, mask, _ = ds.load(i)
        np.testing.assert_array_equal(mask, expected)
        item = ds[i]
        assert item["mask"].dtype == torch.int64
        np.testing.assert_array_equal(item["mask"].numpy(), expected)
    batch = next(iter(dm.val_dataloader()))
    assert batch["image"].shape == (1, 3, 32, 72) and batch["image"].dtype == torch.float32
    assert batch["mask"].dtype == torch.int64
    assert batch["name"] == [ds.samples[0].name]


def test_labeltrainids_preferred(cityscapes_trainids_root: Path) -> None:
    dm = _dm(cityscapes_trainids_root)
    dm.setup("validate")
    ds = dm.val_dataset
    for i, s in enumerate(ds.samples):
        assert s.mask.name.endswith("_gtFine_labelTrainIds.png")
        _, mask, _ = ds.load(i)
        np.testing.assert_array_equal(mask, reference_train_ids(all_ids_mask(shift=i)))
    forced = _dm(cityscapes_trainids_root, label_type="labelIds")
    forced.setup("validate")
    assert all(s.mask.name.endswith("_labelIds.png") for s in forced.val_dataset.samples)


def test_train_batches_and_trainval(cityscapes_root: Path) -> None:
    dm = _dm(cityscapes_root, train_split="trainval")
    dm.setup("fit")
    assert len(dm.train_dataset) == 5
    loader = dm.train_dataloader()
    assert loader.drop_last and loader.batch_size == 2
    batch = next(iter(loader))
    assert batch["image"].shape == (2, 3, 16, 32) and batch["mask"].shape == (2, 16, 32)
    valid = (batch["mask"] < 19) | (batch["mask"] == 255)
    assert valid.all()
    assert dm.labels.num_classes == 19 and dm.labels.ignore_index == 255 and len(dm.labels.class_names) == 19


def test_test_split_is_predict_only(cityscapes_root: Path) -> None:
    dm = _dm(cityscapes_root)
    dm.setup("predict")
    batch = next(iter(dm.predict_dataloader()))
    assert set(batch) == {"image", "name", "path", "error"}
    assert batch["path"][0].endswith("_leftImg8bit.png") and "/test/" in batch["path"][0]
    assert batch["image"].shape == (1, 3, 32, 72)


def test_missing_directories_raise_in_setup(tmp_path: Path, cityscapes_root: Path) -> None:
    with pytest.raises(DatasetError, match="Cityscapes root directory not found"):
        _dm(tmp_path / "nope").setup("fit")
    import shutil

    shutil.rmtree(cityscapes_root / "gtFine" / "val")
    with pytest.raises(DatasetError, match=r"gtFine/val"):
        _dm(cityscapes_root).setup("validate")


def test_empty_split_raises(tmp_path: Path) -> None:
    for d in ("leftImg8bit/train", "gtFine/train"):
        (tmp_path / d).mkdir(parents=True)
    with pytest.raises(DatasetError, match="no samples"):
        _dm(tmp_path).setup("fit")


def test_label_without_image_is_reported(cityscapes_root: Path) -> None:
    next((cityscapes_root / "leftImg8bit" / "val").glob("*/*.png")).unlink()
    with pytest.raises(DatasetError, match="label without image"):
        _dm(cityscapes_root).setup("validate")


def test_predict_falls_back_to_val_without_test_images(cityscapes_root: Path) -> None:
    import shutil

    shutil.rmtree(cityscapes_root / "leftImg8bit" / "test")
    dm = _dm(cityscapes_root)
    with pytest.warns(UserWarning, match="predicting over 'val'"):
        dm.setup("predict")
    batch = next(iter(dm.predict_dataloader()))
    assert "/val/" in batch["path"][0] and set(batch) == {"image", "name", "path", "error"}


def test_num_workers_auto_follows_the_device(cityscapes_root: Path, monkeypatch) -> None:
    import os

    import hrseg.data.loaders as loaders
    from hrseg.data import auto_num_workers

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert auto_num_workers("cpu") == 0  # workers would compete with the training threads
    assert auto_num_workers("cuda") == loaders.MAX_AUTO_WORKERS
    assert auto_num_workers("cuda", processes_per_node=4) == 3  # one core per process left to the process
    assert auto_num_workers("cuda", processes_per_node=32) == 1

    dm = CityscapesDataModule(root=str(cityscapes_root), batch_size=2, crop_size=(32, 64))
    assert dm.num_workers is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    dm.setup("fit")
    assert dm.loader_workers == 0 and dm.train_dataloader().num_workers == 0
    explicit = CityscapesDataModule(root=str(cityscapes_root), num_workers=3)
    assert explicit.loader_workers == 3
    with pytest.raises(ValueError, match="num_workers"):
        CityscapesDataModule(root=str(cityscapes_root), num_workers=-1)
