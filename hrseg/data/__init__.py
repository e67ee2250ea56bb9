"""Datasets and DataModules: Cityscapes, PASCAL VOC (+SBD aug), a plain folder and generated demo scenes.

Every DataModule yields ``{"image": float (B,3,H,W), "mask": int64 (B,H,W), "name": [...]}`` and carries its
class metadata (``num_classes``, ``ignore_index``, ``class_names``, ``palette``, ``mean``, ``std``).

The names below are imported lazily (PEP 562): ``hrseg.data.metadata`` and ``hrseg.data.scenes`` are read by
the deployment path (writers, evaluation, export checks), which must not load Lightning, albumentations or
OpenCV just because it touched this package.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any

# albumentations checks PyPI for updates at import; this toolkit runs offline and in CI, so keep it quiet.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

#: public name -> the module that defines it
_LAZY: dict[str, str] = {
    "ArraySegmentationDataset": "hrseg.data.dataset",
    "SegmentationDataset": "hrseg.data.dataset",
    "SegmentationDataModule": "hrseg.data.datamodule",
    "auto_num_workers": "hrseg.data.loaders",
    "pad_collate": "hrseg.data.loaders",
    "CheckReport": "hrseg.data.checks",
    "DatasetError": "hrseg.data.checks",
    "LabelSpec": "hrseg.data.checks",
    "Sample": "hrseg.data.checks",
    "CityscapesDataModule": "hrseg.data.cityscapes",
    "FolderDataModule": "hrseg.data.folder",
    "CITYSCAPES_CLASSES": "hrseg.data.metadata",
    "CITYSCAPES_PALETTE": "hrseg.data.metadata",
    "IGNORE_INDEX": "hrseg.data.metadata",
    "IMAGENET_MEAN": "hrseg.data.metadata",
    "IMAGENET_STD": "hrseg.data.metadata",
    "VOC_CLASSES": "hrseg.data.metadata",
    "VOC_PALETTE": "hrseg.data.metadata",
    "generate_scene": "hrseg.data.scenes",
    "DemoDataModule": "hrseg.data.synthetic",
    "write_cityscapes": "hrseg.data.layouts",
    "write_folder": "hrseg.data.layouts",
    "write_voc": "hrseg.data.layouts",
    "build_eval_transform": "hrseg.data.transforms",
    "build_train_transform": "hrseg.data.transforms",
    "VOCDataModule": "hrseg.data.voc",
}

__all__ = [
    "CITYSCAPES_CLASSES",
    "CITYSCAPES_PALETTE",
    "IGNORE_INDEX",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "VOC_CLASSES",
    "VOC_PALETTE",
    "ArraySegmentationDataset",
    "CheckReport",
    "CityscapesDataModule",
    "DatasetError",
    "DemoDataModule",
    "FolderDataModule",
    "LabelSpec",
    "Sample",
    "SegmentationDataModule",
    "SegmentationDataset",
    "VOCDataModule",
    "auto_num_workers",
    "build_eval_transform",
    "build_train_transform",
    "generate_scene",
    "pad_collate",
    "write_cityscapes",
    "write_folder",
    "write_voc",
]

if TYPE_CHECKING:
    from hrseg.data.checks import CheckReport, DatasetError, LabelSpec, Sample
    from hrseg.data.cityscapes import CityscapesDataModule
    from hrseg.data.datamodule import SegmentationDataModule
    from hrseg.data.dataset import ArraySegmentationDataset, SegmentationDataset
    from hrseg.data.folder import FolderDataModule
    from hrseg.data.layouts import write_cityscapes, write_folder, write_voc
    from hrseg.data.loaders import auto_num_workers, pad_collate
    from hrseg.data.metadata import (
        CITYSCAPES_CLASSES,
        CITYSCAPES_PALETTE,
        IGNORE_INDEX,
        IMAGENET_MEAN,
        IMAGENET_STD,
        VOC_CLASSES,
        VOC_PALETTE,
    )
    from hrseg.data.scenes import generate_scene
    from hrseg.data.synthetic import DemoDataModule
    from hrseg.data.transforms import build_eval_transform, build_train_transform
    from hrseg.data.voc import VOCDataModule


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module 'hrseg.data' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
