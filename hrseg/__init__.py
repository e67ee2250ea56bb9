"""hrseg: HRNetV2 semantic segmentation on PyTorch Lightning.

The public API is imported lazily so that ``hrseg --help`` and ``--version`` answer without loading torch.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any

from hrseg._version import __version__

# albumentations checks PyPI for updates at import; this toolkit runs offline and in CI, so keep it quiet.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

_LAZY = {
    "build_model": "hrseg.models",
    "list_models": "hrseg.models",
    "load_pretrained": "hrseg.models",
    "Segmenter": "hrseg.deploy",
    "EvalProtocol": "hrseg.eval_protocol",
    "LossConfig": "hrseg.losses",
    "OptimizerConfig": "hrseg.optim",
    "SegmentationTask": "hrseg.task",
}
_SUBMODULES = (
    "checkpoint",
    "colors",
    "data",
    "deploy",
    "export",
    "hub",
    "images",
    "inference",
    "losses",
    "metrics",
    "models",
    "optim",
    "task",
    "viz",
)

__all__ = [
    "EvalProtocol",
    "LossConfig",
    "OptimizerConfig",
    "SegmentationTask",
    "Segmenter",
    "__version__",
    "build_model",
    "checkpoint",
    "colors",
    "data",
    "deploy",
    "export",
    "hub",
    "images",
    "inference",
    "list_models",
    "load_pretrained",
    "losses",
    "metrics",
    "models",
    "optim",
    "task",
    "viz",
]

if TYPE_CHECKING:
    from hrseg import (
        checkpoint,
        colors,
        data,
        deploy,
        export,
        hub,
        images,
        inference,
        losses,
        metrics,
        models,
        optim,
        task,
        viz,
    )
    from hrseg.deploy import Segmenter
    from hrseg.eval_protocol import EvalProtocol
    from hrseg.losses import LossConfig
    from hrseg.models import build_model, list_models, load_pretrained
    from hrseg.optim import OptimizerConfig
    from hrseg.task import SegmentationTask


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"hrseg.{name}")
    raise AttributeError(f"module 'hrseg' has no attribute {name!r}")
