"""Fixtures for the data tests: tiny trees in the real Cityscapes / VOC / folder layouts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from hrseg_data_trees import make_cityscapes_tree, make_folder_tree, make_voc_tree


@pytest.fixture
def cityscapes_root(tmp_path: Path) -> Path:
    """Cityscapes tree with labelIds only (every id 0..33 and 255 in every mask)."""
    return make_cityscapes_tree(tmp_path / "cityscapes")


@pytest.fixture
def cityscapes_trainids_root(tmp_path: Path) -> Path:
    """Cityscapes tree with both labelIds and labelTrainIds files."""
    return make_cityscapes_tree(tmp_path / "cityscapes_tid", train_ids=True)


@pytest.fixture
def voc_root(tmp_path: Path) -> Path:
    """Folder holding VOCdevkit/VOC2012 with an SBD-aug split and trainaug.txt."""
    return make_voc_tree(tmp_path / "voc")


@pytest.fixture
def folder_dirs(tmp_path: Path) -> tuple[Path, Path]:
    """(images_dir, masks_dir) of a 4-class folder dataset with 6 pairs."""
    return make_folder_tree(tmp_path / "folder")
