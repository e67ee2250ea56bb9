"""Models: the HRNet backbone, HRNetV2, HRNet-OCR, the model factory and checkpoint import."""

from __future__ import annotations

from hrseg.models.blocks import HighResolutionModule
from hrseg.models.factory import MODEL_CAPABILITIES, build_model, list_models
from hrseg.models.heads import concat_upsample, upsample_logits
from hrseg.models.hrnet import (
    HRNET_SPECS,
    CheckpointRemap,
    HRNet,
    HRNetSpec,
    StageSpec,
)
from hrseg.models.hrnetv2 import HRNetSegmentationNet, HRNetV2
from hrseg.models.ocr import HRNetOCR
from hrseg.models.weights import LoadReport, load_pretrained

__all__ = [
    "HRNET_SPECS",
    "MODEL_CAPABILITIES",
    "CheckpointRemap",
    "HRNet",
    "HRNetOCR",
    "HRNetSegmentationNet",
    "HRNetSpec",
    "HRNetV2",
    "HighResolutionModule",
    "LoadReport",
    "StageSpec",
    "build_model",
    "concat_upsample",
    "list_models",
    "load_pretrained",
    "upsample_logits",
]
