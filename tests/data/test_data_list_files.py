"""The official list-file layout (``list_files``) on any DataModule; ``hrseg data check`` names bad lines."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hrseg_data_trees import reference_train_ids, write_lst
from PIL import Image

from hrseg.commands.data import main as data_main
from hrseg.data import CityscapesDataModule, DatasetError, VOCDataModule


def _cityscapes_pairs(root: Path, split: str, suffix: str) -> list[tuple[Path, Path | None]]:
    images = sorted((root / "leftImg8bit" / split).glob("*/*_leftImg8bit.png"))
    masks = [
        root / "gtFine" / split / p.parent.name / p.name.replace("_leftImg8bit.png", suffix) for p in images
    ]
    return list(zip(images, masks, strict=True))


def test_cityscapes_lists_keep_its_label_mapping(cityscapes_trainids_root: Path) -> None:
    root = cityscapes_trainids_root
    lists = {
        "train": write_lst(
            root / "list/train.lst", root, _cityscapes_pairs(root, "train", "_gtFine_labelIds.png")
        ),
        "val": write_lst(
            root / "list/val.lst", root, _cityscapes_pairs(root, "val", "_gtFine_labelTrainIds.png")
        ),
        "test": write_lst(
            root / "list/test.lst", root, [(p, None) for p, _ in _cityscapes_pairs(root, "test", "")]
        ),
    }
    dm = CityscapesDataModule(str(root), list_files={k: str(v) for k, v in lists.items()})
    for split in ("train", "val"):
        dataset = dm.build_dataset(split, train=False)
        for i, sample in enumerate(dataset.samples):
            label_ids = sample.mask.parent / sample.mask.name.replace("labelTrainIds", "labelIds")
            _, mask, _ = dataset.load(i)  # labelIds and labelTrainIds files alike give train ids
            np.testing.assert_array_equal(mask, reference_train_ids(np.asarray(Image.open(label_ids))))
    test = dm.build_dataset("test", train=False, labelled=True)
    assert not test.labelled and len(test) == 1  # an image-only list is unlabelled
    with pytest.raises(DatasetError, match="split 'trainval' has no list file in list_files"):
        dm.samples("trainval")


def test_check_names_list_file_and_line(voc_root: Path, capsys: pytest.CaptureFixture) -> None:
    voc = voc_root / "VOCdevkit/VOC2012"
    image, mask = (
        "VOCdevkit/VOC2012/JPEGImages/2007_000000.jpg",
        "VOCdevkit/VOC2012/SegmentationClass/2007_000000.png",
    )
    lst = voc_root / "val.lst"
    lst.write_text(
        f"{image} {mask}\n"
        "\n"  # blank lines are skipped
        f"{image} {mask}\n"  # line 3: duplicate of line 1
        f"{image} {mask} extra\n"  # line 4: three fields
        "VOCdevkit/VOC2012/JPEGImages/nope.jpg VOCdevkit/VOC2012/SegmentationClass/nope.png\n"  # line 5
        "VOCdevkit/VOC2012/JPEGImages/2007_000001.jpg\n"  # line 6: no label in a labelled list
    )
    capsys.readouterr()
    common = ["check", "--datamodule", "voc", "--root", str(voc_root), "--no-progress"]
    assert data_main([*common, "--list-files", f"val={lst}"]) == 1
    out = capsys.readouterr().out
    assert "splits val;" in out  # the splits of list_files
    assert f"{lst}:3: duplicate entry: {image} is already listed on line 1" in out
    assert f"{lst}:4: malformed line: expected `image [label]`, got 3 fields" in out
    assert (
        f"{lst}:5: image {voc / 'JPEGImages/nope.jpg'} and label "
        f"{voc / 'SegmentationClass/nope.png'} not found" in out
    )
    assert f"{lst}:6: image without label, while line 1 has a label" in out
    assert "FAILED: 4 problem(s)" in out
    assert data_main([*common, "--list-files", f"val={voc_root / 'missing.lst'}"]) == 1
    assert "missing.lst: list file not found" in capsys.readouterr().out
    assert data_main([*common, "--list-files", "val"]) == 2  # not split=path: a usage error
    assert "split=path" in capsys.readouterr().err
    with pytest.raises(DatasetError, match=r"val\.lst:3: duplicate entry"):
        VOCDataModule(str(voc_root), list_files={"val": str(lst)}).setup("validate")


def test_synth_writes_lists_for_any_layout(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    common = ["--num", "2", "--num-val", "1", "--size", "32x48", "--no-progress", "--list-files"]
    assert data_main(["synth", "--layout", "folder", "--output", str(tmp_path / "f"), *common]) == 0
    assert (tmp_path / "f/list/folder/train.lst").read_text().splitlines() == [
        "images/train_00000.png masks/train_00000.png",
        "images/train_00001.png masks/train_00001.png",
    ]
    hint = capsys.readouterr().out.splitlines()[-1].removeprefix("check it with: hrseg data ").split()
    assert "--list-root" in hint  # a folder dataset has no root: the lists name theirs
    assert data_main([*hint, "--no-progress"]) == 0
    assert data_main(["synth", "--layout", "demo", "--output", str(tmp_path / "d"), *common]) == 2
    assert "--list-files: DemoDataModule does not list files" in capsys.readouterr().err
