"""PASCAL-Context, 60 classes: background (every class outside the 59, and unlabelled pixels) is class 0.

The 59 classes, their 459-class ids and the colours are those of :mod:`hrseg.labelsets.pascal_context_59`
(mmsegmentation's ``PascalContextDataset``); files hold these train ids directly, 255 ignored.
"""

from __future__ import annotations

from typing import Any

from hrseg.labelsets.pascal_context_59 import CLASSES, PALETTE_60

LABEL_SET: dict[str, Any] = {
    "name": "pascal_context_60",
    "class_names": ("background", *(name for name, _ in CLASSES)),
    "palette": PALETTE_60,
}
