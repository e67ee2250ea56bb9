"""Label tables and palettes against the dataset definitions (docs/reference/datasets.md)."""

from __future__ import annotations

import numpy as np
import pytest
from hrseg_data_trees import REFERENCE_LABEL_TO_TRAIN

from hrseg.colors import colorize
from hrseg.data import metadata as md
from hrseg.metadata import LabelSet, voc_colormap


def test_cityscapes_table_has_every_id() -> None:
    ids = sorted(lab.id for lab in md.CITYSCAPES_LABELS)
    assert ids == [-1, *range(34)]


def test_cityscapes_lut_matches_reference() -> None:
    lut = md.cityscapes_label_lut()
    assert lut.shape == (256,)
    for lid in range(34):
        assert lut[lid] == REFERENCE_LABEL_TO_TRAIN.get(lid, 255), lid
    assert lut[255] == 255  # the license plate's -1 stored in an 8-bit PNG
    assert (lut[34:255] == -1).all()  # not Cityscapes ids: refused by the loader


def test_cityscapes_names_and_palette() -> None:
    assert md.CITYSCAPES_NUM_CLASSES == len(md.CITYSCAPES_CLASSES) == len(md.CITYSCAPES_PALETTE) == 19
    assert md.CITYSCAPES_CLASSES[0] == "road" and md.CITYSCAPES_CLASSES[18] == "bicycle"
    assert md.CITYSCAPES_PALETTE[0] == (128, 64, 128)
    assert md.CITYSCAPES_PALETTE[10] == (70, 130, 180)
    assert md.CITYSCAPES_PALETTE[18] == (119, 11, 32)
    inv = md.cityscapes_train_to_label_id()
    lut = md.cityscapes_label_lut()
    assert all(lut[inv[t]] == t for t in range(19))


def test_voc_names_and_palette() -> None:
    assert len(md.VOC_CLASSES) == 21 and md.VOC_CLASSES[15] == "person"
    cmap = voc_colormap(256)
    assert cmap[0] == (0, 0, 0)
    assert cmap[1] == (128, 0, 0) and cmap[2] == (0, 128, 0) and cmap[3] == (128, 128, 0)
    assert cmap[4] == (0, 0, 128) and cmap[255] == (224, 224, 192)
    assert cmap[:21] == md.VOC_PALETTE


def test_colorize_blacks_out_ignore() -> None:
    mask = np.array([[0, 1], [255, 7]])
    rgb = colorize(mask, [(10, 20, 30), (40, 50, 60)])
    assert rgb.tolist() == [[[10, 20, 30], [40, 50, 60]], [[0, 0, 0], [0, 0, 0]]]


def test_class_metadata_defaults_and_checks_live_in_one_place() -> None:
    """DataModules, the task and checkpoints all resolve class metadata through resolve_class_metadata."""
    from hrseg.classes import resolve_class_metadata

    from hrseg.data import FolderDataModule
    from hrseg.metadata import ModelMeta, default_palette

    info = resolve_class_metadata(3)
    assert info.class_names == ["class_0", "class_1", "class_2"] and info.palette == default_palette(3)
    assert resolve_class_metadata(2, palette=voc_colormap(256)).palette == voc_colormap(256)  # longer is kept
    for bad in (
        {"class_names": ["a"]},
        {"palette": [(1, 2, 3)]},
        {"palette": [(1, 2), (3, 4)]},
        {"ignore_index": 1},
    ):
        with pytest.raises(ValueError):
            resolve_class_metadata(2, **bad)
        with pytest.raises(ValueError):
            ModelMeta(model="hrnetv2_w18_small_v1", labels=LabelSet.generic(2), **bad)
        with pytest.raises(ValueError):
            FolderDataModule(images_dir="unused", masks_dir="unused", num_classes=2, **bad)
    meta = ModelMeta(model="hrnetv2_w18_small_v1", labels=LabelSet.generic(3))
    assert (meta.class_names, meta.palette) == (info.class_names, [list(c) for c in info.palette])
