"""Label sets and palettes against the dataset definitions (docs/reference/datasets.md)."""

from __future__ import annotations

import numpy as np
import pytest
from hrseg_data_trees import REFERENCE_LABEL_TO_TRAIN

from hrseg.colors import colorize
from hrseg.labelsets.cityscapes import LABELS
from hrseg.metadata import (
    LabelSet,
    ModelMeta,
    default_palette,
    get_label_set,
    list_label_sets,
    register_label_set,
    voc_colormap,
)


def test_cityscapes_table_has_every_id() -> None:
    assert sorted(lab.id for lab in LABELS) == [-1, *range(34)]


def test_cityscapes_lookup_table_matches_reference() -> None:
    labels = get_label_set("cityscapes")
    lut = labels.lookup_table()
    assert lut.shape == (256,)
    for lid in range(34):
        assert lut[lid] == REFERENCE_LABEL_TO_TRAIN.get(lid, labels.ignore_index), lid
    assert lut[255] == labels.ignore_index == 255  # the license plate's -1 stored in an 8-bit PNG
    assert (lut[34:255] == -1).all()  # not Cityscapes ids: refused by the loader


def test_cityscapes_names_and_palette() -> None:
    labels = get_label_set("cityscapes")
    assert labels.num_classes == len(labels.palette) == 19 and labels.name == "cityscapes"
    assert labels.class_names[0] == "road" and labels.class_names[18] == "bicycle"
    assert labels.palette[0] == (128, 64, 128)
    assert labels.palette[10] == (70, 130, 180)
    assert labels.palette[18] == (119, 11, 32)
    inverse, lut = labels.train_to_id(), labels.lookup_table()
    assert all(lut[inverse[t]] == t for t in range(19))
    assert len(labels.class_weights) == 19 and labels.class_weights[0] == 0.8373  # the official table


def test_voc_names_and_palette() -> None:
    labels = get_label_set("voc")
    assert labels.num_classes == 21 and labels.class_names[15] == "person"
    cmap = voc_colormap(256)
    assert cmap[0] == (0, 0, 0)
    assert cmap[1] == (128, 0, 0) and cmap[2] == (0, 128, 0) and cmap[3] == (128, 128, 0)
    assert cmap[4] == (0, 0, 128) and cmap[255] == (224, 224, 192)
    assert list(labels.palette) == cmap[:21]
    lut = labels.lookup_table()  # train-id files: classes and the ignore value, nothing else
    assert lut[20] == 20 and lut[255] == 255 and lut[21] == -1


def test_colorize_blacks_out_ignore() -> None:
    mask = np.array([[0, 1], [255, 7]])
    rgb = colorize(mask, [(10, 20, 30), (40, 50, 60)])
    assert rgb.tolist() == [[[10, 20, 30], [40, 50, 60]], [[0, 0, 0], [0, 0, 0]]]


def test_label_set_defaults_checks_and_round_trip() -> None:
    """One value carries the classes; bad metadata fails where the value is made."""
    from hrseg.data import FolderDataModule

    generic = LabelSet.generic(3)
    assert generic.class_names == ("class_0", "class_1", "class_2")
    assert list(generic.palette) == default_palette(3)
    assert len(LabelSet(("a", "b"), palette=voc_colormap(256)).palette) == 256  # a longer table is kept
    for bad in (
        {"palette": [(1, 2, 3)]},
        {"palette": [(1, 2), (3, 4)]},
        {"ignore_index": 1},
        {"flip_pairs": [(0, 2)]},
        {"class_weights": [1.0]},
        {"id_to_train": [(7, 5)]},
    ):
        with pytest.raises(ValueError):
            LabelSet(("a", "b"), **bad)
    with pytest.raises(ValueError):
        FolderDataModule(images_dir="unused", masks_dir="unused", num_classes=2, class_names=["a"])
    with pytest.raises(ValueError):
        FolderDataModule(images_dir="unused", masks_dir="unused", num_classes=2, ignore_index=1)
    for labels in (get_label_set("cityscapes"), LabelSet(("l", "r", "x"), flip_pairs=[(0, 1)], name="t")):
        assert LabelSet.from_dict(labels.to_dict()) == labels
        meta = ModelMeta("hrnetv2_w18_small_v1", labels)
        assert ModelMeta.from_dict(meta.to_dict()).labels == labels
    with pytest.raises(ValueError, match="unknown label set keys"):
        LabelSet.from_dict({"class_names": ["a"], "nmae": "typo"})
    assert LabelSet(("l", "r", "x"), flip_pairs=[(0, 1)]).flip_permutation() == [1, 0, 2]


def test_label_set_registry() -> None:
    assert {"cityscapes", "voc"} <= set(list_label_sets())
    assert LabelSet.coerce("voc") is get_label_set("voc")
    with pytest.raises(ValueError, match=r"unknown label set 'nope'; registered: .*cityscapes"):
        get_label_set("nope")
    mine = register_label_set(LabelSet(("sea", "land"), name="test-coast"))
    assert get_label_set("test-coast") is mine and register_label_set(mine) is mine  # the same again: fine
    with pytest.raises(ValueError, match="already registered"):
        register_label_set(LabelSet(("sea", "land", "ice"), name="test-coast"))
