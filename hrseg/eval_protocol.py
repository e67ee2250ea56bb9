"""The evaluation protocol as one value: how a model turns an image into logits at test time.

:class:`EvalProtocol` is what validation and test run (``SegmentationTask(eval_protocol=...)``), what a
checkpoint, an export and a hub folder carry (``ModelMeta.eval_protocol``), and what ``Segmenter`` and
``hrseg predict`` use unless told otherwise, so a model predicts the way it was validated. The function that
runs it is :func:`hrseg.inference.infer` (docs/reference/protocol.md has the official recipes).

This module is plain Python (no torch): the checkpoint readers describe files with it, and LightningCLI
turns its fields into ``--model.eval_protocol.mode`` / ``.window`` / ``.stride`` / ``.scales`` / ``.flip``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, ClassVar, Literal

from hrseg.plain_data import PlainDataGroup

__all__ = ["EvalProtocol", "Mode", "as_pair"]

#: ``whole``: one forward per (scaled) image. ``slide``: sliding windows over every (scaled) image larger
#: than the window, a whole forward for one that fits (the official rule). ``tile``: sliding windows over the
#: image at its own size, the scales and flip run within each window (local: what streamed prediction runs).
Mode = Literal["whole", "slide", "tile"]


def as_pair(value: int | Sequence[int] | None, what: str) -> tuple[int, int] | None:
    """``512 -> (512, 512)``; ``(h, w)`` unchanged; validates positivity so bad settings fail early."""
    if value is None:
        return None
    if isinstance(value, str):
        raise ValueError(f"{what} must be a positive int or (height, width), got {value!r}")
    pair = (int(value), int(value)) if isinstance(value, int | float) else tuple(int(v) for v in value)
    if len(pair) != 2 or min(pair) < 1:
        raise ValueError(f"{what} must be a positive int or (height, width), got {value!r}")
    return pair[0], pair[1]


@dataclass(frozen=True)
class EvalProtocol(PlainDataGroup):
    """Whole image or sliding window, at one or several scales, optionally averaged with the mirror image.

    Args:
        mode: ``"whole"`` (one forward per scaled image), ``"slide"`` (sliding windows of ``window`` over
            each scaled image larger than it; one that fits runs whole, as in the official code) or
            ``"tile"`` (sliding windows over the image at its own size, each window run whole at every
            scale and flip, then blended as in ``"slide"``: every window depends on its own pixels alone, so
            an image larger than memory streams with the same result; docs/large-images.md).
        window: ``(height, width)`` of the sliding window (required by ``"slide"``).
        stride: ``(height, width)`` step between windows; None: 2/3 of the window (the official default
            outside Cityscapes, whose recipes set it explicitly).
        scales: image scale factors; every scale's output is resized to the input and averaged (official
            multi-scale test: 0.5 .. 1.75 on Cityscapes, 0.5 .. 2.0 on PASCAL VOC).
        flip: also run the horizontally mirrored image and average it back in.

    Example:
        >>> EvalProtocol("slide", window=(1024, 1024), scales=(0.75, 1.0, 1.25), flip=True).passes
        18
    """

    group_name: ClassVar[str] = "eval protocol"

    mode: Mode = "whole"
    window: tuple[int, int] | None = None
    stride: tuple[int, int] | None = None
    scales: tuple[float, ...] = (1.0,)
    flip: bool = False

    def __post_init__(self) -> None:
        """Normalise lists (from YAML / JSON) to tuples and reject inconsistent settings early."""
        if self.mode not in ("whole", "slide", "tile"):
            raise ValueError(f"eval protocol mode must be 'whole', 'slide' or 'tile', got {self.mode!r}")
        window = as_pair(self.window, "eval protocol window")
        stride = as_pair(self.stride, "eval protocol stride")
        if isinstance(self.scales, str | int | float):
            raise ValueError(f"eval protocol scales must be a list of factors, got {self.scales!r}")
        scales = tuple(float(s) for s in self.scales)
        if not scales or any(s <= 0 for s in scales):
            raise ValueError(f"eval protocol scales must be positive factors, got {list(self.scales)!r}")
        if self.mode != "whole" and window is None:
            raise ValueError(f"eval protocol mode {self.mode!r} needs a window (height, width)")
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
        """The stride in use: the configured one, else 2/3 of the window (None without a window)."""
        if self.stride is not None or self.window is None:
            return self.stride
        return max(1, self.window[0] * 2 // 3), max(1, self.window[1] * 2 // 3)

    def describe(self) -> str:
        """One line for logs and command output: ``slide 512x1024 (stride 341x682), scales 0.5,1, flip``."""
        text: str = self.mode
        if self.mode != "whole" and self.window is not None:
            stride = self.effective_stride()
            assert stride is not None
            text += f" {self.window[0]}x{self.window[1]} (stride {stride[0]}x{stride[1]})"
        if self.scales != (1.0,):
            text += ", scales " + ",".join(f"{s:g}" for s in self.scales)
        return text + (", flip" if self.flip else "")

    def replace(self, **changes: Any) -> EvalProtocol:
        """A copy with some fields changed (None values are ignored: "not given")."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON / YAML data (lists, not tuples), as stored in checkpoints and model folders."""
        data = asdict(self)
        for key in ("window", "stride", "scales"):
            if data[key] is not None:
                data[key] = list(data[key])
        return data
