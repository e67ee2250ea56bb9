"""The HRNet segmentation network: the HRNet backbone with a pluggable head, and the ``hrnetv2_*`` names.

One network class, :class:`HRNetSegmentationNet`, carries any registered head (:mod:`hrseg.models.heads`).
The head's top-level modules are registered on the network itself, so the state-dict keys stay the flat
official ones (``last_layer.*`` for HRNetV2, ``aux_head.*``, ``conv3x3_ocr.*`` ... for HRNet-OCR) and released
checkpoints load unchanged.

Model names: ``hrnetv2_<variant>`` is a variant of :data:`~hrseg.models.hrnet.HRNET_SPECS` with the default
head ``v2``; ``hrnetv2_<variant>_<head>`` the same with another registered head (``hrnetv2_w48_ocr``), and
``hrnetv2`` / ``hrnetv2_<head>`` take a custom ``spec=``. A new head is listed and built under these names
as soon as it is registered.

Free of any Lightning import so it can be used (and exported) as a plain ``nn.Module``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from hrseg.models.blocks import FuseMode
from hrseg.models.heads import SegmentationHead
from hrseg.models.hrnet import HRNET_SPECS, CheckpointRemap, HRNet, HRNetSpec
from hrseg.models.registry import get_head, list_heads, register_model_family

__all__ = ["DEFAULT_HEAD", "NETWORK_OPTIONS", "HRNetSegmentationNet", "hrnetv2_model_names"]

#: The head of the plain ``hrnetv2_<variant>`` names.
DEFAULT_HEAD = "v2"
#: ``build_model`` options of the network itself (every head adds its own, see ``option_names``).
NETWORK_OPTIONS = ("in_channels", "fuse_mode", "align_corners", "bn_momentum", "spec")
_PREFIX = "hrnetv2"


def _head_class(head: str | type[SegmentationHead]) -> type[SegmentationHead]:
    cls = get_head(head) if isinstance(head, str) else head
    if not (isinstance(cls, type) and issubclass(cls, SegmentationHead)):
        raise TypeError(f"head {head!r} is not a SegmentationHead")
    return cls


class HRNetSegmentationNet(HRNet):
    """An HRNet backbone with a segmentation head from the head registry.

    The head (:class:`~hrseg.models.heads.SegmentationHead`) is built from the backbone's branch channels and
    kept as :attr:`head`, outside the module tree; its top-level modules (``head_modules``) are registered
    on the network, so they are the network's own state-dict prefixes.

    Capabilities (see :data:`hrseg.models.factory.MODEL_CAPABILITIES`): logits at the head's
    ``output_stride`` (4 for the heads shipped), any input size (``size_divisor`` 1); ``forward`` resizes to
    symbolic sizes, so it exports with dynamic height and width as it is. ``num_outputs`` and
    ``head_modules`` come from the head.

    Attributes:
        head: the head; ``head.head_name`` is its registered name.
    """

    size_divisor = 1
    #: At <= 32 pixels the 1/32 branch is 1x1 and torch.export would specialise a broadcast, so a dynamic
    #: export's size range starts above that.
    min_export_size = 33

    def __init__(
        self,
        spec: str | HRNetSpec | Mapping[str, Any],
        num_classes: int,
        head: str | type[SegmentationHead] = DEFAULT_HEAD,
        in_channels: int = 3,
        fuse_mode: FuseMode = "bilinear",
        align_corners: bool = False,
        bn_momentum: float = 0.1,
        **head_options: Any,
    ) -> None:
        """Build the backbone, then the head on its branches.

        Args:
            spec: backbone variant (``"w48"``, ...), :class:`HRNetSpec` or dict.
            num_classes: output classes (nothing here assumes a number).
            head: a registered head name (``"v2"``, ``"ocr"``) or a head class.
            in_channels: input image channels.
            fuse_mode: backbone fusion upsampling (see :class:`HRNet`).
            align_corners: of every bilinear resize, backbone and head.
            bn_momentum: BatchNorm momentum of backbone and head.
            **head_options: the head's own options (its ``option_names()``).

        Raises:
            ValueError: ``num_classes < 1``, an unknown head or head option.
        """
        head_cls = _head_class(head)
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        unknown = sorted(set(head_options) - set(head_cls.option_names()))
        if unknown:
            raise ValueError(
                f"unknown option(s) {unknown} for head {head_cls.head_name or head_cls.__name__!r}; "
                f"its options: {list(head_cls.option_names())}"
            )
        super().__init__(spec, in_channels, fuse_mode, align_corners, bn_momentum)
        self.num_classes = num_classes
        #: Width of the four branches concatenated (720 for W48): the input of the concat-upsample heads.
        self.head_channels = sum(self.out_channels)
        built = head_cls(
            self.out_channels,
            num_classes,
            align_corners=align_corners,
            bn_momentum=bn_momentum,
            **head_options,
        )
        children = dict(built.named_children())
        if set(children) != set(head_cls.head_modules) or built._parameters or built._buffers:
            raise TypeError(
                f"{head_cls.__name__} must hold its parameters in the modules its head_modules name "
                f"{head_cls.head_modules}; it has {tuple(children)}"
            )
        for name, module in children.items():  # the head's construction order: the official key order
            if hasattr(self, name):
                raise TypeError(f"{head_cls.__name__}: module {name!r} clashes with the backbone's")
            self.add_module(name, module)
        # Outside the module tree (object.__setattr__, not nn.Module's): its modules are registered above
        # under their own names, which keeps the keys flat; registered as "head" they would be "head.<name>".
        object.__setattr__(self, "head", built)
        self.head: SegmentationHead
        self.head_modules = head_cls.head_modules
        self.num_outputs = head_cls.num_outputs
        self.output_stride = head_cls.output_stride

    def train(self, mode: bool = True) -> HRNetSegmentationNet:
        """Set the mode of the network and of its head object (which is outside the module tree)."""
        super().train(mode)
        self.head.train(mode)
        return self

    def remap_checkpoint_keys(self, state: dict[str, Tensor]) -> CheckpointRemap:
        """The head's mapping of another head's checkpoint (HRNet-OCR: an HRNetV2 ``last_layer``)."""
        return self.head.remap_checkpoint_keys(state)

    def forward_outputs(self, x: Tensor) -> list[Tensor]:
        """Every output of the head whatever the mode: ``[aux..., main]`` (one entry for a plain head)."""
        out = self.head(self.forward_features(x))
        return list(out) if isinstance(out, list | tuple) else [out]

    # HRNet.forward returns the backbone's branch list; the segmentation network returns the logits.
    def forward(self, x: Tensor) -> Tensor | list[Tensor]:  # type: ignore[override]
        """Logits ``(B, num_classes, H/4, W/4)``; a multi-output head's ``[aux..., main]`` in training."""
        outs = self.forward_outputs(x)
        return outs if self.training and len(outs) > 1 else outs[-1]


# --------------------------------------------------------------------------------------------------
# The hrnetv2 model family: variants x heads
# --------------------------------------------------------------------------------------------------
def _heads_in_order() -> list[str]:
    """The default head first, then the others by name (stable, whatever order their files import in)."""
    return [DEFAULT_HEAD, *sorted(h for h in list_heads() if h != DEFAULT_HEAD)]


def _name(variant: str | None, head: str) -> str:
    return "_".join([_PREFIX, *([variant] if variant else []), *([] if head == DEFAULT_HEAD else [head])])


def _table() -> dict[str, tuple[str | None, str]]:
    """Model name -> (variant, head); variant None: the name needs ``spec=``."""
    table: dict[str, tuple[str | None, str]] = {}
    for head in _heads_in_order():
        for variant in [*HRNET_SPECS, None]:
            name = _name(variant, head)
            if name in table:  # e.g. a head named "small_v1" on "w18" would shadow w18_small_v1
                raise ValueError(f"model name {name!r} is ambiguous: rename head {head!r}")
            table[name] = (variant, head)
    return table


def hrnetv2_model_names() -> list[str]:
    """``hrnetv2_<variant>`` for every variant, then ``hrnetv2_<variant>_<head>`` for every other head."""
    return [name for name, (variant, _) in _table().items() if variant is not None]


def _custom_names() -> list[str]:
    return [name for name, (variant, _) in _table().items() if variant is None]


@register_model_family(
    _PREFIX,
    names=hrnetv2_model_names,
    hidden_names=_custom_names,
    usage="hrnetv2 / hrnetv2_<head> (with spec=...)",
)
def build_hrnetv2(name: str, num_classes: int, **options: Any) -> nn.Module:
    """Build ``hrnetv2_<variant>[_<head>]``, or ``hrnetv2[_<head>]`` with ``spec=`` (overrides a variant)."""
    variant, head = _table()[name]
    head_cls = _head_class(head)
    valid = {*NETWORK_OPTIONS, *head_cls.option_names()}
    unknown = sorted(set(options) - valid)
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for {name!r}; valid: {sorted(valid)}")
    opts = dict(options)
    spec: str | HRNetSpec | Mapping[str, Any] | None = opts.pop("spec", None) or variant
    if spec is None:
        raise ValueError(f"{name!r} needs spec=... (a dict or HRNetSpec), or a variant: {list(HRNET_SPECS)}")
    return HRNetSegmentationNet(spec, num_classes, head, **opts)
