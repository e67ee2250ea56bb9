"""The modules every HRNet stage is made of: residual blocks and the multi-resolution module with its fusion.

These are the parts, kept apart from how they are assembled (:mod:`hrseg.models.hrnet`: the variants table and
the network), so a block can be read, tested and reused without the variants or the checkpoint knowledge.
Attribute names and sub-indices follow the official HRNet segmentation code exactly (``conv1``, ``bn1``,
``downsample``, ``branches``, ``fuse_layers.i.j[.k].{0,1}``): the network's state-dict keys come from them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, cast

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "BLOCKS",
    "BasicBlock",
    "BlockName",
    "Bottleneck",
    "FuseMode",
    "HighResolutionModule",
    "conv_bn",
    "make_blocks",
]

#: upsampling of lower-resolution branches in the fusion: official segmentation code / timm
FuseMode = Literal["bilinear", "nearest"]
#: the block names of the official configs (``BLOCK: BASIC``), keys of :data:`BLOCKS`
BlockName = Literal["BASIC", "BOTTLENECK"]


# --------------------------------------------------------------------------------------------------
# Blocks
# --------------------------------------------------------------------------------------------------
def _conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    """3x3 conv without bias: every conv in HRNet is followed by BN, so a bias would be redundant."""
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False)


def conv_bn(in_ch: int, out_ch: int, kernel: int, stride: int, bn_momentum: float) -> list[nn.Module]:
    """Conv + BN pair as a list so callers can append a ReLU and keep official sub-indices (0, 1, 2).

    Args:
        in_ch: input channels.
        out_ch: output channels.
        kernel: square kernel size; the padding ``kernel // 2`` keeps the size at stride 1.
        stride: conv stride (2 halves the resolution).
        bn_momentum: BatchNorm momentum, PyTorch convention.

    Returns:
        ``[conv, bn]``, to wrap in an ``nn.Sequential`` (keys ``.0.weight``, ``.1.running_mean`` ...).
    """
    conv = nn.Conv2d(in_ch, out_ch, kernel_size=kernel, stride=stride, padding=kernel // 2, bias=False)
    return [conv, nn.BatchNorm2d(out_ch, momentum=bn_momentum)]


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual connection (used in stages 2-4)."""

    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        bn_momentum: float = 0.1,
    ) -> None:
        """Build the block; ``downsample`` projects the identity when the shape changes."""
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes, momentum=bn_momentum)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes, momentum=bn_momentum)
        self.relu = nn.ReLU(inplace=True)
        # nn.Identity instead of the official None (as timm): no branch in forward, the same state-dict keys
        self.downsample: nn.Module = downsample if downsample is not None else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        """Residual forward; in-place ops are safe because every modified tensor is freshly made here."""
        identity = self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> 1x1 residual block with expansion 4 (stage 1, as in ResNet)."""

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        bn_momentum: float = 0.1,
    ) -> None:
        """Build the block; the output has ``planes * 4`` channels."""
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes, momentum=bn_momentum)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes, momentum=bn_momentum)
        self.conv3 = nn.Conv2d(planes, out_planes, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes, momentum=bn_momentum)
        self.relu = nn.ReLU(inplace=True)
        # nn.Identity instead of the official None (as timm): no branch in forward, the same state-dict keys
        self.downsample: nn.Module = downsample if downsample is not None else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        """Residual forward with in-place ReLU/add on freshly computed tensors."""
        identity = self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += identity
        return self.relu(out)


BLOCKS: dict[str, type[BasicBlock] | type[Bottleneck]] = {"BASIC": BasicBlock, "BOTTLENECK": Bottleneck}


def make_blocks(
    block: type[BasicBlock] | type[Bottleneck],
    inplanes: int,
    planes: int,
    num_blocks: int,
    bn_momentum: float,
) -> nn.Sequential:
    """A chain of residual blocks; the first projects the identity if the channel count changes.

    Args:
        block: the block class (a value of :data:`BLOCKS`).
        inplanes: channels entering the chain.
        planes: the blocks' inner width; the chain outputs ``planes * block.expansion`` channels.
        num_blocks: how many blocks in a row.
        bn_momentum: BatchNorm momentum, PyTorch convention.

    Returns:
        The blocks in an ``nn.Sequential`` (keys ``0.conv1.weight`` ... as in the official code).
    """
    downsample: nn.Module | None = None
    out_planes = planes * block.expansion
    if inplanes != out_planes:
        downsample = nn.Sequential(*conv_bn(inplanes, out_planes, 1, 1, bn_momentum))
    layers: list[nn.Module] = [block(inplanes, planes, 1, downsample, bn_momentum)]
    layers += [block(out_planes, planes, 1, None, bn_momentum) for _ in range(1, num_blocks)]
    return nn.Sequential(*layers)


def _resize(x: Tensor, size: Sequence[int], mode: FuseMode, align_corners: bool) -> Tensor:
    """Resize to an explicit size (never a scale factor) so odd input sizes line up across branches."""
    if mode == "bilinear":
        return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=align_corners)
    return F.interpolate(x, size=tuple(size), mode="nearest")


# --------------------------------------------------------------------------------------------------
# Multi-resolution module
# --------------------------------------------------------------------------------------------------
class HighResolutionModule(nn.Module):
    """Parallel branches of residual blocks followed by an all-to-all multi-resolution fusion.

    Fused output ``i`` is ``ReLU(sum_j f_ij(x_j))``: identity for ``j == i``; 1x1 conv + BN then
    upsampling for lower resolutions (``j > i``); a chain of stride-2 3x3 convs for higher ones.
    """

    def __init__(
        self,
        num_branches: int,
        block: type[BasicBlock] | type[Bottleneck],
        num_blocks: Sequence[int],
        num_inchannels: Sequence[int],
        num_channels: Sequence[int],
        fuse_method: str = "SUM",
        multi_scale_output: bool = True,
        fuse_mode: FuseMode = "bilinear",
        align_corners: bool = False,
        bn_momentum: float = 0.1,
    ) -> None:
        """Validate the configuration, then build branches and fuse layers.

        Raises:
            ValueError: if the per-branch lists disagree with ``num_branches``, the fuse method is not
                ``SUM`` or the fuse mode is unknown (fail early instead of building a broken network).
        """
        super().__init__()
        for label, values in (
            ("num_blocks", num_blocks),
            ("num_channels", num_channels),
            ("num_inchannels", num_inchannels),
        ):
            if num_branches != len(values):
                raise ValueError(f"num_branches ({num_branches}) != len({label}) ({len(values)})")
        if fuse_method.upper() != "SUM":
            raise ValueError(f"unsupported fuse_method {fuse_method!r}; HRNet fuses by 'SUM'")
        if fuse_mode not in ("bilinear", "nearest"):
            raise ValueError(f"fuse_mode must be 'bilinear' or 'nearest', got {fuse_mode!r}")
        self.num_branches = num_branches
        self.fuse_method = "SUM"
        self.multi_scale_output = multi_scale_output
        self.fuse_mode: FuseMode = fuse_mode
        self.align_corners = align_corners

        out_ch = [c * block.expansion for c in num_channels]
        self.branches = nn.ModuleList(
            make_blocks(block, num_inchannels[b], num_channels[b], num_blocks[b], bn_momentum)
            for b in range(num_branches)
        )
        #: channels of each output branch (the next module's ``num_inchannels``)
        self.out_channels: list[int] = out_ch
        self.fuse_layers = self._make_fuse_layers(out_ch, bn_momentum)
        self.relu = nn.ReLU(inplace=True)

    def _make_fuse_layers(self, ch: list[int], bn_momentum: float) -> nn.Module:
        """Fuse layers with the official sub-indices (``fuse_layers.i.j[.k].{0,1}``).

        Where the official code holds ``None`` (a single branch: nothing to fuse; ``j == i``: the branch
        itself), this holds a parameter-free ``nn.Identity``, as timm does: the state-dict keys stay the same.
        """
        n = self.num_branches
        if n == 1:
            return nn.Identity()
        layers = nn.ModuleList()
        for i in range(n if self.multi_scale_output else 1):
            row = nn.ModuleList()
            for j in range(n):
                if j > i:
                    row.append(nn.Sequential(*conv_bn(ch[j], ch[i], 1, 1, bn_momentum)))
                elif j == i:
                    row.append(nn.Identity())  # keeps the official indices of the other entries
                else:
                    steps: list[nn.Module] = []
                    for k in range(i - j):
                        if k == i - j - 1:
                            steps.append(nn.Sequential(*conv_bn(ch[j], ch[i], 3, 2, bn_momentum)))
                        else:
                            convs = conv_bn(ch[j], ch[j], 3, 2, bn_momentum)
                            steps.append(nn.Sequential(*convs, nn.ReLU(inplace=True)))
                    row.append(nn.Sequential(*steps))
            layers.append(row)
        return layers

    def forward(self, xs: list[Tensor]) -> list[Tensor]:
        """Run each branch, then fuse by summation into freshly allocated tensors."""
        xs = [branch(x) for branch, x in zip(self.branches, xs, strict=True)]
        if self.num_branches == 1:
            return xs
        out: list[Tensor] = []
        for i, row in enumerate(cast(nn.ModuleList, self.fuse_layers)):  # rows of _make_fuse_layers
            row = cast(nn.ModuleList, row)
            size = xs[i].shape[-2:]
            y: Tensor | None = None
            owned = False  # False while y still aliases a branch output that other rows read
            for j, layer in enumerate(row):
                if j == i:
                    term = xs[j]  # the row's own branch (its layer is an nn.Identity)
                elif j > i:
                    # 1x1 conv at the low resolution first (cheaper), then one resize to the exact size.
                    term = _resize(layer(xs[j]), size, self.fuse_mode, self.align_corners)
                else:
                    term = layer(xs[j])
                if y is None:
                    y, owned = term, j != i
                elif owned:
                    y += term
                else:
                    y, owned = y + term, True
            assert y is not None
            out.append(self.relu(y))
        return out
