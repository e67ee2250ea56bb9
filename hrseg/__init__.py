"""hrseg: HRNetV2 semantic segmentation on PyTorch Lightning."""

from __future__ import annotations

import os

# albumentations checks PyPI for updates at import; this toolkit runs offline and in CI, so keep it quiet.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__version__ = "0.1.0"

__all__ = ["__version__"]
