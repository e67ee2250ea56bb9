"""``hrseg data stats``: class pixel counts of a split, checked against a hand count, and the ENet weights."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from hrseg.commands.data import main as data_main


def _ade_tree(root: Path, annotation: np.ndarray) -> Path:
    for kind in ("images", "annotations"):
        (root / "ADEChallengeData2016" / kind / "training").mkdir(parents=True)
    ade = root / "ADEChallengeData2016"
    Image.fromarray(np.zeros((*annotation.shape, 3), np.uint8)).save(
        ade / "images/training/ADE_train_00000001.jpg"
    )
    Image.fromarray(annotation, mode="L").save(ade / "annotations/training/ADE_train_00000001.png")
    return root


def test_stats_counts_and_weights(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # by hand: value 0 ignored (1 px); 1 -> wall (2 px), 2 -> building (1), 3 -> sky (3), 150 -> flag (1)
    root = _ade_tree(tmp_path / "ade", np.array([[0, 1, 1, 2], [3, 3, 3, 150]], np.uint8))
    out_file = tmp_path / "weights.yaml"
    capsys.readouterr()
    args = [
        "stats",
        "--datamodule",
        "ade20k",
        "--root",
        str(root),
        "--no-progress",
        "--output",
        str(out_file),
    ]
    assert data_main(args) == 0
    out = capsys.readouterr().out
    assert "split 'train': 1 labelled images, 7 labelled pixels, 1 ignored" in out
    rows = {
        line.split()[0]: line.split()
        for line in out.splitlines()
        if line.split() and line.split()[0].isdigit()
    }
    assert len(rows) == 150
    expected = {0: 2, 1: 1, 2: 3, 149: 1}
    for class_id in range(150):
        row = rows[str(class_id)]
        count = expected.get(class_id, 0)
        assert int(row[-3]) == count
        assert float(row[-2].rstrip("%")) == pytest.approx(100 * count / 7, abs=1e-3)
        assert float(row[-1]) == pytest.approx(1 / math.log(1.02 + count / 7), abs=1e-4)
    assert rows["149"][1] == "flag" and rows["2"][1] == "sky"
    weights = yaml.safe_load(out_file.read_text())["model"]["loss"]["class_weights"]
    assert len(weights) == 150
    assert weights[2] == pytest.approx(1 / math.log(1.02 + 3 / 7), rel=1e-6)
    assert weights[5] == pytest.approx(1 / math.log(1.02), rel=1e-6)  # an absent class: the bound, ~50.5


def test_stats_refuses_bad_data(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = _ade_tree(tmp_path / "ade", np.array([[0, 151]], np.uint8))
    out_file = tmp_path / "w.yaml"
    capsys.readouterr()
    args = [
        "stats",
        "--datamodule",
        "ade20k",
        "--root",
        str(root),
        "--no-progress",
        "--output",
        str(out_file),
    ]
    assert data_main(args) == 1
    out = capsys.readouterr().out
    assert "ADE_train_00000001.png: label values out of range: 151" in out and not out_file.exists()
    assert (
        data_main(["stats", "--datamodule", "ade20k", "--root", str(tmp_path / "none"), "--no-progress"]) == 1
    )
    assert "no ADE20K tree found" in capsys.readouterr().out


def test_stats_of_an_unlabelled_split(cityscapes_root: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["stats", "--datamodule", "cityscapes", "--root", str(cityscapes_root), "--split", "test"]
    assert data_main([*args, "--no-progress"]) == 1
    assert "hrseg data stats: error: split 'test': the split has no labels" in capsys.readouterr().err
