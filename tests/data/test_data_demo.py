"""DemoDataModule: contract shapes and dtypes, determinism, caching; prediction inputs; plotting."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hrseg.data import DemoDataModule, generate_scene
from hrseg.metadata import get_label_set


def test_demo_batches_follow_the_contract() -> None:
    dm = DemoDataModule(num_train=6, num_val=3, image_size=(64, 128), batch_size=4)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"image", "mask", "name"}
    assert batch["image"].shape == (4, 3, 64, 128) and batch["image"].dtype == torch.float32
    assert batch["mask"].shape == (4, 64, 128) and batch["mask"].dtype == torch.int64
    assert len(batch["name"]) == 4 and isinstance(batch["name"][0], str)
    assert batch["mask"].max() < 19
    assert len(dm.train_dataloader()) == 1  # drop_last
    val = next(iter(dm.val_dataloader()))
    assert val["image"].shape == (1, 3, 64, 128)
    assert dm.labels == get_label_set("cityscapes") and dm.labels.ignore_index == 255
    assert len(dm.labels.palette) == 19 and dm.mean == (0.485, 0.456, 0.406)
    dm.setup("predict")
    pred = next(iter(dm.predict_dataloader()))
    assert set(pred) == {"image", "name", "path", "error"} and pred["image"].shape == (1, 3, 64, 128)


def test_demo_crop_and_workers() -> None:
    dm = DemoDataModule(
        num_train=4, num_val=2, image_size=(64, 128), crop_size=(32, 48), batch_size=2, num_workers=1
    )
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert loader.persistent_workers
    batch = next(iter(loader))
    assert batch["image"].shape == (2, 3, 32, 48)


def test_scenes_are_deterministic_and_varied() -> None:
    a_img, a_mask = generate_scene([0, 0, 1], (64, 128))
    b_img, b_mask = generate_scene([0, 0, 1], (64, 128))
    c_img, _ = generate_scene([0, 0, 2], (64, 128))
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_mask, b_mask)
    assert not np.array_equal(a_img, c_img)
    assert a_img.dtype == np.uint8 and a_img.shape == (64, 128, 3) and a_mask.shape == (64, 128)
    dm = DemoDataModule(num_train=40, num_val=2, image_size=(64, 128))
    _, masks = dm.scenes("train")
    present = set(np.unique(np.stack(masks)).tolist())
    assert present == set(range(dm.labels.num_classes))  # all 19 classes, none beyond, no ignore


def test_demo_cache_dir(tmp_path: Path) -> None:
    dm = DemoDataModule(num_train=2, num_val=1, image_size=(32, 64), cache_dir=str(tmp_path))
    imgs, masks = dm.scenes("train")
    files = sorted(tmp_path.rglob("*.png"))
    assert len(files) == 4
    again = DemoDataModule(num_train=2, num_val=1, image_size=(32, 64), cache_dir=str(tmp_path))
    imgs2, masks2 = again.scenes("train")
    np.testing.assert_array_equal(imgs[1], imgs2[1])
    np.testing.assert_array_equal(masks[1], masks2[1])


def test_predict_path_any_size_and_mode(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(folder / "rgb.png")
    Image.fromarray(np.zeros((17, 9), np.uint8), mode="L").save(folder / "grey.png")
    Image.fromarray(np.zeros((8, 12, 4), np.uint8), mode="RGBA").save(folder / "rgba.png")
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(folder / "photo.jpg")
    (folder / "notes.txt").write_text("not an image")
    for path, n in ((str(folder), 4), (str(folder / "*.png"), 3), (str(folder / "rgb.png"), 1)):
        dm = DemoDataModule(num_train=1, num_val=1, predict_path=path)
        dm.setup("predict")
        batches = list(dm.predict_dataloader())
        assert len(batches) == n
        for b in batches:
            assert set(b) == {"image", "name", "path", "error"} and b["image"].shape[:2] == (1, 3)
            assert Path(b["path"][0]).stem == b["name"][0]
    from hrseg.data import DatasetError

    with pytest.raises(DatasetError, match="no images found"):
        DemoDataModule(num_train=1, num_val=1, predict_path=str(folder / "*.bmp")).setup("predict")


def test_plot_returns_figure() -> None:
    from matplotlib.figure import Figure

    dm = DemoDataModule(num_train=1, num_val=1, image_size=(32, 64))
    dm.setup("validate")
    batch = next(iter(dm.val_dataloader()))
    fig = dm.plot(batch)
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    logits = torch.randn(19, 32, 64)
    fig = dm.plot(dm.val_dataset[0], prediction=logits)
    assert len(fig.axes) == 3


def test_scenes_and_label_tables_import_without_the_training_stack() -> None:
    """The deployment path draws scenes and reads label tables; hrseg.data must not load Lightning for it."""
    code = (
        "import sys; from hrseg.data import generate_scene; import hrseg.data.scenes; "
        "image, mask = generate_scene(0, (32, 64)); assert image.shape == (32, 64, 3) and mask.max() < 19; "
        "print(','.join(m for m in ('albumentations', 'cv2', 'lightning') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == ""
