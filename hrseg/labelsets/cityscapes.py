"""Cityscapes fine: the official label table (cityscapesScripts ``labels.py``) and its 19 train ids.

Sources: docs/reference/datasets.md (the table), docs/reference/recipes.md (the official class weights).
"""

from __future__ import annotations

from typing import Any, NamedTuple


class CityscapesLabel(NamedTuple):
    """One row of the official Cityscapes label definition (name, labelId, trainId, colour)."""

    name: str
    id: int
    train_id: int | None  # None: no training class (ignored in training and evaluation)
    color: tuple[int, int, int]


# The official table: every labelId 0..33 plus the license plate (-1, stored as 255 in 8-bit PNGs).
LABELS: tuple[CityscapesLabel, ...] = (
    CityscapesLabel("unlabeled", 0, None, (0, 0, 0)),
    CityscapesLabel("ego vehicle", 1, None, (0, 0, 0)),
    CityscapesLabel("rectification border", 2, None, (0, 0, 0)),
    CityscapesLabel("out of roi", 3, None, (0, 0, 0)),
    CityscapesLabel("static", 4, None, (0, 0, 0)),
    CityscapesLabel("dynamic", 5, None, (111, 74, 0)),
    CityscapesLabel("ground", 6, None, (81, 0, 81)),
    CityscapesLabel("road", 7, 0, (128, 64, 128)),
    CityscapesLabel("sidewalk", 8, 1, (244, 35, 232)),
    CityscapesLabel("parking", 9, None, (250, 170, 160)),
    CityscapesLabel("rail track", 10, None, (230, 150, 140)),
    CityscapesLabel("building", 11, 2, (70, 70, 70)),
    CityscapesLabel("wall", 12, 3, (102, 102, 156)),
    CityscapesLabel("fence", 13, 4, (190, 153, 153)),
    CityscapesLabel("guard rail", 14, None, (180, 165, 180)),
    CityscapesLabel("bridge", 15, None, (150, 100, 100)),
    CityscapesLabel("tunnel", 16, None, (150, 120, 90)),
    CityscapesLabel("pole", 17, 5, (153, 153, 153)),
    CityscapesLabel("polegroup", 18, None, (153, 153, 153)),
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
    CityscapesLabel("caravan", 29, None, (0, 0, 90)),
    CityscapesLabel("trailer", 30, None, (0, 0, 110)),
    CityscapesLabel("train", 31, 16, (0, 80, 100)),
    CityscapesLabel("motorcycle", 32, 17, (0, 0, 230)),
    CityscapesLabel("bicycle", 33, 18, (119, 11, 32)),
    CityscapesLabel("license plate", -1, None, (0, 0, 142)),
)

_TRAIN = sorted((lab for lab in LABELS if lab.train_id is not None), key=lambda lab: lab.train_id or 0)

#: Official HRNet Cityscapes class weights in train-id order (docs/reference/recipes.md).
CLASS_WEIGHTS: tuple[float, ...] = (
    0.8373, 0.918, 0.866, 1.0345, 1.0166, 0.9969, 0.9754, 1.0489, 0.8786, 1.0023,
    0.9539, 0.9843, 1.1116, 0.9037, 1.0865, 1.0955, 1.0865, 1.1529, 1.0507,
)  # fmt: skip

LABEL_SET: dict[str, Any] = {
    "name": "cityscapes",
    "class_names": tuple(lab.name for lab in _TRAIN),
    "palette": tuple(lab.color for lab in _TRAIN),
    # labelIds PNGs: every official id -> its train id (None: ignored); the license plate's id -1 is
    # stored as 255 in the 8-bit PNGs
    "id_to_train": (*((lab.id, lab.train_id) for lab in LABELS if lab.id >= 0), (255, None)),
    "class_weights": CLASS_WEIGHTS,
}
