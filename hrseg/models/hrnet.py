"""The HRNet backbone: the variants table and the network assembled from it, with its checkpoint knowledge.

The whole family is described by :data:`HRNET_SPECS` (plain data, one row per variant) and built by the
single class :class:`HRNet` out of the parts in :mod:`hrseg.models.blocks`. Module attribute names follow the
official HRNet segmentation code exactly (``conv1 ... stage4``) so published and timm checkpoints load without
any key renaming. What a network knows about checkpoints (its head modules,
:meth:`HRNet.remap_checkpoint_keys`) lives on the class, so the weight loader names no model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, cast

from torch import Tensor, nn

from hrseg.models.blocks import (
    BLOCKS,
    BlockName,
    FuseMode,
    HighResolutionModule,
    conv_bn,
    make_blocks,
)
from hrseg.models.registry import get_head, list_heads

__all__ = [
    "HRNET_SPECS",
    "CheckpointRemap",
    "HRNet",
    "HRNetSpec",
    "StageSpec",
    "get_spec",
]


# --------------------------------------------------------------------------------------------------
# Variants table
# --------------------------------------------------------------------------------------------------
#: bounds of a stage spec: the official variants use at most 4 modules / blocks and 384 channels
MAX_SPEC_COUNT = 64
MAX_SPEC_CHANNELS = 8192


@dataclass(frozen=True)
class StageSpec:
    """One stage: ``num_modules`` HighResolutionModules of ``num_branches`` parallel branches."""

    num_modules: int
    num_branches: int
    block: BlockName
    num_blocks: tuple[int, ...]
    num_channels: tuple[int, ...]
    fuse_method: str = "SUM"

    def __post_init__(self) -> None:
        """Refuse counts no HRNet has, before any module is built (a spec from a file builds in a loop)."""
        counts = (self.num_modules, self.num_branches, *self.num_blocks)
        if any(not 0 <= c <= MAX_SPEC_COUNT for c in counts):
            raise ValueError(
                f"stage spec counts (num_modules {self.num_modules}, num_branches {self.num_branches}, "
                f"num_blocks {list(self.num_blocks)}) must be in 0..{MAX_SPEC_COUNT}"
            )
        if any(not 1 <= c <= MAX_SPEC_CHANNELS for c in self.num_channels):
            raise ValueError(
                f"stage spec num_channels {list(self.num_channels)} must be in 1..{MAX_SPEC_CHANNELS}"
            )

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
    #: Top-level modules of the segmentation head (none on the bare backbone; the segmentation network
    #: sets its head's): they get the task's ``head_lr_mult`` and are what
    #: ``load_pretrained(..., ignore_head=True)`` skips.
    head_modules: tuple[str, ...] = ()

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
        self.layer1 = make_blocks(block1, stem, s1.num_channels[0], s1.num_blocks[0], mom)
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
                    transition.append(nn.Sequential(*conv_bn(pre[i], c, 3, 1, mom), nn.ReLU(inplace=True)))
                else:
                    transition.append(nn.Identity())  # the official None: the branch goes on as it is
            else:
                # New lower-resolution branch, made from the LAST existing branch by stride-2 convs.
                steps: list[nn.Module] = []
                for k in range(i + 1 - len(pre)):
                    out = c if k == i - len(pre) else pre[-1]
                    steps.append(nn.Sequential(*conv_bn(pre[-1], out, 3, 2, mom), nn.ReLU(inplace=True)))
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
        """Head modules a checkpoint of any network built on this backbone may hold (every registered head's).

        ``ignore_head`` drops all of them, so fine-tuning from another head's checkpoint (an HRNet-OCR file
        into HRNetV2, say) keeps its backbone and skips its head.
        """
        found: list[str] = []
        for name in list_heads():
            found += [m for m in getattr(get_head(name), "head_modules", ()) if m not in found]
        return tuple(found)

    def remap_checkpoint_keys(self, state: dict[str, Tensor]) -> CheckpointRemap:
        """Adapt another network's state dict to this one (the backbone: keys are used as they are)."""
        return CheckpointRemap(state)
