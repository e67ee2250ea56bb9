"""The head contract (:class:`SegmentationHead`) and the helpers heads share: logit resizing, concat-upsample.

Free of any Lightning import so heads can be used (and exported) as plain ``nn.Module`` parts.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hrseg.models.hrnet import CheckpointRemap

__all__ = ["SHARED_OPTIONS", "SegmentationHead", "concat_upsample", "upsample_logits"]

#: The keywords the network hands every head beside ``branch_channels`` and ``num_classes``.
SHARED_OPTIONS = ("align_corners", "bn_momentum")


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


class SegmentationHead(nn.Module):
    """A head on the HRNet branches: the one contract every head of :mod:`hrseg.models.heads` keeps.

    - Built as ``cls(branch_channels, num_classes, align_corners=..., bn_momentum=..., **own_options)``:
      ``branch_channels`` are the channels of the backbone's four branches (strides 4, 8, 16, 32). Its own
      options are the keyword parameters of its ``__init__`` (:meth:`option_names`); ``build_model``
      accepts exactly those for a model with this head.
    - ``forward(features)`` takes the list of the four branch outputs and returns the logits ``(B, K, h, w)``
      at 1/``output_stride`` of the input, or, for a head with ``num_outputs > 1``, the list
      ``[aux..., main]`` (the network hands the list on in training and the main logits alone in eval).
    - ``head_modules`` names its top-level modules: the network registers them as its own attributes, so
      their state-dict keys are the flat official ones (``last_layer.*``, ``aux_head.*``); a head keeps no
      parameter or buffer outside them.
    - :meth:`remap_checkpoint_keys` adapts another head's checkpoint (default: keys as they are).

    Attributes:
        branch_channels: the backbone branch channels it was built for.
        num_classes: output classes K.
        align_corners: of the head's bilinear resizes (the network's setting).
        bn_momentum: of the head's BatchNorms (the network's setting).
    """

    #: Top-level modules of the head, in the order of :data:`head_modules` of the network.
    head_modules: ClassVar[tuple[str, ...]] = ()
    #: Outputs in training mode (auxiliary first, the main one last).
    num_outputs: ClassVar[int] = 1
    #: Input size over logits size.
    output_stride: ClassVar[int] = 4
    #: The registered name (written by :func:`~hrseg.models.registry.register_head`).
    head_name: ClassVar[str] = ""

    def __init__(
        self,
        branch_channels: Sequence[int],
        num_classes: int,
        *,
        align_corners: bool = False,
        bn_momentum: float = 0.1,
    ) -> None:
        """Keep the network's settings; subclasses build their modules after calling this."""
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.branch_channels = tuple(int(c) for c in branch_channels)
        self.num_classes = num_classes
        self.align_corners = align_corners
        self.bn_momentum = bn_momentum

    def forward(self, features: Sequence[Tensor]) -> Tensor | list[Tensor]:
        """Logits, or ``[aux..., main]`` for a multi-output head."""
        raise NotImplementedError(f"{type(self).__name__} does not implement forward(features)")

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        """The head's own options: the keyword parameters of its ``__init__`` beyond the contract's."""
        fixed = {"self", "branch_channels", "num_classes", *SHARED_OPTIONS}
        return tuple(
            name
            for name, p in inspect.signature(cls.__init__).parameters.items()
            if name not in fixed and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        )

    @classmethod
    def remap_checkpoint_keys(cls, state: dict[str, Tensor]) -> CheckpointRemap:
        """Adapt another head's state dict to this one (default: keys are used as they are)."""
        return CheckpointRemap(state)
