"""Models: the HRNet backbone, the segmentation network and its heads, the registries and checkpoint import.

A head is one file in :mod:`hrseg.models.heads` registered with :func:`register_head`; model names resolve
through the registries (:func:`list_models`, :func:`build_model`). See docs/extending.md.
"""

from __future__ import annotations

from hrseg.models.blocks import HighResolutionModule
from hrseg.models.factory import MODEL_CAPABILITIES, build_model
from hrseg.models.heads import SegmentationHead, concat_upsample, upsample_logits
from hrseg.models.heads.ocr import OCRHead
from hrseg.models.heads.v2 import HRNetV2Head
from hrseg.models.hrnet import (
    HRNET_SPECS,
    CheckpointRemap,
    HRNet,
    HRNetSpec,
    StageSpec,
)
from hrseg.models.hrnetv2 import HRNetSegmentationNet
from hrseg.models.registry import (
    get_head,
    list_heads,
    list_models,
    register_head,
    register_model,
    register_model_family,
    resolve_model,
)
from hrseg.models.weights import LoadReport, load_pretrained

__all__ = [
    "HRNET_SPECS",
    "MODEL_CAPABILITIES",
    "CheckpointRemap",
    "HRNet",
    "HRNetSegmentationNet",
    "HRNetSpec",
    "HRNetV2Head",
    "HighResolutionModule",
    "LoadReport",
    "OCRHead",
    "SegmentationHead",
    "StageSpec",
    "build_model",
    "concat_upsample",
    "get_head",
    "list_heads",
    "list_models",
    "load_pretrained",
    "register_head",
    "register_model",
    "register_model_family",
    "resolve_model",
    "upsample_logits",
]
