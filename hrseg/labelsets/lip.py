"""LIP (Look Into Person) human parsing: 20 classes, 0 background is a class, 255 ignored.

Class order: the official HRNet ``lib/datasets/lip.py`` and the LIP release; colours: the LIP visualisation
palette (as in mmsegmentation). A horizontal flip swaps the left and right arm, leg and shoe
(docs/reference/datasets.md "LIP").
"""

from __future__ import annotations

from typing import Any

LABEL_SET: dict[str, Any] = {
    "name": "lip",
    "class_names": (
        "background", "hat", "hair", "glove", "sunglasses", "upper-clothes", "dress", "coat", "socks",
        "pants", "jumpsuits", "scarf", "skirt", "face", "left-arm", "right-arm", "left-leg", "right-leg",
        "left-shoe", "right-shoe",
    ),
    "palette": (
        (0, 0, 0), (128, 0, 0), (255, 0, 0), (0, 85, 0), (170, 0, 51), (255, 85, 0), (0, 0, 85),
        (0, 119, 221), (85, 85, 0), (0, 85, 85), (85, 51, 0), (52, 86, 128), (0, 128, 0), (0, 0, 255),
        (51, 170, 221), (0, 255, 255), (85, 255, 170), (170, 255, 85), (255, 255, 0), (255, 170, 0),
    ),
    # lib/datasets/lip.py: left_idx [14, 16, 18] <-> right_idx [15, 17, 19]
    "flip_pairs": ((14, 15), (16, 17), (18, 19)),
}  # fmt: skip
