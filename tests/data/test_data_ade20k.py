"""ADE20KDataModule: the distributed tree and official list files, value 0 ignored, 1..150 -> 0..149."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hrseg_data_trees import ADE_SIZE, ade_reference_train_ids, make_ade20k_tree, write_lst
from PIL import Image

from hrseg.commands.data import main as data_main
from hrseg.data.ade20k import ADE20KDataModule
from hrseg.metadata import get_label_set

ADE = "ADEChallengeData2016"


@pytest.fixture
def ade_root(tmp_path: Path) -> Path:
    return make_ade20k_tree(tmp_path / "ade")


def _check_mapping(dm: ADE20KDataModule, split: str) -> None:
    dataset = dm.build_dataset(split, train=False)
    assert len(dataset) > 0
    for i, sample in enumerate(dataset.samples):
        raw = np.asarray(Image.open(sample.mask))
        assert set(np.unique(raw)) == set(range(151))  # every source value, 0 included
        _, mask, _ = dataset.load(i)
        np.testing.assert_array_equal(mask, ade_reference_train_ids(raw))


def test_distributed_tree_and_list_files_map_every_value(ade_root: Path) -> None:
    dm = ADE20KDataModule(str(ade_root), crop_size=(4, 4))
    assert dm.labels.num_classes == 150 and dm.labels.class_names[:3] == ("wall", "building", "sky")
    _check_mapping(dm, "train")
    _check_mapping(dm, "val")
    assert len(dm.samples("train")) == 2 and dm.samples("val")[0].name == "ADE_val_00000001"
    # the same tree through official .lst files, relative to the root
    ade = ade_root / ADE
    pairs = [
        (
            ade / "images/training" / f"ADE_train_{i:08d}.jpg",
            ade / "annotations/training" / f"ADE_train_{i:08d}.png",
        )
        for i in (1, 2)
    ]
    lst = write_lst(ade_root / "list/ade20k/train.lst", ade_root, pairs)
    listed = ADE20KDataModule(str(ade_root), crop_size=(4, 4), list_files={"train": str(lst)})
    assert [s.name for s in listed.samples("train")] == ["ADE_train_00000001", "ADE_train_00000002"]
    _check_mapping(listed, "train")
    # the root may also be ADEChallengeData2016 itself
    assert len(ADE20KDataModule(str(ade)).samples("val")) == 1


def test_check_names_bad_files(ade_root: Path, capsys: pytest.CaptureFixture) -> None:
    ann = ade_root / ADE / "annotations"
    (ann / "training/ADE_train_00000001.png").unlink()  # missing mask
    Image.fromarray(np.zeros((3, 3), np.uint8), mode="L").save(ann / "training/ADE_train_00000002.png")
    Image.fromarray(np.full(ADE_SIZE, 151, np.uint8), mode="L").save(ann / "validation/ADE_val_00000001.png")
    capsys.readouterr()
    assert data_main(["check", "--datamodule", "ade20k", "--root", str(ade_root), "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert "ADE_train_00000001.jpg: missing annotation" in out
    assert "ADE_train_00000002.png: size mismatch: mask is 3x3" in out
    assert "ADE_val_00000001.png: label values out of range: 151" in out
    assert "FAILED: 3 problem(s)" in out


def test_synth_writes_the_exact_layout(tmp_path: Path) -> None:
    args = ["synth", "--layout", "ade20k", "--output", str(tmp_path), "--num", "2", "--size", "32x48"]
    assert data_main([*args, "--no-progress", "--list-files"]) == 0
    ade = tmp_path / ADE
    assert sorted(p.name for p in (ade / "images/training").iterdir()) == [
        "ADE_train_00000001.jpg",
        "ADE_train_00000002.jpg",
    ]
    assert [p.name for p in (ade / "annotations/validation").iterdir()] == ["ADE_val_00000001.png"]
    first = (tmp_path / "list/ade20k/train.lst").read_text().splitlines()[0]
    assert (
        first
        == f"{ADE}/images/training/ADE_train_00000001.jpg {ADE}/annotations/training/ADE_train_00000001.png"
    )
    raw = np.asarray(Image.open(ade / "annotations/training/ADE_train_00000001.png"))
    assert raw.max() <= 150 and (raw[:2] == 0).all()  # the ignored frame
    for list_files in (None, {"train": str(tmp_path / "list/ade20k/train.lst")}):
        dm = ADE20KDataModule(str(tmp_path), list_files=list_files)
        assert data_main(["check", "--datamodule", "ade20k", "--root", str(tmp_path), "--no-progress"]) == 0
        _, mask, _ = dm.build_dataset("train", train=False).load(0)
        np.testing.assert_array_equal(mask, ade_reference_train_ids(raw))


def test_classes_name_for_predict() -> None:
    labels = get_label_set("ade20k")
    assert (
        labels.num_classes == 150 and labels.palette[0] == (120, 120, 120) and labels.class_names[7] == "bed"
    )
