"""OpenVINO IR (``.xml`` + ``.bin``) converted from an hrseg ONNX file, the hrseg metadata in its rt_info."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hrseg.checkpoint import CONFIG_METADATA_KEY, PRECISION_METADATA_KEY, import_openvino
from hrseg.files import atomic_output
from hrseg.metadata import ModelMeta

__all__ = ["save_openvino"]


def save_openvino(source: Any, meta: ModelMeta, out: str | Path, precision: str = "fp32") -> Path:
    """Convert an ONNX file (or an ``openvino.Model``) to OpenVINO IR ``out`` (.xml + .bin) with the metadata.

    The :class:`ModelMeta` JSON goes into the IR's ``rt_info`` under
    :data:`~hrseg.checkpoint.CONFIG_METADATA_KEY`, so ``Segmenter.from_checkpoint("model.xml")`` needs no
    other file. Weights stay as they are in the source (``compress_to_fp16=False``); the inference precision
    is chosen when the model is compiled (:func:`hrseg.inference.runtime.openvino_runner`): a ``precision``
    other than fp32 (``"int8"`` for a quantized source, ``"bf16"`` / ``"fp16"``) is recorded under
    :data:`~hrseg.checkpoint.PRECISION_METADATA_KEY` and used by the reader.

    Raises:
        ValueError: ``out`` is not a ``.xml`` path.
    """
    out = Path(out)
    if out.suffix != ".xml":
        raise ValueError(f"OpenVINO IR is written as a .xml file (+ .bin), got {out}")
    ov = import_openvino()
    # the runtime's ONNX reader (what ov.convert_model runs for an ONNX file, minus the converter's telemetry)
    ov_model = source if isinstance(source, ov.Model) else ov.Core().read_model(str(source))
    ov_model.set_rt_info(meta.to_json(), [CONFIG_METADATA_KEY])
    if precision != "fp32":
        ov_model.set_rt_info(precision, [PRECISION_METADATA_KEY])
    with atomic_output(out) as tmp:
        ov.save_model(ov_model, str(tmp), compress_to_fp16=False)
    return out
