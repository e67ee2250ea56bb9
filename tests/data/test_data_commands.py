"""``hrseg data synth`` writes the real layouts and the real loaders read them; ``check --config``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hrseg.commands.data import main as data_main
from hrseg.data import CityscapesDataModule, FolderDataModule, VOCDataModule


def _synth(layout: str, out: Path, *extra: str) -> None:
    assert (
        data_main(
            [
                "synth",
                "--layout",
                layout,
                "--output",
                str(out),
                "--num",
                "4",
                "--size",
                "48x96",
                "--no-progress",
                *extra,
            ]
        )
        == 0
    )


def test_synth_cityscapes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _synth("cityscapes", tmp_path, "--train-ids")
    assert len(list((tmp_path / "leftImg8bit/train").glob("*/*_leftImg8bit.png"))) == 4
    assert len(list((tmp_path / "gtFine/val").glob("*/*_gtFine_labelIds.png"))) == 1
    assert len(list((tmp_path / "gtFine/val").glob("*/*_gtFine_labelTrainIds.png"))) == 1
    assert len(list((tmp_path / "leftImg8bit/test").glob("*/*_leftImg8bit.png"))) == 1
    for lt in ("labelIds", "trainIds"):
        dm = CityscapesDataModule(str(tmp_path), crop_size=(32, 32), batch_size=2, label_type=lt)
        dm.setup("fit")
        batch = next(iter(dm.train_dataloader()))
        assert batch["image"].shape == (2, 3, 32, 32) and batch["mask"].dtype == torch.int64
        _, mask, _ = dm.val_dataset.load(0)
        assert mask.shape == (48, 96) and (mask[:2] == 255).all() and mask[5:-5, 5:-5].max() < 19
    capsys.readouterr()
    assert data_main(["check", "--datamodule", "cityscapes", "--root", str(tmp_path), "--no-progress"]) == 0


def test_synth_voc(tmp_path: Path) -> None:
    _synth("voc", tmp_path)
    voc = tmp_path / "VOCdevkit/VOC2012"
    masks = sorted((voc / "SegmentationClass").glob("*.png"))
    assert masks
    with Image.open(masks[0]) as first:
        assert first.mode == "P"
    assert (voc / "ImageSets/Segmentation/trainaug.txt").is_file()
    dm = VOCDataModule(str(tmp_path), aug=True, crop_size=(32, 32), batch_size=2)
    dm.setup("fit")
    assert len(dm.train_dataset) == 8 and len(dm.val_dataset) == 1
    _, mask, _ = dm.val_dataset.load(0)
    assert set(np.unique(mask)) <= set(range(21)) | {255}
    assert data_main(["check", "--datamodule", "voc", "--root", str(tmp_path), "--aug", "--no-progress"]) == 0


def test_synth_folder_and_check_config(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "f"
    _synth("folder", out)
    dm = FolderDataModule(
        str(out / "images"),
        str(out / "masks"),
        num_classes=19,
        crop_size=None,
        train_list=str(out / "train.txt"),
        val_list=str(out / "val.txt"),
    )
    dm.setup("fit")
    assert len(dm.train_dataset) == 4 and len(dm.val_dataset) == 1
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        "trainer:\n  max_epochs: 1\n"
        "data:\n  class_path: hrseg.data.FolderDataModule\n  init_args:\n"
        f"    images_dir: {out / 'images'}\n    masks_dir: {out / 'masks'}\n    num_classes: 19\n"
        f"    train_list: {out / 'train.txt'}\n    val_list: {out / 'val.txt'}\n    num_workers: 2\n"
    )
    capsys.readouterr()
    assert data_main(["check", "--config", str(cfg), "--no-progress"]) == 0
    assert "FolderDataModule" in capsys.readouterr().out
    (out / "masks" / "val_00000.png").unlink()
    assert data_main(["check", "--config", str(cfg), "--split", "val", "--no-progress"]) == 1
    assert "val_00000" in capsys.readouterr().out


def test_check_config_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert data_main(["check", "--config", str(tmp_path / "missing.yaml")]) == 2
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model:\n  x: 1\n")
    assert data_main(["check", "--config", str(cfg)]) == 2
    assert "data:" in capsys.readouterr().err
    assert data_main(["synth", "--layout", "nope", "--output", str(tmp_path), "--num", "1"]) == 2
    assert data_main(["--help"]) == 0


def test_check_shipped_config_by_name(capsys: pytest.CaptureFixture) -> None:
    assert data_main(["check", "--config", "demo", "--split", "val", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "DemoDataModule" in out and "per-class pixel histogram" in out
