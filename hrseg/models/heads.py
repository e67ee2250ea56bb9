"""Segmentation head helpers: logit resizing and the HRNetV2 concat-upsample aggregation."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["concat_upsample", "upsample_logits"]


def upsample_logits(logits: Tensor, size: Sequence[int], align_corners: bool = False) -> Tensor:
    """Bilinearly resize ``(B, C, h, w)`` logits to an explicit ``size = (H, W)``.

    Loss, metrics and inference all go through this one function so ``align_corners`` is applied
    consistently; when the logits already have that size they are returned unchanged (no copy).
    """
    target = (int(size[0]), int(size[1]))
    if tuple(logits.shape[-2:]) == target:
        return logits
    return F.interpolate(logits, size=target, mode="bilinear", align_corners=align_corners)


def concat_upsample(features: Sequence[Tensor], align_corners: bool = False) -> Tensor:
    """HRNetV2 aggregation: upsample every branch to the first (highest-resolution) one and concatenate.

    The explicit target size (not a scale factor) keeps odd input sizes working; the size is taken from the
    tensor as is (no ``int()``) so tracing exporters keep it symbolic.
    """
    size = features[0].shape[-2:]
    parts = [features[0]]
    parts += [F.interpolate(f, size=size, mode="bilinear", align_corners=align_corners) for f in features[1:]]
    return torch.cat(parts, dim=1)
