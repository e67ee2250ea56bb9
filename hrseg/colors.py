"""The pixel operations of data, plots, inference and prediction writing.

The three operations every part of hrseg draws with: :func:`colorize` (label map -> RGB), :func:`overlay`
(colours blended over the image) and :func:`denormalize` (network input -> RGB). It imports numpy only, so
the inference API and the plots use it without pulling in albumentations, OpenCV or Lightning (the palettes
and the ignore value live in :mod:`hrseg.metadata`); tensors are
accepted wherever arrays are (they are detached to the CPU first).

Conventions, the same everywhere: labels outside the palette and the ignore label are drawn in
``ignore_color`` (black) by :func:`colorize` and show the image unchanged in :func:`overlay`; float pixels are
rounded half up to uint8.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from hrseg.metadata import IGNORE_INDEX, IMAGENET_MEAN, IMAGENET_STD

__all__ = ["colorize", "denormalize", "overlay"]


def _numpy(x: Any) -> np.ndarray:
    """A CPU numpy view of an array or a tensor (duck-typed, so torch is not imported here)."""
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def colorize(
    mask: Any,
    palette: Sequence[Sequence[int]],
    ignore_index: int | None = IGNORE_INDEX,
    ignore_color: Sequence[int] = (0, 0, 0),
) -> np.ndarray:
    """Map a label map ``(H, W)`` to an RGB uint8 image ``(H, W, 3)`` with ``palette``.

    Args:
        mask: integer label map (array or tensor).
        palette: one RGB colour per class.
        ignore_index: label drawn in ``ignore_color`` (None: only out-of-palette labels are).
        ignore_color: colour of ignore and out-of-palette labels.

    Returns:
        The coloured label map.
    """
    labels = _numpy(mask).astype(np.int64)
    n = len(palette)
    table = np.zeros((n + 1, 3), dtype=np.uint8)
    if n:
        table[:n] = np.asarray(palette, dtype=np.uint8).reshape(n, 3)
    table[n] = np.asarray(ignore_color, dtype=np.uint8)
    return table[np.where(_unlabelled(labels, n, ignore_index), n, labels)]


def _unlabelled(labels: np.ndarray, num_colors: int, ignore_index: int | None) -> np.ndarray:
    """Pixels without a class colour: the ignore label and labels outside the palette."""
    bad = (labels < 0) | (labels >= num_colors)
    if ignore_index is not None:
        bad |= labels == ignore_index
    return bad


def _to_uint8(x: np.ndarray) -> np.ndarray:
    """Round half up and clip to uint8 (the one rounding rule of hrseg's pictures)."""
    return np.floor(x + 0.5).clip(0, 255).astype(np.uint8)


def overlay(
    image: Any,
    mask: Any,
    palette: Sequence[Sequence[int]],
    alpha: float = 0.5,
    ignore_index: int | None = IGNORE_INDEX,
) -> np.ndarray:
    """Blend the coloured label map over an RGB uint8 image; unlabelled pixels show the image unchanged.

    Args:
        image: RGB uint8 ``(H, W, 3)``.
        mask: label map ``(H, W)`` of the same size.
        palette: one RGB colour per class.
        alpha: weight of the colours.
        ignore_index: label that keeps the image (None: only out-of-palette labels do).

    Returns:
        RGB uint8 ``(H, W, 3)``.

    Raises:
        ValueError: image and mask sizes differ.
    """
    labels = _numpy(mask).astype(np.int64)
    base = _numpy(image).astype(np.float32)
    if base.shape[:2] != labels.shape:
        raise ValueError(f"image {base.shape[:2]} and mask {labels.shape} differ in size")
    color = colorize(labels, palette, ignore_index).astype(np.float32)
    blend = (1.0 - alpha) * base + alpha * color
    keep = _unlabelled(labels, len(palette), ignore_index)
    blend[keep] = base[keep]
    return _to_uint8(blend)


def denormalize(
    image: Any,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> np.ndarray:
    """Undo the input normalization of a ``(C, H, W)`` or ``(H, W, C)`` image for display.

    Args:
        image: normalized float image with 1 or 3 channels (array or tensor).
        mean: normalization mean, in [0, 1] units.
        std: normalization standard deviation.

    Returns:
        RGB uint8 ``(H, W, 3)`` (grey images are repeated to three channels).
    """
    arr = _numpy(image).astype(np.float32)
    if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
        arr = arr.transpose(1, 2, 0)
    if arr.ndim == 2:
        arr = arr[..., None]
    channels = arr.shape[-1]
    m = np.asarray(mean, dtype=np.float32)[:channels]
    s = np.asarray(std, dtype=np.float32)[:channels]
    rgb = np.clip(arr * s + m, 0.0, 1.0) * 255.0
    if channels == 1:
        rgb = np.repeat(rgb, 3, axis=-1)
    return _to_uint8(rgb)
