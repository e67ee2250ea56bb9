"""Build models by name, through the model registry (:mod:`hrseg.models.registry`).

The families register themselves where they are defined: the HRNet variants times the registered heads in
:mod:`hrseg.models.hrnetv2`, the segmentation-models-pytorch baselines in :mod:`hrseg.models.smp`; this
module imports both so that every name is known once :mod:`hrseg.models` is imported.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from hrseg.models.hrnetv2 import build_hrnetv2
from hrseg.models.registry import list_models, resolve_model
from hrseg.models.smp import build_smp

__all__ = ["MODEL_CAPABILITIES", "build_model", "list_models"]

#: Attributes every model from :func:`build_model` carries, so callers never test names or classes:
#: ``num_classes``, ``in_channels``, ``align_corners`` (of the logits resize), ``output_stride`` (input size
#: over logits size: 4 for HRNetV2, 1 for smp), ``size_divisor`` (inputs must be multiples of it: 1 for
#: HRNetV2, the encoder's output stride for smp) and ``min_export_size`` (smallest height/width a
#: dynamic-shape export accepts). Wrappers (the fast inference path, exported graphs) copy them.
#: Training-only, not copied to inference wrappers: ``num_outputs`` (default 1 when absent; HRNet-OCR: 2):
#: in training mode such a model returns a list of that many logits, auxiliary first and the main one last,
#: and in eval mode the main logits alone; ``head_modules`` (the top-level modules of the segmentation head,
#: for the head learning rate and ``load_pretrained(..., ignore_head=True)``).
MODEL_CAPABILITIES = (
    "num_classes",
    "in_channels",
    "align_corners",
    "output_stride",
    "size_divisor",
    "min_export_size",
)


#: The families shipped, imported for their registrations (hrnetv2 also imports every head of
#: hrseg.models.heads).
SHIPPED_FAMILIES = (build_hrnetv2, build_smp)


def build_model(name: str, num_classes: int, **options: Any) -> nn.Module:
    """Build a segmentation network by its registered name.

    Args:
        name: a name of :func:`list_models` (``hrnetv2_w18_small_v1`` ... ``hrnetv2_w64``: an HRNet variant
            with the default ``v2`` head; ``hrnetv2_<variant>_<head>`` with another registered head, e.g.
            ``hrnetv2_w48_ocr``), ``hrnetv2`` / ``hrnetv2_<head>`` together with ``spec=``, or
            ``smp:<Arch>:<encoder>`` (e.g. ``smp:Unet:resnet18``).
        num_classes: output classes (comes from the dataset; nothing here assumes a number).
        **options: HRNet: ``in_channels``, ``fuse_mode`` (``"bilinear"``/``"nearest"``), ``align_corners``,
            ``bn_momentum``, ``spec`` (dict or :class:`~hrseg.models.hrnet.HRNetSpec`; overrides the named
            variant's table row), plus the head's own options (its ``option_names()``; OCR:
            ``ocr_mid_channels`` (512), ``ocr_key_channels`` (256), ``ocr_dropout`` (0.05)). smp:
            ``in_channels``, ``align_corners`` (recorded for resizing the logits) and any keyword of the smp
            class, e.g. ``encoder_weights="imagenet"`` (pretrained encoder, fetched by smp; default ``None``).

    Returns:
        The model, carrying the :data:`MODEL_CAPABILITIES` attributes.

    Raises:
        ValueError: unknown name or option (the message lists the valid ones).
    """
    return resolve_model(name).build(name, num_classes, **options)
