"""The timm-based reference: timm's ``hrnet_*`` features + the HRNetV2 head, in plain PyTorch.

This is what a user would write without hrseg. timm's backbone uses exactly the official state-dict key names
for everything it shares with hrseg, so hrseg weights load into it unchanged (prefixed ``backbone.``) and the
two networks can be checked for equal outputs. timm fuses branches with nearest upsampling, hence the parity
comparisons build hrseg with ``fuse_mode="nearest"``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["TimmHRNetV2", "hrseg_to_reference_state", "timm_name"]

#: hrseg variants whose timm name is not simply ``hrnet_<variant>``
_TIMM_NAMES = {"w18_small_v1": "hrnet_w18_small"}


def timm_name(variant: str) -> str:
    """timm model name of an hrseg variant (``w18_small_v1`` is timm's ``hrnet_w18_small``)."""
    return _TIMM_NAMES.get(variant, f"hrnet_{variant}")


class TimmHRNetV2(nn.Module):
    """timm HRNet features (strides 4..32, no classification ``incre`` modules) + concat-upsample head.

    Args:
        variant: hrseg variant name without prefix, e.g. ``"w18_small_v2"`` (timm: ``hrnet_w18_small_v2``).
        num_classes: output classes.
        align_corners: for the head's bilinear upsampling (official seg code: False).
    """

    def __init__(self, variant: str, num_classes: int = 19, align_corners: bool = False) -> None:
        super().__init__()
        import timm

        self.backbone = timm.create_model(
            timm_name(variant),
            pretrained=False,
            features_only=True,
            feature_location="",  # raw stage-4 branches, as HRNetV2 uses them
            out_indices=(1, 2, 3, 4),  # drop the stride-2 stem feature
        )
        c = int(sum(self.backbone.feature_info.channels()))
        self.num_classes = num_classes
        self.align_corners = align_corners
        self.last_layer = nn.Sequential(
            nn.Conv2d(c, c, kernel_size=1),
            nn.BatchNorm2d(c),
            nn.ReLU(inplace=True),
            nn.Conv2d(c, num_classes, kernel_size=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        """Logits at 1/4 of the input resolution."""
        feats = self.backbone(x)
        size = feats[0].shape[-2:]
        ups = [feats[0]] + [
            F.interpolate(f, size=size, mode="bilinear", align_corners=self.align_corners) for f in feats[1:]
        ]
        return self.last_layer(torch.cat(ups, dim=1))


def hrseg_to_reference_state(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename an hrseg HRNetV2 state dict for :class:`TimmHRNetV2` (backbone keys get ``backbone.``)."""
    return {k if k.startswith("last_layer.") else f"backbone.{k}": v for k, v in state.items()}
