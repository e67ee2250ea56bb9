"""COCO-Stuff 164k (stuffthingmaps PNGs) and 10k (.mat ``S`` maps): 171 classes, unused ids ignored."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hrseg_data_trees import (
    COCO_VALUES,
    coco_reference_train_ids,
    make_cocostuff10k_tree,
    make_cocostuff_tree,
    write_lst,
)
from PIL import Image
from scipy.io import loadmat, savemat

from hrseg.commands.data import main as data_main
from hrseg.data.cocostuff import CocoStuff10kDataModule, CocoStuffDataModule

MAPS = "stuffthingmaps_trainval2017"


def _ten_k_reference(s: np.ndarray) -> np.ndarray:
    """10k values are the 164k ones + 1, with 0 unlabelled (docs/reference/datasets.md)."""
    return coco_reference_train_ids(np.where(s == 0, 255, s.astype(np.int64) - 1))


def test_164k_tree_and_list_files_map_every_value(tmp_path: Path) -> None:
    root = make_cocostuff_tree(tmp_path / "coco")
    pairs = [
        (root / "train2017" / f"{i:012d}.jpg", root / MAPS / "train2017" / f"{i:012d}.png") for i in (1, 2)
    ]
    lst = write_lst(root / "list/cocostuff/train.lst", root, pairs)
    for dm in (
        CocoStuffDataModule(str(root)),
        CocoStuffDataModule(str(root), list_files={"train": str(lst)}),
    ):
        dataset = dm.build_dataset("train", train=False)
        assert len(dataset) == 2
        for i, sample in enumerate(dataset.samples):
            raw = np.asarray(Image.open(sample.mask))
            assert sorted(np.unique(raw).tolist()) == COCO_VALUES
            _, mask, _ = dataset.load(i)
            np.testing.assert_array_equal(mask, coco_reference_train_ids(raw))
            assert (
                mask[mask != 255].max() == 170
                and (mask[raw == 11] == 255).all()
                and (mask[raw == 12] == 11).all()
            )
    assert dm.labels.num_classes == 171 and dm.labels.class_names[170] == "wood"


def test_10k_tree_and_list_files_map_every_value(tmp_path: Path) -> None:
    root = make_cocostuff10k_tree(tmp_path / "c10k")
    names = (root / "imageLists/train.txt").read_text().split()
    lst = write_lst(
        root / "list/train.lst",
        root,
        [(root / "images" / f"{n}.jpg", root / "annotations" / f"{n}.mat") for n in names],
    )
    for dm in (
        CocoStuff10kDataModule(str(root)),
        CocoStuff10kDataModule(str(root), list_files={"train": str(lst)}),
    ):
        dataset = dm.build_dataset("train", train=False)
        assert [s.name for s in dataset.samples] == names
        for i, sample in enumerate(dataset.samples):
            s = loadmat(str(sample.mask))["S"]
            _, mask, _ = dataset.load(i)
            np.testing.assert_array_equal(mask, _ten_k_reference(s))
            assert (
                (mask[s == 0] == 255).all() and (mask[s == 12] == 255).all() and (mask[s == 13] == 11).all()
            )
    assert CocoStuff10kDataModule(str(root)).val_split == "test"


def test_check_names_bad_files(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    coco = make_cocostuff_tree(tmp_path / "coco")
    (coco / MAPS / "train2017" / f"{1:012d}.png").unlink()
    Image.fromarray(np.full((5, 10), 200, np.uint8), mode="L").save(
        coco / MAPS / "val2017" / f"{1001:012d}.png"
    )
    ten_k = make_cocostuff10k_tree(tmp_path / "c10k")
    (ten_k / "annotations/COCO_train2014_000000000001.mat").write_bytes(b"MATLAB 5.0 MAT-file, truncated")
    savemat(
        str(ten_k / "annotations/COCO_train2014_000000000002.mat"), {"S": np.full((5, 183), 183, np.uint16)}
    )
    (ten_k / "annotations/COCO_val2014_000000000001.mat").unlink()
    capsys.readouterr()
    assert data_main(["check", "--datamodule", "cocostuff", "--root", str(coco), "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert f"train2017/{1:012d}.jpg: missing annotation" in out
    assert f"{1001:012d}.png: size mismatch" in out and "label values out of range: 200" in out
    assert data_main(["check", "--datamodule", "cocostuff10k", "--root", str(ten_k), "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert "COCO_train2014_000000000001.mat: cannot read the .mat file" in out
    assert "COCO_train2014_000000000002.mat: label values out of range: 183" in out
    assert (
        "imageLists/test.txt:1: missing annotation: expected" in out
        and "COCO_val2014_000000000001.mat" in out
    )


@pytest.mark.parametrize("layout", ["cocostuff", "cocostuff10k"])
def test_synth_layouts_read_back(tmp_path: Path, layout: str, capsys: pytest.CaptureFixture) -> None:
    args = ["synth", "--layout", layout, "--output", str(tmp_path), "--num", "2", "--size", "32x48"]
    assert data_main([*args, "--no-progress", "--list-files"]) == 0
    hint = capsys.readouterr().out.splitlines()[-1].removeprefix("check it with: hrseg data ").split()
    assert "--list-files" in hint and data_main([*hint, "--no-progress"]) == 0
    if layout == "cocostuff":
        assert (tmp_path / MAPS / "val2017" / f"{139:012d}.png").is_file()
        assert (tmp_path / "val2017" / f"{139:012d}.jpg").is_file()
        dm = CocoStuffDataModule(str(tmp_path))
    else:
        assert (tmp_path / "imageLists/test.txt").read_text().split() == ["COCO_val2014_000000000007"]
        assert loadmat(str(tmp_path / "annotations/COCO_val2014_000000000007.mat"))["S"].dtype == np.uint16
        dm = CocoStuff10kDataModule(str(tmp_path))
    _, mask, _ = dm.build_dataset(dm.val_split, train=False).load(0)
    assert mask.shape == (32, 48) and (mask[:2] == 255).all() and mask[2:-2, 2:-2].max() < 171
