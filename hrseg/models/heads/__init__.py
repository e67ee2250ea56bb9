"""Segmentation heads, one per file, each registered with :func:`~hrseg.models.registry.register_head`.

Importing this package imports every module of its folder, so a new head is one new file here (a head that
lives elsewhere registers when its own module is imported: see docs/extending.md). :mod:`.common` holds the
contract (:class:`SegmentationHead`) and the helpers heads share.
"""

from __future__ import annotations

import importlib
import pkgutil

from hrseg.models.heads.common import SegmentationHead, concat_upsample, upsample_logits

__all__ = ["SegmentationHead", "concat_upsample", "upsample_logits"]

# Discovery: every module of the folder registers its heads on import (sorted by file name, as pkgutil lists).
for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
