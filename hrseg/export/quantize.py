"""int8 post-training static quantization of an fp32 ONNX file (ONNX Runtime, QDQ format).

Calibration sets each activation's int8 range from the images it is given, so they must come from the
model's own domain: generated street scenes (:func:`generated_calibration_images`, the default here) fit
only a model trained on them, and calibrating on them warns. ``hrseg export --precision int8`` picks the
images itself (``--calib-data``, else the dataset recorded with the model) and refuses to guess.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from hrseg.checkpoint import CONFIG_METADATA_KEY
from hrseg.data.scenes import generate_scene
from hrseg.export.to_onnx import set_onnx_metadata
from hrseg.images import to_image_tensor
from hrseg.metadata import ModelMeta

__all__ = [
    "CALIBRATION_SEED",
    "GeneratedCalibrationWarning",
    "calibration_batches",
    "generated_calibration_images",
    "quantize_int8",
]

CALIBRATION_SEED = 0
"""Seed of the generated street scenes calibrated on when no images are given."""


class GeneratedCalibrationWarning(UserWarning):
    """int8 calibrated on generated street scenes: right only for a model trained on them."""


def generated_calibration_images(count: int = 8) -> list[np.ndarray]:
    """``count`` generated street scenes (RGB uint8, 128x256): the calibration set of the demo models."""
    rng = np.random.default_rng(CALIBRATION_SEED)
    return [generate_scene(rng, (128, 256))[0] for _ in range(count)]


def calibration_batches(images: Iterable[Any] | None, meta: ModelMeta) -> list[np.ndarray]:
    """Normalized ``(1, C, H, W)`` float32 arrays of calibration images.

    Args:
        images: paths, PIL images, uint8 / [0, 1] float arrays or tensors (what
            :func:`~hrseg.images.to_image_tensor` takes); None: eight generated street scenes, with a
            :class:`GeneratedCalibrationWarning` (pass :func:`generated_calibration_images` to say that
            they are meant).
        meta: the model's metadata (its normalisation).

    Raises:
        ValueError: no image, or an image outside the accepted ranges.
    """
    if images is None:
        warnings.warn(
            "int8 calibration on generated street scenes: right only for a model trained on them; pass "
            "calibration images of the model's own domain (hrseg export --precision int8 --calib-data ...)",
            GeneratedCalibrationWarning,
            stacklevel=2,
        )
        images = generated_calibration_images()
    channels = len(meta.mean)
    out = [meta.normalize(to_image_tensor(img, channels)[0]).contiguous().numpy() for img in images]
    if not out:
        raise ValueError("int8 calibration needs at least one image")
    return out


def quantize_int8(
    onnx_in: str | Path,
    onnx_out: str | Path,
    calib_images: Iterable[Any] | None = None,
    meta: ModelMeta | None = None,
    per_channel: bool = True,
) -> Path:
    """Post-training static int8 quantization of an fp32 ONNX file (ONNX Runtime, QDQ format).

    Activations are calibrated on ``calib_images`` (see :func:`calibration_batches`) with min-max ranges;
    weights are int8 per output channel, activations uint8. The hrseg metadata is carried over and the file
    records its precision (``hrseg_precision = "int8"``).

    Args:
        onnx_in: the fp32 ONNX file (``hrseg export`` / :func:`~hrseg.export.to_onnx.write_onnx`).
        onnx_out: the int8 file to write.
        calib_images: calibration images of the model's domain (default: eight generated street scenes,
            with a warning; see :func:`calibration_batches`).
        meta: the model's metadata (default: the one embedded in ``onnx_in``).
        per_channel: per-output-channel weight scales.
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    model = onnx.load(str(onnx_in))
    if meta is None:
        props = {p.key: p.value for p in model.metadata_props}
        meta = ModelMeta.from_dict(json.loads(props[CONFIG_METADATA_KEY]))
    batches = calibration_batches(calib_images, meta)
    input_name = model.graph.input[0].name

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self._it, None)
            return None if x is None else {input_name: x}

    out = Path(onnx_out)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # quantize_static logs a pre-processing hint on the root logger
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_static(
                str(onnx_in),
                str(out),
                _Reader(),
                quant_format=QuantFormat.QDQ,
                per_channel=per_channel,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
                extra_options={"CalibTensorRangeSymmetric": False},
            )
    finally:
        root.setLevel(level)
    quantized = onnx.load(str(out))
    set_onnx_metadata(quantized, meta, precision="int8")
    onnx.save(quantized, str(out))
    return out
