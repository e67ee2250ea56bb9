"""The evaluation protocol as one value: how a model turns an image into logits at test time.

:class:`EvalProtocol` is what validation and test run (``SegmentationTask(eval_protocol=...)``), what a
checkpoint, an export and a hub folder carry (``ModelMeta.eval_protocol``), and what ``Segmenter`` and
``hrseg predict`` use unless told otherwise, so a model predicts the way it was validated. The function that
runs it is :func:`hrseg.inference.infer` (docs/reference/protocol.md has the official recipes).

Two pipelines share the value: hrseg's own (``mode`` ``whole`` / ``slide``: scale factors, averaged logits)
and the official HRNet code's test-time pipeline (``mode="official"``: long side resized to ``base_size *
scale``, exp-scores summed, its window rules in the ``default`` or ``cityscapes`` ``variant``);
docs/reference/protocol.md compares them.

This module is plain Python (no torch): the checkpoint readers describe files with it, and LightningCLI
turns its fields into ``--model.eval_protocol.mode`` / ``.window`` / ``.stride`` / ``.scales`` / ``.flip`` /
``.base_size`` / ``.variant``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, ClassVar, Literal

from hrseg.plain_data import PlainDataGroup

__all__ = ["MAX_SCALE", "MAX_SIDE", "MODES", "VARIANTS", "EvalProtocol", "Mode", "Variant", "as_pair"]

MAX_SIDE = 65535
"""The largest image side a window or stride may have (JPEG's limit; beyond it, a size is a typo)."""
MAX_SCALE = 8.0
"""The largest test scale: an image scaled further is a typo, and its tensors would not fit any memory."""

#: ``whole``: one forward per (scaled) image. ``slide``: sliding windows over every (scaled) image larger
#: than the window, a whole forward for one that fits (the official rule). ``tile``: sliding windows over the
#: image at its own size, the scales and flip run within each window (local: what streamed prediction runs).
#: ``official``: the official HRNet code's ``multi_scale_inference``, reproduced step by step (``window`` is
#: its crop size).
Mode = Literal["whole", "slide", "tile", "official"]
MODES: tuple[Mode, ...] = ("whole", "slide", "tile", "official")

#: The official pipeline's two window rules: ``default`` (``base_dataset.py``: pad small images to the crop,
#: windows at a stride of 2/3 of the crop) and ``cityscapes`` (``cityscapes.py``: whole image at scales <= 1,
#: windows at a stride of one crop above).
Variant = Literal["default", "cityscapes"]
VARIANTS: tuple[Variant, ...] = ("default", "cityscapes")


def as_pair(value: int | Sequence[int] | None, what: str) -> tuple[int, int] | None:
    """``512 -> (512, 512)``; ``(h, w)`` unchanged; validates positivity so bad settings fail early."""
    if value is None:
        return None
    if isinstance(value, str):
        raise ValueError(f"{what} must be a positive int or (height, width), got {value!r}")
    pair = (int(value), int(value)) if isinstance(value, int | float) else tuple(int(v) for v in value)
    if len(pair) != 2 or min(pair) < 1:
        raise ValueError(f"{what} must be a positive int or (height, width), got {value!r}")
    if max(pair) > MAX_SIDE:
        raise ValueError(f"{what} {pair} is larger than any image (at most {MAX_SIDE} pixels a side)")
    return pair[0], pair[1]


@dataclass(frozen=True)
class EvalProtocol(PlainDataGroup):
    """Whole image or sliding window, at one or several scales, optionally averaged with the mirror image.

    Args:
        mode: ``"whole"`` (one forward per scaled image), ``"slide"`` (sliding windows of ``window`` over
            each scaled image larger than it; one that fits runs whole, as in the official code) or
            ``"tile"`` (sliding windows over the image at its own size, each window run whole at every
            scale and flip, then blended as in ``"slide"``: every window depends on its own pixels alone, so
            an image larger than memory streams with the same result; docs/large-images.md) or
            ``"official"`` (the official code's test-time pipeline, with ``window`` as its crop size,
            ``base_size`` and ``variant``).
        window: ``(height, width)`` of the sliding window (required by ``"slide"`` and ``"tile"``), the crop
            size of ``"official"`` (required there).
        stride: ``(height, width)`` step between windows; None: 2/3 of the window (the official default
            outside Cityscapes, whose recipes set it explicitly). Not with ``"official"`` (its variant fixes
            it).
        scales: image scale factors; every scale's output is resized to the input and averaged (official
            multi-scale test: 0.5 .. 1.75 on Cityscapes, 0.5 .. 2.0 on PASCAL VOC). With ``"official"``
            the long side is resized to ``base_size * scale``.
        flip: also run the horizontally mirrored image and average it back in (the channels of a label set's
            ``flip_pairs`` swapped in the mirrored output).
        base_size: ``"official"`` only: the long side at scale 1.0 (the official ``TEST.BASE_SIZE``:
            Cityscapes 2048, ADE20K / COCO-Stuff / PASCAL-Context 520, LIP 473); None: each image's own long
            side, so scale 1.0 keeps its size.
        variant: ``"official"`` only: ``"default"`` (``base_dataset.py``) or ``"cityscapes"``
            (``cityscapes.py``'s override).

    Example:
        >>> EvalProtocol("slide", window=(1024, 1024), scales=(0.75, 1.0, 1.25), flip=True).passes
        18
        >>> EvalProtocol("official", window=(1024, 2048), base_size=2048, variant="cityscapes").describe()
        'official cityscapes, crop 1024x2048, base size 2048'
    """

    group_name: ClassVar[str] = "eval protocol"

    mode: Mode = "whole"
    window: tuple[int, int] | None = None
    stride: tuple[int, int] | None = None
    scales: tuple[float, ...] = (1.0,)
    flip: bool = False
    base_size: int | None = None
    variant: Variant = "default"

    def __post_init__(self) -> None:
        """Normalise lists (from YAML / JSON) to tuples and reject inconsistent settings early."""
        if self.mode not in MODES:
            raise ValueError(f"eval protocol mode must be one of {', '.join(MODES)}; got {self.mode!r}")
        if self.variant not in VARIANTS:
            raise ValueError(
                f"eval protocol variant must be one of {', '.join(VARIANTS)}; got {self.variant!r}"
            )
        window = as_pair(self.window, "eval protocol window")
        stride = as_pair(self.stride, "eval protocol stride")
        if isinstance(self.scales, str | int | float):
            raise ValueError(f"eval protocol scales must be a list of factors, got {self.scales!r}")
        scales = tuple(float(s) for s in self.scales)
        if not scales or any(not 0 < s <= MAX_SCALE for s in scales):
            raise ValueError(
                f"eval protocol scales must be factors in (0, {MAX_SCALE:g}], got {list(self.scales)!r}"
            )
        if self.mode != "whole" and window is None:
            what = "a window (the crop size)" if self.mode == "official" else "a window"
            raise ValueError(f"eval protocol mode {self.mode!r} needs {what} (height, width)")
        base_size = self.base_size
        if base_size is not None and (
            isinstance(base_size, bool) or not isinstance(base_size, int) or not 1 <= base_size <= MAX_SIDE
        ):
            raise ValueError(f"eval protocol base_size must be an int in [1, {MAX_SIDE}], got {base_size!r}")
        if self.mode == "official":
            if stride is not None:
                raise ValueError(
                    "eval protocol mode 'official' takes no stride: its variant fixes it (default: 2/3 of "
                    "the window, cityscapes: one window)"
                )
        elif base_size is not None or self.variant != "default":
            raise ValueError(
                f"eval protocol base_size and variant belong to mode 'official', not {self.mode!r}"
            )
        object.__setattr__(self, "window", window)
        object.__setattr__(self, "stride", stride)
        object.__setattr__(self, "scales", scales)
        object.__setattr__(self, "flip", bool(self.flip))

    @property
    def single_pass(self) -> bool:
        """One whole-image forward per image: nothing to average, so the plain forward is the result."""
        return self.mode == "whole" and not self.flip and self.scales == (1.0,)

    @property
    def passes(self) -> int:
        """Forward passes per window position: scales x (2 with flip)."""
        return len(self.scales) * (2 if self.flip else 1)

    def effective_stride(self) -> tuple[int, int] | None:
        """The stride in use: the configured one, else 2/3 of the window (None without a window).

        ``"official"``: the official ``int(crop * 2 / 3)`` (``default``) or the crop itself (``cityscapes``).
        """
        if self.stride is not None or self.window is None:
            return self.stride
        if self.mode == "official" and self.variant == "cityscapes":
            return self.window
        return max(1, self.window[0] * 2 // 3), max(1, self.window[1] * 2 // 3)

    def describe(self) -> str:
        """One line for logs and command output: ``slide 512x1024 (stride 341x682), scales 0.5,1, flip``."""
        text: str = self.mode
        if self.mode == "official" and self.window is not None:
            text += f" {self.variant}, crop {self.window[0]}x{self.window[1]}"
            text += (
                f", base size {self.base_size}" if self.base_size is not None else ", base size: long side"
            )
        elif self.mode != "whole" and self.window is not None:
            stride = self.effective_stride()
            assert stride is not None
            text += f" {self.window[0]}x{self.window[1]} (stride {stride[0]}x{stride[1]})"
        if self.scales != (1.0,):
            text += ", scales " + ",".join(f"{s:g}" for s in self.scales)
        return text + (", flip" if self.flip else "")

    def replace(self, **changes: Any) -> EvalProtocol:
        """A copy with some fields changed (None values are ignored: "not given").

        Leaving ``mode="official"`` also resets ``base_size`` and ``variant``, entering it resets ``stride``
        (unless they are given), so a ``{"mode": "whole"}`` override works on a model validated with the
        official pipeline and ``{"mode": "official", ...}`` on one validated with a strided window.
        """
        given = {k: v for k, v in changes.items() if v is not None}
        if given.get("mode", self.mode) != "official":
            given.setdefault("base_size", None)
            given.setdefault("variant", "default")
        elif self.mode != "official":
            given.setdefault("stride", None)
        return replace(self, **given)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON / YAML data (lists, not tuples), as stored in checkpoints and model folders.

        ``base_size`` and ``variant`` are written only with ``mode="official"``, so the files of hrseg's own
        protocol read the same as before they existed.
        """
        data = asdict(self)
        for key in ("window", "stride", "scales"):
            if data[key] is not None:
                data[key] = list(data[key])
        if self.mode != "official":
            del data["base_size"], data["variant"]
        return data
