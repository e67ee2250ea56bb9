"""HRNet backbone: residual blocks, the multi-resolution module and the variants table.

The whole family is described by :data:`HRNET_SPECS` (plain data, one row per variant) and built by the
single class :class:`HRNet`. Module attribute names follow the official HRNet segmentation code exactly
(``conv1 ... stage4``) so published and timm checkpoints load without any key renaming.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, cast

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "HRNET_SPECS",
    "BasicBlock",
    "Bottleneck",
    "CheckpointRemap",
    "HRNet",
    "HRNetSpec",
    "HighResolutionModule",
    "StageSpec",
    "get_spec",
]

FuseMode = Literal["bilinear", "nearest"]
BlockName = Literal["BASIC", "BOTTLENECK"]


# --------------------------------------------------------------------------------------------------
# Blocks
# --------------------------------------------------------------------------------------------------
def _conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    """3x3 conv without bias: every conv in HRNet is followed by BN, so a bias would be redundant."""
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False)


def _conv_bn(in_ch: int, out_ch: int, kernel: int, stride: int, bn_momentum: float) -> list[nn.Module]:
    """Conv + BN pair as a list so callers can append a ReLU and keep official sub-indices (0, 1, 2)."""
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


def _make_blocks(
    block: type[BasicBlock] | type[Bottleneck],
    inplanes: int,
    planes: int,
    num_blocks: int,
    bn_momentum: float,
) -> nn.Sequential:
    """A chain of residual blocks; the first projects the identity if the channel count changes."""
    downsample: nn.Module | None = None
    out_planes = planes * block.expansion
    if inplanes != out_planes:
        downsample = nn.Sequential(*_conv_bn(inplanes, out_planes, 1, 1, bn_momentum))
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
            _make_blocks(block, num_inchannels[b], num_channels[b], num_blocks[b], bn_momentum)
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
                    row.append(nn.Sequential(*_conv_bn(ch[j], ch[i], 1, 1, bn_momentum)))
                elif j == i:
                    row.append(nn.Identity())  # keeps the official indices of the other entries
                else:
                    steps: list[nn.Module] = []
                    for k in range(i - j):
                        if k == i - j - 1:
                            steps.append(nn.Sequential(*_conv_bn(ch[j], ch[i], 3, 2, bn_momentum)))
                        else:
                            convs = _conv_bn(ch[j], ch[j], 3, 2, bn_momentum)
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


# --------------------------------------------------------------------------------------------------
# Variants table
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StageSpec:
    """One stage: ``num_modules`` HighResolutionModules of ``num_branches`` parallel branches."""

    num_modules: int
    num_branches: int
    block: BlockName
    num_blocks: tuple[int, ...]
    num_channels: tuple[int, ...]
    fuse_method: str = "SUM"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StageSpec:
        """Build from a dict; keys may be lower-case or the official upper-case YAML names."""
        d = {str(k).lower(): v for k, v in data.items()}
        unknown = set(d) - {
            "num_modules",
            "num_branches",
            "block",
            "num_blocks",
            "num_channels",
            "fuse_method",
        }
        if unknown:
            raise ValueError(f"unknown stage spec keys: {sorted(unknown)}")
        block = str(d.get("block", "BASIC")).upper()
        if block not in BLOCKS:
            raise ValueError(f"unknown block {block!r}; expected one of {sorted(BLOCKS)}")
        return cls(
            num_modules=int(d["num_modules"]),
            num_branches=int(d["num_branches"]),
            block=cast(BlockName, block),  # checked against BLOCKS above
            num_blocks=tuple(int(v) for v in d["num_blocks"]),
            num_channels=tuple(int(v) for v in d["num_channels"]),
            fuse_method=str(d.get("fuse_method", "SUM")).upper(),
        )


@dataclass(frozen=True)
class HRNetSpec:
    """A full HRNet variant: stem width plus four stages (stage 1 has a single branch)."""

    stage1: StageSpec
    stage2: StageSpec
    stage3: StageSpec
    stage4: StageSpec
    stem_width: int = 64
    stages: tuple[StageSpec, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        """Check the branch progression 1-2-3-4 that the transitions assume."""
        object.__setattr__(self, "stages", (self.stage1, self.stage2, self.stage3, self.stage4))
        for n, stage in enumerate(self.stages, start=1):
            if stage.num_branches != n:
                raise ValueError(f"stage{n} must have {n} branch(es), got num_branches={stage.num_branches}")
            for label in ("num_blocks", "num_channels"):
                if len(getattr(stage, label)) != stage.num_branches:
                    raise ValueError(
                        f"stage{n}: num_branches ({stage.num_branches}) != len({label}) "
                        f"({len(getattr(stage, label))})"
                    )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HRNetSpec:
        """Build from ``{"stem_width": 64, "stage1": {...}, ..., "stage4": {...}}`` (any key case)."""
        d = {str(k).lower(): v for k, v in data.items()}
        unknown = set(d) - {"stem_width", "stage1", "stage2", "stage3", "stage4"}
        if unknown:
            raise ValueError(f"unknown HRNet spec keys: {sorted(unknown)}")
        missing = {"stage1", "stage2", "stage3", "stage4"} - set(d)
        if missing:
            raise ValueError(f"HRNet spec is missing {sorted(missing)}")
        stages = {
            k: v if isinstance(v, StageSpec) else StageSpec.from_dict(v)
            for k, v in d.items()
            if k != "stem_width"
        }
        return cls(stem_width=int(d.get("stem_width", 64)), **stages)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (for YAML configs and hyper-parameter logging)."""
        out: dict[str, Any] = {"stem_width": self.stem_width}
        for n, s in enumerate(self.stages, start=1):
            out[f"stage{n}"] = {
                "num_modules": s.num_modules,
                "num_branches": s.num_branches,
                "block": s.block,
                "num_blocks": list(s.num_blocks),
                "num_channels": list(s.num_channels),
                "fuse_method": s.fuse_method,
            }
        return out


def _standard(width: int) -> HRNetSpec:
    """The W18/W32/W40/W48/W64 layout: only the channel width differs."""
    w = width
    return HRNetSpec(
        stage1=StageSpec(1, 1, "BOTTLENECK", (4,), (64,)),
        stage2=StageSpec(1, 2, "BASIC", (4, 4), (w, 2 * w)),
        stage3=StageSpec(4, 3, "BASIC", (4, 4, 4), (w, 2 * w, 4 * w)),
        stage4=StageSpec(3, 4, "BASIC", (4, 4, 4, 4), (w, 2 * w, 4 * w, 8 * w)),
    )


HRNET_SPECS: dict[str, HRNetSpec] = {
    "w18_small_v1": HRNetSpec(
        stage1=StageSpec(1, 1, "BOTTLENECK", (1,), (32,)),
        stage2=StageSpec(1, 2, "BASIC", (2, 2), (16, 32)),
        stage3=StageSpec(1, 3, "BASIC", (2, 2, 2), (16, 32, 64)),
        stage4=StageSpec(1, 4, "BASIC", (2, 2, 2, 2), (16, 32, 64, 128)),
    ),
    "w18_small_v2": HRNetSpec(
        stage1=StageSpec(1, 1, "BOTTLENECK", (2,), (64,)),
        stage2=StageSpec(1, 2, "BASIC", (2, 2), (18, 36)),
        stage3=StageSpec(3, 3, "BASIC", (2, 2, 2), (18, 36, 72)),
        stage4=StageSpec(2, 4, "BASIC", (2, 2, 2, 2), (18, 36, 72, 144)),
    ),
    "w18": _standard(18),
    "w32": _standard(32),
    "w40": _standard(40),
    "w48": _standard(48),
    "w64": _standard(64),
}


def get_spec(spec: str | HRNetSpec | Mapping[str, Any]) -> HRNetSpec:
    """Resolve a variant name, a spec object or a plain dict to an :class:`HRNetSpec`."""
    if isinstance(spec, HRNetSpec):
        return spec
    if isinstance(spec, str):
        key = spec.removeprefix("hrnetv2_").removeprefix("hrnet_")
        if key not in HRNET_SPECS:
            raise ValueError(f"unknown HRNet variant {spec!r}; valid: {sorted(HRNET_SPECS)}")
        return HRNET_SPECS[key]
    if isinstance(spec, Mapping):
        return HRNetSpec.from_dict(spec)
    raise TypeError(f"spec must be a variant name, HRNetSpec or dict, got {type(spec).__name__}")


@dataclass
class CheckpointRemap:
    """A checkpoint's state dict adapted to a model by :meth:`HRNet.remap_checkpoint_keys`.

    Attributes:
        state: the (renamed) tensors.
        notes: what was mapped, for the load report.
        fresh_modules: head modules the remapped checkpoint cannot fill; they keep their initialisation
            (their keys are expected to be missing).
    """

    state: dict[str, Tensor]
    notes: list[str] = field(default_factory=list)
    fresh_modules: tuple[str, ...] = ()


# --------------------------------------------------------------------------------------------------
# Backbone
# --------------------------------------------------------------------------------------------------
class HRNet(nn.Module):
    """HRNet backbone built from one row of :data:`HRNET_SPECS` (or a custom spec).

    ``forward_features`` returns the four branch outputs after stage 4 at strides 4, 8, 16, 32.
    ``out_channels`` lists their channel counts.
    """

    #: Top-level modules of the ImageNet classifier built on this backbone (official
    #: HRNet-Image-Classification and timm): an ImageNet checkpoint's keys under them are no part of this
    #: network, so :func:`hrseg.load_pretrained` drops them and reads the file as a classification checkpoint.
    classification_head_modules: ClassVar[tuple[str, ...]] = (
        "incre_modules",
        "downsamp_modules",
        "final_layer",
        "classifier",
    )
    #: Top-level modules of the segmentation head (none on the bare backbone): they get the task's
    #: ``head_lr_mult`` and are what ``load_pretrained(..., ignore_head=True)`` skips.
    head_modules: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        spec: str | HRNetSpec | Mapping[str, Any] = "w48",
        in_channels: int = 3,
        fuse_mode: FuseMode = "bilinear",
        align_corners: bool = False,
        bn_momentum: float = 0.1,
    ) -> None:
        """Build the network.

        Args:
            spec: variant name (``"w48"``), :class:`HRNetSpec` or dict for a custom width/depth.
            in_channels: input image channels (3 for RGB).
            fuse_mode: upsampling in the fusion: ``"bilinear"`` (official seg code) or ``"nearest"`` (timm).
            align_corners: passed to bilinear upsampling (official seg code: False).
            bn_momentum: BatchNorm momentum, PyTorch convention (0.1 as in HRNet-OCR and timm).
        """
        super().__init__()
        if fuse_mode not in ("bilinear", "nearest"):
            raise ValueError(f"fuse_mode must be 'bilinear' or 'nearest', got {fuse_mode!r}")
        self.spec = get_spec(spec)
        self.fuse_mode: FuseMode = fuse_mode
        self.align_corners = align_corners
        self.in_channels = in_channels
        mom = bn_momentum
        stem = self.spec.stem_width

        self.conv1 = nn.Conv2d(in_channels, stem, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem, momentum=mom)
        self.conv2 = nn.Conv2d(stem, stem, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(stem, momentum=mom)
        self.relu = nn.ReLU(inplace=True)

        s1 = self.spec.stage1
        block1 = BLOCKS[s1.block]
        self.layer1 = _make_blocks(block1, stem, s1.num_channels[0], s1.num_blocks[0], mom)
        channels = [s1.num_channels[0] * block1.expansion]

        self.transition1, self.stage2, channels = self._make_stage(self.spec.stage2, channels, mom)
        self.transition2, self.stage3, channels = self._make_stage(self.spec.stage3, channels, mom)
        self.transition3, self.stage4, channels = self._make_stage(self.spec.stage4, channels, mom)
        self.out_channels: tuple[int, ...] = tuple(channels)
        self._init_weights()

    def _make_stage(
        self, stage: StageSpec, pre: list[int], mom: float
    ) -> tuple[nn.ModuleList, nn.Sequential, list[int]]:
        """Transition from the previous stage's branches, then ``num_modules`` fused modules."""
        block = BLOCKS[stage.block]
        cur = [c * block.expansion for c in stage.num_channels]
        transition = nn.ModuleList()
        for i, c in enumerate(cur):
            if i < len(pre):
                if c != pre[i]:
                    transition.append(nn.Sequential(*_conv_bn(pre[i], c, 3, 1, mom), nn.ReLU(inplace=True)))
                else:
                    transition.append(nn.Identity())  # the official None: the branch goes on as it is
            else:
                # New lower-resolution branch, made from the LAST existing branch by stride-2 convs.
                steps: list[nn.Module] = []
                for k in range(i + 1 - len(pre)):
                    out = c if k == i - len(pre) else pre[-1]
                    steps.append(nn.Sequential(*_conv_bn(pre[-1], out, 3, 2, mom), nn.ReLU(inplace=True)))
                transition.append(nn.Sequential(*steps))
        modules: list[nn.Module] = []
        channels = cur
        for _ in range(stage.num_modules):
            module = HighResolutionModule(
                stage.num_branches,
                block,
                stage.num_blocks,
                channels,
                stage.num_channels,
                stage.fuse_method,
                multi_scale_output=True,  # segmentation keeps every branch, also in the last module
                fuse_mode=self.fuse_mode,
                align_corners=self.align_corners,
                bn_momentum=mom,
            )
            channels = list(module.out_channels)
            modules.append(module)
        return transition, nn.Sequential(*modules), channels

    def _init_weights(self) -> None:
        """He init for convs (trains from scratch), unit-scale BN; pretrained loads overwrite it."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @staticmethod
    def _transition(transition: nn.ModuleList, xs: list[Tensor]) -> list[Tensor]:
        """Apply a transition: keep, re-project, or (for new branches) derive from the last branch."""
        out: list[Tensor] = []
        for i, layer in enumerate(transition):
            if i < len(xs):
                out.append(layer(xs[i]))
            else:
                out.append(layer(xs[-1]))
        return out

    def forward_features(self, x: Tensor) -> list[Tensor]:
        """Return the four branch outputs after stage 4 (strides 4, 8, 16, 32)."""
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        xs = [self.layer1(x)]
        xs = self.stage2(self._transition(self.transition1, xs))
        xs = self.stage3(self._transition(self.transition2, xs))
        return self.stage4(self._transition(self.transition3, xs))

    def forward(self, x: Tensor) -> list[Tensor]:
        """Backbone forward: same as :meth:`forward_features`."""
        return self.forward_features(x)

    @classmethod
    def checkpoint_head_modules(cls) -> tuple[str, ...]:
        """Head modules a checkpoint of any network built on this backbone may hold (every subclass's heads).

        ``ignore_head`` drops all of them, so fine-tuning from another family member's checkpoint (an
        HRNet-OCR file into HRNetV2, say) keeps its backbone and skips its head.
        """
        found: list[str] = []
        todo: list[type[HRNet]] = [HRNet]
        while todo:
            klass = todo.pop(0)
            found += [m for m in klass.head_modules if m not in found]
            todo += klass.__subclasses__()
        return tuple(found)

    @classmethod
    def remap_checkpoint_keys(cls, state: dict[str, Tensor]) -> CheckpointRemap:
        """Adapt another family member's state dict to this class (default: keys are used as they are)."""
        return CheckpointRemap(state)
