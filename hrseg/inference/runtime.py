"""The one runtime wrapper for exported graphs: ONNX Runtime, OpenVINO and ``torch.export`` programs.

:mod:`hrseg.checkpoint` reads and describes an exported file (:func:`~hrseg.checkpoint.read_exported`); this
module runs it: :func:`open_exported` creates the ONNX Runtime session (CUDA / TensorRT providers on a CUDA
device), compiles the OpenVINO model for the CPU at its inference precision, or takes the ``.pt2`` program's
module, and wraps the result in a :class:`RuntimeModel`, an ``nn.Module`` with the usual
``model(x) -> logits`` call. Files loaded by ``Segmenter.from_checkpoint`` and the backends built by
``Segmenter(backend=...)`` (:mod:`hrseg.deploy.backends`) are both this class.

The runtimes are imported when a graph is opened, never by importing this module.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from hrseg.checkpoint import ExportedGraph, import_openvino, read_exported
from hrseg.inference.optimize import copy_capabilities

__all__ = [
    "OPENVINO_HINTS",
    "RuntimeModel",
    "check_openvino_precision",
    "load_exported",
    "onnxruntime_providers",
    "onnxruntime_runner",
    "open_exported",
    "openvino_precisions",
    "openvino_runner",
]

OPENVINO_HINTS = {"fp32": "f32", "int8": "f32", "bf16": "bf16", "fp16": "f16"}
"""OpenVINO's ``INFERENCE_PRECISION_HINT`` per hrseg precision (an int8 graph carries its own QDQ types)."""

#: the runtime that runs each exported file kind (``RuntimeModel.backend``)
RUNTIMES = {"onnx": "onnxruntime", "openvino": "openvino", "pt2": "pt2"}


class RuntimeModel(nn.Module):
    """An exported graph behind ``model(x) -> logits``.

    It runs an ONNX Runtime session, a compiled OpenVINO model or a ``torch.export`` program.

    Exported graphs are BN-folded and fixed in eval mode, so ``train()`` is a no-op and
    :class:`~hrseg.deploy.Segmenter` does not prepare them again.

    Args:
        run: the ``(N, C, H, W) -> logits`` callable.
        capabilities: a network of the same architecture whose capability attributes (``num_classes``,
            ``size_divisor``, ...) the wrapper carries (a ``meta``-device build will do).
        backend: what runs it: ``"onnxruntime"``, ``"openvino"`` or ``"pt2"``.
        precision: ``"fp32"``, ``"int8"``, ``"bf16"`` or ``"fp16"``.
        path: the file it runs.
    """

    def __init__(
        self,
        run: Callable[[Tensor], Tensor],
        capabilities: nn.Module,
        backend: str,
        precision: str = "fp32",
        path: Path | None = None,
    ) -> None:
        """Wrap ``run``; see the class docstring."""
        super().__init__()
        self._run = run
        self.backend = backend
        self.precision = precision
        self.path = path
        copy_capabilities(capabilities, self)

    def train(self, mode: bool = True) -> RuntimeModel:
        """Exported graphs have no training mode."""
        return self

    def forward(self, x: Tensor) -> Tensor:
        """Logits for a normalized batch (on ``x``'s device)."""
        return self._run(x)


def open_exported(
    graph: ExportedGraph,
    capabilities: nn.Module,
    device: str | torch.device = "cpu",
    precision: str | None = None,
    threads: int | None = None,
) -> RuntimeModel:
    """Run an exported graph that :func:`~hrseg.checkpoint.read_exported` described.

    Args:
        graph: the described file.
        capabilities: see :class:`RuntimeModel`.
        device: where inputs live; an ONNX file then runs on the CUDA / TensorRT providers of a CUDA device
            (:func:`onnxruntime_providers`). OpenVINO runs on the CPU; the logits come back on ``device``.
        precision: OpenVINO: the inference precision to compile with (default: the one the export recorded).
        threads: intra-op threads (default: the runtime's own choice).

    Raises:
        ValueError: a precision OpenVINO cannot run on this CPU (:func:`check_openvino_precision`).
    """
    chosen = precision or graph.precision
    if graph.kind == "onnx":
        run = onnxruntime_runner(graph.path, device, threads)
    elif graph.kind == "openvino":
        run = openvino_runner(graph.graph, chosen, threads)
    else:
        run = graph.graph.module()
    return RuntimeModel(run, capabilities, RUNTIMES[graph.kind], chosen, graph.path)


def load_exported(
    path: str | Path,
    capabilities: nn.Module,
    device: str | torch.device = "cpu",
    precision: str | None = None,
    threads: int | None = None,
) -> RuntimeModel:
    """:func:`open_exported` of the file ``path`` (read by :func:`~hrseg.checkpoint.read_exported`)."""
    return open_exported(read_exported(path), capabilities, device, precision, threads)


# --- ONNX Runtime ------------------------------------------------------------------------------------------


def onnxruntime_providers(device: str | torch.device = "cpu") -> list[Any]:
    """ONNX Runtime execution providers for ``device``: TensorRT > CUDA > CPU on a CUDA device, CPU otherwise.

    Only installed providers are listed (``onnxruntime-gpu`` has the CUDA one, TensorRT needs its own
    libraries); on a CUDA device without them a warning says that the session runs on the CPU.
    """
    import onnxruntime as ort

    dev = torch.device(device)
    if dev.type != "cuda":
        return ["CPUExecutionProvider"]
    available = set(ort.get_available_providers())
    options = {"device_id": dev.index or 0}
    gpu = [(p, options) for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p in available]
    if not gpu:
        warnings.warn(
            "ONNX Runtime has no CUDA provider here (pip install onnxruntime-gpu); running on the CPU",
            stacklevel=3,
        )
    return [*gpu, "CPUExecutionProvider"]


def onnxruntime_runner(
    path: str | Path, device: str | torch.device = "cpu", threads: int | None = None
) -> Callable[[Tensor], Tensor]:
    """A ``(N, C, H, W) -> logits`` callable running an ONNX file in an ONNX Runtime session.

    Args:
        path: the ``.onnx`` file.
        device: where inputs live; a CUDA device selects the GPU providers (:func:`onnxruntime_providers`),
            and the logits come back on it.
        threads: intra-op threads (default: ONNX Runtime's, one per physical core).
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = int(threads)
    session = ort.InferenceSession(str(path), opts, providers=onnxruntime_providers(device))
    name = session.get_inputs()[0].name

    def run(x: Tensor) -> Tensor:
        out = session.run(None, {name: x.detach().float().cpu().contiguous().numpy()})[0]
        return torch.from_numpy(out).to(x.device)

    return run


# --- OpenVINO ----------------------------------------------------------------------------------------------


def openvino_precisions(device: str = "CPU") -> list[str]:
    """The precisions OpenVINO runs natively on ``device`` here (fp32; bf16 / fp16 / int8 where reported)."""
    ov = import_openvino()

    caps = {str(c).upper() for c in ov.Core().get_property(device, "OPTIMIZATION_CAPABILITIES")}
    found = ["fp32"]
    if "BF16" in caps:
        found.append("bf16")
    if "FP16" in caps:
        found.append("fp16")
    if "INT8" in caps:
        found.append("int8")
    return found


def check_openvino_precision(precision: str) -> None:
    """Refuse a precision OpenVINO cannot run on this CPU (bf16 / fp16 need the hardware capability).

    Raises:
        ValueError: an unknown precision, or bf16 / fp16 that this CPU does not run.
    """
    if precision not in OPENVINO_HINTS:
        raise ValueError(f"OpenVINO precision must be one of {tuple(OPENVINO_HINTS)}, got {precision!r}")
    if precision in ("bf16", "fp16") and precision not in (found := openvino_precisions()):
        raise ValueError(
            f"this CPU does not run {precision} in OpenVINO (capabilities: {found}); "
            "use precision int8 or fp32"
        )


def openvino_runner(
    model: Any, precision: str = "fp32", threads: int | None = None
) -> Callable[[Tensor], Tensor]:
    """A ``(N, C, H, W) -> logits`` callable running an OpenVINO model (or IR path) compiled for the CPU.

    Args:
        model: an ``openvino.Model`` or the path of an IR ``.xml``.
        precision: the hrseg precision, compiled with its :data:`OPENVINO_HINTS` inference precision (checked
            by :func:`check_openvino_precision`).
        threads: ``INFERENCE_NUM_THREADS`` (default: OpenVINO's choice).
    """
    check_openvino_precision(precision)
    ov = import_openvino()
    core = ov.Core()
    config: dict[str, Any] = {
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": OPENVINO_HINTS[precision],
    }
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    source = core.read_model(str(model)) if isinstance(model, str | Path) else model
    request = core.compile_model(source, "CPU", config).create_infer_request()

    def run(x: Tensor) -> Tensor:
        request.infer({0: x.detach().float().cpu().contiguous().numpy()})
        out = torch.from_numpy(request.get_output_tensor(0).data.copy())
        return out.to(x.device)

    return run
