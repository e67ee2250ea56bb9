"""The HRNetV2 head (``v2``, the default): concat-upsample of the four branches, then ``last_layer``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from torch import Tensor, nn

from hrseg.models.heads.common import SegmentationHead, concat_upsample
from hrseg.models.registry import register_head

__all__ = ["HRNetV2Head", "hrnetv2_head"]


def hrnetv2_head(channels: int, num_classes: int, bn_momentum: float) -> nn.Sequential:
    """The HRNetV2 head: 1x1 conv (C->C, bias) + BN + ReLU + 1x1 conv (C->num_classes, bias).

    HRNetV2's ``last_layer`` and HRNet-OCR's ``aux_head`` (keys ``{0,1,3}.*``), laid out identically.
    """
    return nn.Sequential(
        nn.Conv2d(channels, channels, kernel_size=1, bias=True),
        nn.BatchNorm2d(channels, momentum=bn_momentum),
        nn.ReLU(inplace=True),
        nn.Conv2d(channels, num_classes, kernel_size=1, bias=True),
    )


@register_head("v2")
class HRNetV2Head(SegmentationHead):
    """HRNetV2: ``last_layer`` (:func:`hrnetv2_head`) on all four branches upsampled to 1/4 and concatenated.

    C = the sum of the branch channels (720 for W48); keys ``last_layer.{0,1,3}.*`` as in the official code.
    """

    head_modules = ("last_layer",)

    def __init__(self, branch_channels: Sequence[int], num_classes: int, **network: Any) -> None:
        """Build ``last_layer``: He init, the classifier at std 0.01 (small logits at start: stable CE)."""
        super().__init__(branch_channels, num_classes, **network)
        self.last_layer = hrnetv2_head(sum(self.branch_channels), num_classes, self.bn_momentum)
        for m in self.last_layer.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:  # always: both convs are built with bias=True
                    nn.init.zeros_(m.bias)
        classifier = cast(nn.Conv2d, self.last_layer[3])
        nn.init.normal_(classifier.weight, std=0.01)

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        """Logits ``(B, num_classes, H/4, W/4)`` (the first branch's size)."""
        return self.last_layer(concat_upsample(features, self.align_corners))
