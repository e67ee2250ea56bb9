"""Class metadata for the supported datasets: label tables, class names and palettes.

The tables are plain data so that loaders, the demo generator, plots and tests all read one source of truth;
nothing elsewhere hard-codes a class count.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

# Re-exported: the dataset modules read every label constant from here.
from hrseg.colors import IGNORE_INDEX, IMAGENET_MEAN, IMAGENET_STD, Color, voc_colormap


class CityscapesLabel(NamedTuple):
    """One row of the official Cityscapes label definition (name, labelId, trainId, colour)."""

    name: str
    id: int
    train_id: int
    color: Color


# The official table (cityscapesScripts `labels.py`): every labelId 0..33 plus the license plate (-1).
# train_id 255 means "ignored in training and evaluation"; the license plate's -1 is also ignored.
CITYSCAPES_LABELS: tuple[CityscapesLabel, ...] = (
    CityscapesLabel("unlabeled", 0, 255, (0, 0, 0)),
    CityscapesLabel("ego vehicle", 1, 255, (0, 0, 0)),
    CityscapesLabel("rectification border", 2, 255, (0, 0, 0)),
    CityscapesLabel("out of roi", 3, 255, (0, 0, 0)),
    CityscapesLabel("static", 4, 255, (0, 0, 0)),
    CityscapesLabel("dynamic", 5, 255, (111, 74, 0)),
    CityscapesLabel("ground", 6, 255, (81, 0, 81)),
    CityscapesLabel("road", 7, 0, (128, 64, 128)),
    CityscapesLabel("sidewalk", 8, 1, (244, 35, 232)),
    CityscapesLabel("parking", 9, 255, (250, 170, 160)),
    CityscapesLabel("rail track", 10, 255, (230, 150, 140)),
    CityscapesLabel("building", 11, 2, (70, 70, 70)),
    CityscapesLabel("wall", 12, 3, (102, 102, 156)),
    CityscapesLabel("fence", 13, 4, (190, 153, 153)),
    CityscapesLabel("guard rail", 14, 255, (180, 165, 180)),
    CityscapesLabel("bridge", 15, 255, (150, 100, 100)),
    CityscapesLabel("tunnel", 16, 255, (150, 120, 90)),
    CityscapesLabel("pole", 17, 5, (153, 153, 153)),
    CityscapesLabel("polegroup", 18, 255, (153, 153, 153)),
    CityscapesLabel("traffic light", 19, 6, (250, 170, 30)),
    CityscapesLabel("traffic sign", 20, 7, (220, 220, 0)),
    CityscapesLabel("vegetation", 21, 8, (107, 142, 35)),
    CityscapesLabel("terrain", 22, 9, (152, 251, 152)),
    CityscapesLabel("sky", 23, 10, (70, 130, 180)),
    CityscapesLabel("person", 24, 11, (220, 20, 60)),
    CityscapesLabel("rider", 25, 12, (255, 0, 0)),
    CityscapesLabel("car", 26, 13, (0, 0, 142)),
    CityscapesLabel("truck", 27, 14, (0, 0, 70)),
    CityscapesLabel("bus", 28, 15, (0, 60, 100)),
    CityscapesLabel("caravan", 29, 255, (0, 0, 90)),
    CityscapesLabel("trailer", 30, 255, (0, 0, 110)),
    CityscapesLabel("train", 31, 16, (0, 80, 100)),
    CityscapesLabel("motorcycle", 32, 17, (0, 0, 230)),
    CityscapesLabel("bicycle", 33, 18, (119, 11, 32)),
    CityscapesLabel("license plate", -1, -1, (0, 0, 142)),
)

CITYSCAPES_NUM_CLASSES = 19

CITYSCAPES_CLASSES: list[str] = [
    lab.name for lab in sorted(CITYSCAPES_LABELS, key=lambda x: x.train_id) if 0 <= lab.train_id < 255
]
CITYSCAPES_PALETTE: list[Color] = [
    lab.color for lab in sorted(CITYSCAPES_LABELS, key=lambda x: x.train_id) if 0 <= lab.train_id < 255
]

# Names -> train id, for the demo generator and readable tests.
CITYSCAPES_TRAIN_ID: dict[str, int] = {name: i for i, name in enumerate(CITYSCAPES_CLASSES)}


def cityscapes_label_lut() -> np.ndarray:
    """Return the 256-entry labelId -> trainId lookup table used on ``*_gtFine_labelIds.png``.

    Ids of the official table that are not among the 19 training classes map to 255 (ignore), and so does
    the value 255 itself (the license plate's -1 when stored in an 8-bit PNG). Values that are not Cityscapes
    label ids at all (34..254) map to -1, so the loader can refuse them instead of silently ignoring them.

    Returns:
        int16 array of shape (256,).
    """
    lut = np.full(256, -1, dtype=np.int16)
    for lab in CITYSCAPES_LABELS:
        if lab.id >= 0:
            lut[lab.id] = lab.train_id if lab.train_id >= 0 else IGNORE_INDEX
    lut[255] = IGNORE_INDEX
    return lut


def cityscapes_train_to_label_id() -> np.ndarray:
    """Return a 256-entry trainId -> labelId table (255 -> 0 "unlabeled"), for writing labelIds files."""
    inv = np.zeros(256, dtype=np.uint8)
    for lab in CITYSCAPES_LABELS:
        if 0 <= lab.train_id < 255:
            inv[lab.train_id] = lab.id
    return inv


VOC_CLASSES: list[str] = [
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
]
VOC_NUM_CLASSES = 21


VOC_PALETTE: list[Color] = voc_colormap(VOC_NUM_CLASSES)


__all__ = [
    "CITYSCAPES_CLASSES",
    "CITYSCAPES_LABELS",
    "CITYSCAPES_NUM_CLASSES",
    "CITYSCAPES_PALETTE",
    "CITYSCAPES_TRAIN_ID",
    "IGNORE_INDEX",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "VOC_CLASSES",
    "VOC_NUM_CLASSES",
    "VOC_PALETTE",
    "CityscapesLabel",
    "cityscapes_label_lut",
    "cityscapes_train_to_label_id",
]
