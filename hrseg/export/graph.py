"""The export graph: the network wrapped for export, its strict dynamic dims and the inputs that check it.

Every format traces the same :class:`ExportWrapper` with strict ``torch.export.Dim`` ranges for batch, height
and width (:func:`export_dims`, :func:`trace`), so any size arithmetic that would freeze a dimension is an
export-time error instead of a wrong file. Parity checks run on an image-like input (:func:`check_input`): a
real image, or a generated street scene of :mod:`hrseg.data.scenes`; random noise exercises networks unlike
real data (BN statistics, saturated ReLUs).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hrseg.data.scenes import generate_scene
from hrseg.images import ImageInput, to_image_tensor
from hrseg.inference.optimize import copy_capabilities
from hrseg.metadata import ModelMeta

__all__ = ["ExportWrapper", "check_input", "default_check_size", "export_dims", "trace"]

CHECK_SCENE_SEED = 1234
"""Seed of the generated scene the parity checks run on (deterministic, so results are reproducible)."""


class ExportWrapper(nn.Module):
    """The network as an export graph with one input ``image`` and one output ``logits``.

    The network's own forward exports with symbolic sizes (HRNetV2 resizes its branches to the first branch's
    symbolic size); the wrapper names the input for ``dynamic_shapes`` and can put the final resize of the
    logits to the input size into the graph.

    Args:
        net: the (BN-folded) network.
        upsample: also resize the logits to the input size inside the graph.
        align_corners: for that resize (defaults to the network's attribute).
    """

    def __init__(self, net: nn.Module, upsample: bool = False, align_corners: bool | None = None) -> None:
        """Wrap ``net``; see the class docstring."""
        super().__init__()
        self.net = net
        self.upsample = upsample
        self.align_corners = (
            bool(getattr(net, "align_corners", False)) if align_corners is None else align_corners
        )
        copy_capabilities(net, self)

    def forward(self, image: Tensor) -> Tensor:
        """Logits at the network's output stride, or at the input size with ``upsample``."""
        out = self.net(image)
        if self.upsample:
            # F.interpolate, not upsample_logits: its int() sizes and shape test would become constants
            out = F.interpolate(out, size=image.shape[-2:], mode="bilinear", align_corners=self.align_corners)
        return out


def check_input(meta: ModelMeta, shape: tuple[int, int, int, int], image: ImageInput | None = None) -> Tensor:
    """A normalized, image-like ``shape`` input: ``image`` resized, or a generated street scene.

    Args:
        meta: the model's metadata (its normalisation, :meth:`ModelMeta.normalize`).
        shape: ``(N, C, H, W)``; the one image is repeated over the batch.
        image: an image file (or anything :func:`~hrseg.images.to_image_tensor` takes); default: the scene
            of seed :data:`CHECK_SCENE_SEED`.
    """
    b, c, h, w = shape
    if image is None:
        image = generate_scene(np.random.default_rng(CHECK_SCENE_SEED), (max(h, 16), max(w, 16)))[0]
    x, _ = to_image_tensor(image, c)
    if tuple(x.shape[-2:]) != (h, w):
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
    return meta.normalize(x.expand(b, -1, -1, -1)).contiguous()


def export_dims(model: nn.Module, height: int, width: int) -> tuple[dict[int, Any], int]:
    """Strict dynamic dims for (batch, height, width) and the spatial multiple the model needs.

    Read from the model's capabilities (``size_divisor``, ``min_export_size``): HRNetV2 takes any size from
    33 up, encoder-decoder baselines multiples of their output stride.

    Raises:
        ValueError: ``height`` / ``width`` below the model's smallest size or not a multiple it needs.
    """
    Dim = torch.export.Dim
    multiple = int(getattr(model, "size_divisor", 1))
    smallest = int(getattr(model, "min_export_size", multiple))
    for name, value in (("height", height), ("width", width)):
        if value < smallest:
            raise ValueError(f"export {name} must be >= {smallest} for {type(model).__name__}, got {value}")
        if value % multiple:
            raise ValueError(f"export {name} must be a multiple of {multiple} for {type(model).__name__}")
    if multiple > 1:
        h = multiple * Dim("height_blocks", min=max(1, smallest // multiple))
        w = multiple * Dim("width_blocks", min=max(1, smallest // multiple))
    else:
        h = Dim("height", min=smallest)
        w = Dim("width", min=smallest)
    return {0: Dim("batch", min=1, max=4096), 2: h, 3: w}, multiple


def trace(wrapper: nn.Module, example: Tensor, dims: dict[int, Any]) -> torch.export.ExportedProgram:
    """Trace with strict dims: any specialisation of batch / height / width raises here, not at deployment."""
    with torch.no_grad():
        return torch.export.export(wrapper, (example,), dynamic_shapes={"image": dims}, strict=False)


def default_check_size(height: int, width: int, min_size: int = 33) -> tuple[int, int]:
    """A check size unlike the example: odd, and neither a multiple of 4 nor equal to the example."""
    return max(min_size + 4, height // 2 + 13), width + 29
