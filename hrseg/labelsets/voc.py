"""PASCAL VOC 2012: background + 20 object classes, the VOC colour map (docs/reference/datasets.md)."""

from __future__ import annotations

from typing import Any

CLASS_NAMES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)  # fmt: skip

LABEL_SET: dict[str, Any] = {
    "name": "voc",
    "class_names": CLASS_NAMES,
    "palette": None,  # the VOC colour map, hrseg's default palette
}
