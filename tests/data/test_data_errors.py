"""Bad data fails loudly: each problem raises DatasetError naming the file; ``hrseg data check`` finds it."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hrseg_data_trees import corrupt_png, save_palette_png
from PIL import Image

from hrseg.commands.data import main as data_main
from hrseg.data import CityscapesDataModule, DatasetError, FolderDataModule, VOCDataModule
from hrseg.data.worker_signals import WorkerSignalDataLoader


def _break_corrupt_image(images: Path, masks: Path) -> Path:
    corrupt_png(images / "img02.png")
    return images / "img02.png"


def _break_garbage_mask(images: Path, masks: Path) -> Path:
    (masks / "img02.png").write_bytes(b"this is not a png at all")
    return masks / "img02.png"


def _break_size(images: Path, masks: Path) -> Path:
    Image.fromarray(np.zeros((20, 40), np.uint8), mode="L").save(masks / "img02.png")
    return masks / "img02.png"


def _break_range(images: Path, masks: Path) -> Path:
    m = np.asarray(Image.open(masks / "img02.png")).copy()
    m[5, 5] = 7  # num_classes is 4
    Image.fromarray(m, mode="L").save(masks / "img02.png")
    return masks / "img02.png"


def _break_colour_mask(images: Path, masks: Path) -> Path:
    rgb = np.zeros((24, 40, 3), np.uint8)
    rgb[..., 0] = 128
    Image.fromarray(rgb).save(masks / "img02.png")
    return masks / "img02.png"


def _break_missing_mask(images: Path, masks: Path) -> Path:
    (masks / "img02.png").unlink()
    return images / "img02.png"


# case -> (how to break the tree, message pattern, raised when: "getitem" or "setup")
CASES: dict[str, tuple[Callable[[Path, Path], Path], str, str]] = {
    "corrupt_image": (_break_corrupt_image, r"unreadable or corrupt", "getitem"),
    "garbage_mask": (_break_garbage_mask, r"unreadable or corrupt", "getitem"),
    "size_mismatch": (
        _break_size,
        r"size mismatch: mask is 20x40 \(HxW\) but its image .* is 24x40",
        "getitem",
    ),
    "out_of_range": (_break_range, r"label values out of range: 7 \(1 pixels\)", "getitem"),
    "colour_mask": (_break_colour_mask, r"mask is a colour \(RGB\) image", "getitem"),
    "missing_mask": (_break_missing_mask, r"missing mask: expected .*img02\.png", "setup"),
}


def _folder_dm(dirs: tuple[Path, Path]) -> FolderDataModule:
    return FolderDataModule(str(dirs[0]), str(dirs[1]), num_classes=4, val_ratio=0.0, crop_size=None)


@pytest.mark.parametrize("case", list(CASES))
def test_bad_sample_raises_naming_the_file(folder_dirs: tuple[Path, Path], case: str) -> None:
    breaker, pattern, when = CASES[case]
    bad = breaker(*folder_dirs)
    dm = _folder_dm(folder_dirs)
    if when == "setup":
        with pytest.raises(DatasetError, match=pattern) as err:
            dm.setup("fit")
        assert str(bad) in str(err.value)
        return
    dm.setup("fit")
    ds = dm.train_dataset
    idx = [s.name for s in ds.samples].index("img02")
    ds[idx - 1 if idx else idx + 1]  # the good neighbours still load
    with pytest.raises(DatasetError, match=pattern) as err:
        ds[idx]
    assert str(bad) in str(err.value)


def test_error_survives_dataloader_worker(folder_dirs: tuple[Path, Path]) -> None:
    bad = _break_range(*folder_dirs)
    dm = _folder_dm(folder_dirs)
    dm.setup("fit")
    loader = WorkerSignalDataLoader(dm.train_dataset, batch_size=6, num_workers=1)  # no handler left behind
    with pytest.raises(DatasetError) as err:
        next(iter(loader))
    assert str(bad) in str(err.value) and "label values out of range" in str(err.value)


def _folder_check_args(images: Path, masks: Path) -> list[str]:
    """``hrseg data check`` arguments for the 4-class folder dataset under test."""
    return [
        "check",
        "--datamodule",
        "folder",
        "--images-dir",
        str(images),
        "--masks-dir",
        str(masks),
        "--num-classes",
        "4",
        "--no-progress",
    ]


@pytest.mark.parametrize("case", list(CASES))
def test_data_check_catches(folder_dirs: tuple[Path, Path], case: str, capsys: pytest.CaptureFixture) -> None:
    breaker, pattern, _ = CASES[case]
    bad = breaker(*folder_dirs)
    images, masks = folder_dirs
    args = _folder_check_args(images, masks)
    assert data_main(args) == 1
    out = capsys.readouterr().out
    assert str(bad) in out and re.search(pattern, out), out
    assert "FAILED" in out


def test_data_check_clean_folder(folder_dirs: tuple[Path, Path], capsys: pytest.CaptureFixture) -> None:
    images, masks = folder_dirs
    args = _folder_check_args(images, masks)
    assert data_main(args) == 0
    out = capsys.readouterr().out
    assert "per-class pixel histogram" in out and "class_3" in out and "OK" in out


def _one_label(root: Path, split: str = "val") -> Path:
    return sorted((root / "gtFine" / split).glob("*/*_gtFine_labelIds.png"))[0]


def test_cityscapes_bad_label_id(cityscapes_root: Path, capsys: pytest.CaptureFixture) -> None:
    path = _one_label(cityscapes_root)
    m = np.asarray(Image.open(path)).copy()
    m[0, 0] = 40  # not a Cityscapes label id
    Image.fromarray(m, mode="L").save(path)
    dm = CityscapesDataModule(str(cityscapes_root), crop_size=None)
    dm.setup("validate")
    idx = [s.mask for s in dm.val_dataset.samples].index(path)
    with pytest.raises(DatasetError, match=r"label values out of range: 40 .*Cityscapes labelIds"):
        dm.val_dataset[idx]
    assert (
        data_main(["check", "--datamodule", "cityscapes", "--root", str(cityscapes_root), "--no-progress"])
        == 1
    )
    out = capsys.readouterr().out
    assert f"{path}: label values out of range: 40" in out


def test_cityscapes_corrupt_and_mismatch(cityscapes_root: Path, capsys: pytest.CaptureFixture) -> None:
    image = sorted((cityscapes_root / "leftImg8bit" / "train").glob("*/*.png"))[0]
    corrupt_png(image)
    label = _one_label(cityscapes_root)
    Image.fromarray(np.full((16, 16), 7, np.uint8), mode="L").save(label)
    assert (
        data_main(["check", "--datamodule", "cityscapes", "--root", str(cityscapes_root), "--no-progress"])
        == 1
    )
    out = capsys.readouterr().out
    assert f"{image}: unreadable or corrupt image file" in out
    assert f"{label}: size mismatch" in out


def test_cityscapes_missing_label(cityscapes_root: Path, capsys: pytest.CaptureFixture) -> None:
    label = _one_label(cityscapes_root)
    label.unlink()
    with pytest.raises(DatasetError, match="missing label file"):
        CityscapesDataModule(str(cityscapes_root)).setup("validate")
    assert (
        data_main(
            [
                "check",
                "--datamodule",
                "cityscapes",
                "--root",
                str(cityscapes_root),
                "--split",
                "val",
                "--no-progress",
            ]
        )
        == 1
    )
    assert (
        f"missing label file: expected {label.with_name(label.name.replace('labelIds', 'labelTrainIds'))}"
        in (capsys.readouterr().out)
    )


def test_voc_out_of_range_index(voc_root: Path, capsys: pytest.CaptureFixture) -> None:
    path = voc_root / "VOCdevkit/VOC2012/SegmentationClass/2008_000000.png"
    m = np.asarray(Image.open(path)).copy()
    m[3, 3] = 21
    save_palette_png(m, path)
    dm = VOCDataModule(str(voc_root), crop_size=None)
    dm.setup("validate")
    with pytest.raises(DatasetError, match=r"2008_000000\.png: label values out of range: 21"):
        dm.val_dataset[0]
    assert data_main(["check", "--datamodule", "voc", "--root", str(voc_root), "--no-progress"]) == 1
    assert "label values out of range: 21" in capsys.readouterr().out


def test_check_missing_root_exits_nonzero(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert (
        data_main(["check", "--datamodule", "cityscapes", "--root", str(tmp_path / "x"), "--no-progress"])
        == 1
    )
    assert "Cityscapes root directory not found" in capsys.readouterr().out
    assert data_main(["check", "--datamodule", "folder", "--no-progress"]) == 2
