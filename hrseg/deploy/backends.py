"""Backend selection behind ``model(x) -> logits``: PyTorch, ``torch.compile``, ONNX Runtime, OpenVINO.

:class:`~hrseg.deploy.Segmenter` (``backend=...``) and ``hrseg predict --backend`` pick one here
(:func:`resolve_backend`) and get it built (:func:`build_backend`). Non-torch backends run the network
exported once into a cache folder (:func:`hrseg.export.export_cached`, imported when such a backend is built,
so the torch path never loads the exporter; :mod:`hrseg.export` is below this package and imports nothing of
it) through the one runtime wrapper (:mod:`hrseg.inference.runtime`).

``backend="auto"`` picks, in this order (the rule the README documents; ``benchmarks/backends.py`` measures
it): a CUDA device -> ``"torch"`` (the fast path; ``"onnxruntime"`` uses the CUDA / TensorRT providers when
asked for explicitly); an x86 CPU with OpenVINO installed -> ``"openvino"``; ONNX Runtime installed ->
``"onnxruntime"``; else ``"torch"``.

Precisions: ``"fp32"`` everywhere; ``"bf16"`` / ``"fp16"`` through OpenVINO's ``INFERENCE_PRECISION_HINT``
where the CPU runs it (:func:`~hrseg.inference.runtime.check_openvino_precision`) or, on CUDA, the torch fast
path cast to that precision (:func:`~hrseg.inference.prepare_for_inference` ``dtype``); ``"int8"`` through
ONNX Runtime post-training static quantization (:func:`hrseg.export.quantize_int8`), calibrated on a handful
of images and run by ONNX Runtime or OpenVINO. :func:`hrseg.export.accuracy_report` measures any backend
against fp32.
"""

from __future__ import annotations

import copy
import importlib.util
import platform
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from hrseg.checkpoint import read_exported
from hrseg.inference.optimize import prepare_for_inference
from hrseg.inference.runtime import check_openvino_precision, open_exported
from hrseg.metadata import ModelMeta

__all__ = ["BACKENDS", "PRECISIONS", "available_backends", "build_backend", "resolve_backend"]

Backend = Literal["torch", "compile", "onnxruntime", "openvino", "auto"]
Precision = Literal["fp32", "bf16", "fp16", "int8"]
BACKENDS: tuple[str, ...] = ("torch", "compile", "onnxruntime", "openvino", "auto")
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16", "int8")
_TORCH_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def available_backends() -> list[str]:
    """The backends that can run here (``torch`` and ``compile`` always; the runtimes when installed)."""
    found = ["torch", "compile"]
    if _installed("onnxruntime"):
        found.append("onnxruntime")
    if _installed("openvino"):
        found.append("openvino")
    return found


def resolve_backend(backend: str, device: str | torch.device = "cpu") -> str:
    """The concrete backend for ``backend`` on ``device`` (``"auto"`` by the module's rule).

    Raises:
        ValueError: an unknown backend, or a runtime that is not installed or cannot use ``device``.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    dev = torch.device(device)
    if backend == "auto":
        if dev.type != "cpu":
            return "torch"
        x86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")
        if x86 and _installed("openvino"):
            return "openvino"
        return "onnxruntime" if _installed("onnxruntime") else "torch"
    if backend in ("onnxruntime", "openvino") and not _installed(backend):
        extra = " (pip install 'hrseg[deploy]')" if backend == "openvino" else ""
        raise ValueError(f"backend {backend!r} is not installed{extra}")
    if backend == "openvino" and dev.type != "cpu":
        raise ValueError(f"backend 'openvino' runs on the CPU here, not on {dev}")
    return backend


def build_backend(
    model: nn.Module,
    meta: ModelMeta,
    backend: str = "torch",
    precision: str = "fp32",
    device: str | torch.device = "cpu",
    cache_dir: str | Path | None = None,
    calib_images: Iterable[Any] | None = None,
    fast: bool = True,
) -> nn.Module:
    """``model`` on ``backend`` at ``precision``: a module with the same ``model(x) -> logits`` call.

    Args:
        model: the eval-mode network on ``device``.
        meta: its metadata.
        backend: one of :data:`BACKENDS` (``"auto"`` resolved by :func:`resolve_backend`).
        precision: one of :data:`PRECISIONS`.
        device: where inputs live.
        cache_dir: the export cache (default ``$HRSEG_CACHE`` or ``~/.cache/hrseg``).
        calib_images: int8 calibration images (used only when the int8 export is not cached yet).
        fast: torch backends: BN folding and channels_last (:func:`prepare_for_inference`).

    Returns:
        The torch network (prepared) or a :class:`~hrseg.inference.runtime.RuntimeModel` whose ``backend``,
        ``precision`` and ``path`` say what runs.

    Raises:
        ValueError: an unknown or unavailable backend / precision, or a precision the hardware lacks.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    dev = torch.device(device)
    name = resolve_backend(backend, dev)
    if name in ("torch", "compile"):
        if precision == "int8":
            raise ValueError("precision='int8' runs on the onnxruntime / openvino backends")
        if precision != "fp32" and dev.type != "cuda":
            raise ValueError(
                f"precision={precision!r} with the torch backend needs a CUDA device; on the CPU use "
                "backend='openvino' (where the CPU runs it) or precision='int8'"
            )
        if not (fast or name == "compile" or precision != "fp32"):
            return model
        return prepare_for_inference(
            model,
            fold_bn=fast,
            channels_last=None if fast else False,
            compile=name == "compile",
            dtype=_TORCH_DTYPES.get(precision),
        )
    if name == "onnxruntime" and precision in ("bf16", "fp16"):
        raise ValueError(f"precision={precision!r}: use backend='openvino' (ONNX Runtime: fp32 or int8)")
    if name == "openvino":
        check_openvino_precision(precision)  # before exporting anything
    from hrseg.export.cache import export_cached  # on demand: the torch path needs no exporter (see above)

    cpu_model = model if dev.type == "cpu" else copy.deepcopy(model).cpu()
    kind: Literal["onnx", "openvino"] = "onnx" if name == "onnxruntime" else "openvino"
    path = export_cached(cpu_model, meta, kind, precision, cache_dir, calib_images)
    return open_exported(read_exported(path), model, dev, precision, torch.get_num_threads())
