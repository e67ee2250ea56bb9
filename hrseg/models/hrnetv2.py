"""HRNet segmentation networks: their shared base, and HRNetV2 (concat-upsample head + ``last_layer``).

The base class holds what every HRNet segmentation network shares: the head input, the capabilities and
construction checks. What a network knows about its checkpoints (head modules, key remapping) lives on the
backbone class :class:`~hrseg.models.hrnet.HRNet`, so the training task and the weight loader name no module.

Free of any Lightning import so it can be used (and exported) as a plain ``nn.Module``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from torch import Tensor, nn

from hrseg.models.blocks import FuseMode
from hrseg.models.heads import concat_upsample
from hrseg.models.hrnet import HRNet, HRNetSpec

__all__ = ["HRNetSegmentationNet", "HRNetV2", "hrnetv2_head"]


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


class HRNetSegmentationNet(HRNet):
    """An HRNet backbone with a segmentation head on the concatenated, upsampled branches.

    Subclasses build their head in ``__init__`` (``self.head_channels`` is its input width), name its
    top-level modules in :attr:`~hrseg.models.hrnet.HRNet.head_modules` and adapt other family members'
    checkpoints in :meth:`~hrseg.models.hrnet.HRNet.remap_checkpoint_keys`.

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
        """Check ``num_classes`` and build the backbone (see :class:`HRNet` for the shared options)."""
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        super().__init__(spec, in_channels, fuse_mode, align_corners, bn_momentum)
        self.num_classes = num_classes
        self.head_channels = sum(self.out_channels)

    def head_features(self, x: Tensor) -> Tensor:
        """The head's input: all four branches upsampled to 1/4 and concatenated (``head_channels`` wide)."""
        return concat_upsample(self.forward_features(x), self.align_corners)


class HRNetV2(HRNetSegmentationNet):
    """HRNetV2 segmentation network; logits come out at 1/4 of the input resolution.

    ``last_layer`` is :func:`hrnetv2_head` on the concatenation of all four upsampled branches (C = sum of
    branch channels, e.g. 720 for W48); the flat attribute names keep the official checkpoint keys
    ``last_layer.{0,1,3}.*``.
    """

    head_modules = ("last_layer",)

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
        super().__init__(spec, num_classes, in_channels, fuse_mode, align_corners, bn_momentum)
        self.last_layer = hrnetv2_head(self.head_channels, num_classes, bn_momentum)
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
        return self.last_layer(self.head_features(x))
