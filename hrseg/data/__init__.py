"""DataModules: Cityscapes, VOC (+SBD aug), ADE20K, COCO-Stuff, PASCAL-Context, LIP, a folder, demo scenes.

Every DataModule yields ``{"image": float (B,3,H,W), "mask": int64 (B,H,W), "name": [...]}`` and carries its
label set (``labels``, a :class:`~hrseg.metadata.LabelSet`) and input normalisation (``mean``, ``std``). One
module per dataset, registered by name where it is defined (:mod:`hrseg.data.registry`).

The names below are imported lazily (PEP 562): ``hrseg.data.scenes`` and ``hrseg.data.checks`` are read by
the deployment path (export checks, error types), which must not load Lightning, albumentations or OpenCV
just because it touched this package.
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
    "ADE20KDataModule": "hrseg.data.ade20k",
    "CocoStuff10kDataModule": "hrseg.data.cocostuff",
    "CocoStuffDataModule": "hrseg.data.cocostuff",
    "CityscapesDataModule": "hrseg.data.cityscapes",
    "FolderDataModule": "hrseg.data.folder",
    "generate_scene": "hrseg.data.scenes",
    "DemoDataModule": "hrseg.data.synthetic",
    "write_ade20k": "hrseg.data.ade20k",
    "write_cityscapes": "hrseg.data.cityscapes",
    "write_cocostuff": "hrseg.data.cocostuff",
    "write_cocostuff10k": "hrseg.data.cocostuff",
    "write_folder": "hrseg.data.folder",
    "write_voc": "hrseg.data.voc",
    "write_demo": "hrseg.data.synthetic",
    "DatasetEntry": "hrseg.data.registry",
    "get_dataset": "hrseg.data.registry",
    "list_datasets": "hrseg.data.registry",
    "register_dataset": "hrseg.data.registry",
    "build_eval_transform": "hrseg.data.transforms",
    "build_train_transform": "hrseg.data.transforms",
    "VOCDataModule": "hrseg.data.voc",
    "PascalContext59DataModule": "hrseg.data.pascal_context",
    "PascalContext60DataModule": "hrseg.data.pascal_context",
    "write_pascal_context": "hrseg.data.pascal_context",
    "LIPDataModule": "hrseg.data.lip",
    "write_lip": "hrseg.data.lip",
}

__all__ = [
    "ADE20KDataModule",
    "ArraySegmentationDataset",
    "CheckReport",
    "CityscapesDataModule",
    "CocoStuff10kDataModule",
    "CocoStuffDataModule",
    "DatasetEntry",
    "DatasetError",
    "DemoDataModule",
    "FolderDataModule",
    "LIPDataModule",
    "LabelSpec",
    "PascalContext59DataModule",
    "PascalContext60DataModule",
    "Sample",
    "SegmentationDataModule",
    "SegmentationDataset",
    "VOCDataModule",
    "auto_num_workers",
    "build_eval_transform",
    "build_train_transform",
    "generate_scene",
    "get_dataset",
    "list_datasets",
    "pad_collate",
    "register_dataset",
    "write_ade20k",
    "write_cityscapes",
    "write_cocostuff",
    "write_cocostuff10k",
    "write_demo",
    "write_folder",
    "write_lip",
    "write_pascal_context",
    "write_voc",
]

if TYPE_CHECKING:
    from hrseg.data.ade20k import ADE20KDataModule, write_ade20k
    from hrseg.data.checks import CheckReport, DatasetError, LabelSpec, Sample
    from hrseg.data.cityscapes import CityscapesDataModule, write_cityscapes
    from hrseg.data.cocostuff import (
        CocoStuff10kDataModule,
        CocoStuffDataModule,
        write_cocostuff,
        write_cocostuff10k,
    )
    from hrseg.data.datamodule import SegmentationDataModule
    from hrseg.data.dataset import ArraySegmentationDataset, SegmentationDataset
    from hrseg.data.folder import FolderDataModule, write_folder
    from hrseg.data.lip import LIPDataModule, write_lip
    from hrseg.data.loaders import auto_num_workers, pad_collate
    from hrseg.data.pascal_context import (
        PascalContext59DataModule,
        PascalContext60DataModule,
        write_pascal_context,
    )
    from hrseg.data.registry import DatasetEntry, get_dataset, list_datasets, register_dataset
    from hrseg.data.scenes import generate_scene
    from hrseg.data.synthetic import DemoDataModule, write_demo
    from hrseg.data.transforms import build_eval_transform, build_train_transform
    from hrseg.data.voc import VOCDataModule, write_voc


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module 'hrseg.data' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
