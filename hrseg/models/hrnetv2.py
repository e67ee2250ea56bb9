"""HRNetV2 for semantic segmentation: HRNet backbone + concat-upsample head + ``last_layer``.

Free of any Lightning import so it can be used (and exported) as a plain ``nn.Module``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from torch import Tensor, nn

from hrseg.models.heads import concat_upsample
from hrseg.models.hrnet import FuseMode, HRNet, HRNetSpec

__all__ = ["HRNetV2"]


class HRNetV2(HRNet):
    """HRNetV2 segmentation network; logits come out at 1/4 of the input resolution.

    ``last_layer`` is 1x1 conv (C->C, bias) + BN + ReLU + 1x1 conv (C->num_classes, bias) on the
    concatenation of all four upsampled branches (C = sum of branch channels, e.g. 720 for W48); the
    flat attribute names keep the official checkpoint keys ``last_layer.{0,1,3}.*``.

    Capabilities (see :data:`hrseg.models.factory.MODEL_CAPABILITIES`): logits at ``output_stride`` 4, any
    input size (``size_divisor`` 1); ``forward`` resizes to symbolic sizes, so it exports with dynamic height
    and width as it is.
    """

    output_stride = 4
    size_divisor = 1
    #: At <= 32 pixels the 1/32 branch is 1x1 and torch.export would specialise a broadcast, so a dynamic
    #: export's size range starts above that.
    min_export_size = 33

    def __init__(
        self,
        spec: str | HRNetSpec | Mapping[str, Any] = "w48",
        num_classes: int = 19,
        in_channels: int = 3,
        fuse_mode: FuseMode = "bilinear",
        align_corners: bool = False,
        bn_momentum: float = 0.1,
    ) -> None:
        """Build backbone and head (see :class:`HRNet` for the shared options)."""
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        super().__init__(spec, in_channels, fuse_mode, align_corners, bn_momentum)
        self.num_classes = num_classes
        self.head_channels = sum(self.out_channels)
        c = self.head_channels
        self.last_layer = nn.Sequential(
            nn.Conv2d(c, c, kernel_size=1, bias=True),
            nn.BatchNorm2d(c, momentum=bn_momentum),
            nn.ReLU(inplace=True),
            nn.Conv2d(c, num_classes, kernel_size=1, bias=True),
        )
        for m in self.last_layer.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:  # always: both convs are built with bias=True
                    nn.init.zeros_(m.bias)
        classifier = cast(nn.Conv2d, self.last_layer[3])
        nn.init.normal_(classifier.weight, std=0.01)  # small logits at start: stable early CE

    # HRNet.forward returns the backbone's branch list; the segmentation network returns the logits
    # (inheritance keeps the official flat checkpoint keys), so the narrower override is deliberate.
    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        """Logits ``(B, num_classes, ceil(H/4), ceil(W/4))``."""
        return self.last_layer(concat_upsample(self.forward_features(x), self.align_corners))
