"""The export cache behind ``Segmenter(backend="onnxruntime" | "openvino")``: one export per weights.

Non-torch backends run the network exported once through :func:`hrseg.export.export` (ONNX, BN folded,
dynamic batch / height / width, parity-checked against eager), kept in a cache folder keyed by a hash of the
weights and metadata, the runtime and the precision::

    <cache>/<hash>/model.onnx                 fp32 ONNX (ONNX Runtime; the source of every other file)
    <cache>/<hash>/model-int8.onnx            int8 QDQ ONNX (ONNX Runtime static quantization)
    <cache>/<hash>/openvino-fp32.xml (+ .bin) OpenVINO IR, the hrseg metadata embedded in its rt_info
    <cache>/<hash>/openvino-int8.xml (+ .bin) OpenVINO IR of the int8 QDQ graph

The cache folder is ``$HRSEG_CACHE`` or ``~/.cache/hrseg`` (``cache_dir=`` overrides both). Changed weights
give another hash, hence a fresh export; files are written under a temporary name and renamed
(:func:`~hrseg.files.atomic_output`), so a killed export never leaves a half-written model behind.
Exported graphs keep dynamic shapes, so one file serves every input size and the sliding-window /
multi-scale + flip protocol (:func:`hrseg.inference.infer`) runs as is.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from hrseg.export.formats import export
from hrseg.export.quantize import quantize_int8
from hrseg.export.to_openvino import save_openvino
from hrseg.files import atomic_output
from hrseg.metadata import ModelMeta

__all__ = ["default_cache_dir", "export_cached", "model_fingerprint"]


def default_cache_dir() -> Path:
    """``$HRSEG_CACHE`` or ``~/.cache/hrseg``: where exported backend models are kept."""
    return Path(os.environ.get("HRSEG_CACHE") or "~/.cache/hrseg").expanduser()


def model_fingerprint(model: nn.Module, meta: ModelMeta) -> str:
    """A hash of the weights (names, dtypes, shapes, bytes) and the metadata: the export cache key."""
    digest = hashlib.sha256(meta.to_json().encode())
    for name, value in sorted(model.state_dict().items()):
        if not isinstance(value, Tensor):
            continue
        t = value.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()[:20]


def export_cached(
    model: nn.Module,
    meta: ModelMeta,
    kind: Literal["onnx", "openvino"] = "onnx",
    precision: str = "fp32",
    cache_dir: str | Path | None = None,
    calib_images: Iterable[Any] | None = None,
    fingerprint: str | None = None,
) -> Path:
    """The exported file for ``model`` (ONNX or OpenVINO IR, fp32 or int8), exported on the first call only.

    Args:
        model: the eval-mode network on the CPU (not modified).
        meta: its metadata (embedded in every file).
        kind: ``"onnx"`` or ``"openvino"``.
        precision: ``"fp32"`` or ``"int8"`` (bf16 / fp16 are compile-time choices on the fp32 file).
        cache_dir: default :func:`default_cache_dir`.
        calib_images: int8 only: the calibration images (see
            :func:`~hrseg.export.quantize.calibration_batches`; default eight generated street scenes). Only
            used when the int8 file is not cached yet.
        fingerprint: the cache key (default :func:`model_fingerprint`).

    Returns:
        The path of the cached ``.onnx`` / ``.xml``.

    Raises:
        RuntimeError: the fp32 ONNX export does not match the eager model (its parity check).
    """
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    folder = folder / (fingerprint or model_fingerprint(model, meta))
    file_precision = "int8" if precision == "int8" else "fp32"
    if kind == "openvino":
        xml = folder / f"openvino-{file_precision}.xml"
        if not (xml.is_file() and xml.with_suffix(".bin").is_file()):
            source = export_cached(model, meta, "onnx", file_precision, cache_dir, calib_images, folder.name)
            save_openvino(source, meta, xml, file_precision)
        return xml
    onnx_path = folder / ("model.onnx" if file_precision == "fp32" else "model-int8.onnx")
    if onnx_path.is_file():
        return onnx_path
    if file_precision == "int8":
        fp32 = export_cached(model, meta, "onnx", "fp32", cache_dir, None, folder.name)
        with atomic_output(onnx_path) as tmp:
            quantize_int8(fp32, tmp, calib_images, meta=meta)
        return onnx_path
    with atomic_output(onnx_path) as tmp:
        result = export(model, format="onnx", out=tmp, meta=meta)
        if not result.passed:
            raise RuntimeError(
                f"ONNX export for the backend cache failed its parity check: {result.summary()}"
            )
        record = {"model": meta.model, "max_abs_diff": result.max_abs_diff, "tolerance": result.tolerance}
        (folder / "export.json").write_text(json.dumps(record) + "\n")
    return onnx_path
