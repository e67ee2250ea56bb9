"""Datasets and DataModules: Cityscapes, PASCAL VOC (+SBD aug), a plain folder and generated demo scenes.

Every DataModule yields ``{"image": float (B,3,H,W), "mask": int64 (B,H,W), "name": [...]}`` and carries its
class metadata (``num_classes``, ``ignore_index``, ``class_names``, ``palette``, ``mean``, ``std``).
"""

from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from hrseg.data.base import (
    ArraySegmentationDataset,
    SegmentationDataModule,
    SegmentationDataset,
    auto_num_workers,
    pad_collate,
)
from hrseg.data.checks import CheckReport, DatasetError, LabelSpec, Sample
from hrseg.data.cityscapes import CityscapesDataModule
from hrseg.data.folder import FolderDataModule
from hrseg.data.metadata import (
    CITYSCAPES_CLASSES,
    CITYSCAPES_PALETTE,
    IGNORE_INDEX,
    IMAGENET_MEAN,
    IMAGENET_STD,
    VOC_CLASSES,
    VOC_PALETTE,
)
from hrseg.data.synthetic import (
    DemoDataModule,
    generate_scene,
    write_cityscapes,
    write_folder,
    write_voc,
)
from hrseg.data.transforms import build_eval_transform, build_train_transform
from hrseg.data.voc import VOCDataModule

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
