"""Runtime backends behind ``model(x) -> logits``: PyTorch, ``torch.compile``, ONNX Runtime, OpenVINO.

:class:`~hrseg.inference.Segmenter` (``backend=...``) and ``hrseg predict --backend`` pick one here. Non-torch
backends export the network once through :func:`hrseg.export.export` (ONNX, BN folded, dynamic batch /
height / width, parity-checked against eager) and keep the result in a cache folder, keyed by a hash of the
weights and metadata, the backend and the precision::

    <cache>/<hash>/model.onnx                 fp32 ONNX (ONNX Runtime; the source of every other file)
    <cache>/<hash>/model-int8.onnx            int8 QDQ ONNX (ONNX Runtime static quantization)
    <cache>/<hash>/openvino-fp32.xml (+ .bin) OpenVINO IR, the hrseg metadata embedded in its rt_info
    <cache>/<hash>/openvino-int8.xml (+ .bin) OpenVINO IR of the int8 QDQ graph

The cache folder is ``$HRSEG_CACHE`` or ``~/.cache/hrseg`` (``cache_dir=`` overrides both). Changed weights
give another hash, hence a fresh export; files are written under a temporary name and renamed, so a killed
export never leaves a half-written model behind. Exported graphs keep dynamic shapes, so one file serves every
input size and the sliding-window / multi-scale + flip protocol (:func:`hrseg.inference.infer`) runs as is.

``backend="auto"`` picks, in this order (the rule the README documents; ``benchmarks/backends.py`` measures
it): a CUDA device -> ``"torch"`` (the fast path; ``"onnxruntime"`` uses the CUDA / TensorRT providers when
asked for explicitly); an x86 CPU with OpenVINO installed -> ``"openvino"``; ONNX Runtime installed ->
``"onnxruntime"``; else ``"torch"``.

Precisions: ``"fp32"`` everywhere; ``"bf16"`` / ``"fp16"`` through OpenVINO's ``INFERENCE_PRECISION_HINT``
where the CPU runs it (``OPTIMIZATION_CAPABILITIES``; refused otherwise) or, on CUDA, the torch fast path
cast to that precision (:func:`~hrseg.inference.prepare_for_inference` ``dtype``); ``"int8"``
through ONNX Runtime post-training static quantization (:func:`quantize_int8`), calibrated on a handful of
images and run by ONNX Runtime or OpenVINO. :func:`accuracy_report` measures any backend against fp32.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from hrseg.checkpoint import (
    CONFIG_METADATA_KEY,
    ModelMeta,
    import_openvino,
    onnxruntime_runner,
    openvino_runner,
)
from hrseg.inference.optimize import copy_capabilities

__all__ = [
    "BACKENDS",
    "PRECISIONS",
    "AccuracyReport",
    "BackendModel",
    "accuracy_report",
    "available_backends",
    "build_backend",
    "default_cache_dir",
    "export_cached",
    "model_fingerprint",
    "openvino_precisions",
    "quantize_int8",
    "read_openvino",
    "resolve_backend",
    "save_openvino",
]

Backend = Literal["torch", "compile", "onnxruntime", "openvino", "auto"]
Precision = Literal["fp32", "bf16", "fp16", "int8"]
BACKENDS: tuple[str, ...] = ("torch", "compile", "onnxruntime", "openvino", "auto")
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16", "int8")
_OV_HINT = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}
_TORCH_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def default_cache_dir() -> Path:
    """``$HRSEG_CACHE`` or ``~/.cache/hrseg``: where exported backend models are kept."""
    return Path(os.environ.get("HRSEG_CACHE") or "~/.cache/hrseg").expanduser()


def _installed(module: str) -> bool:
    import importlib.util

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


@contextlib.contextmanager
def _atomic_target(final: Path, suffixes: Sequence[str] = ("",)) -> Iterator[Path]:
    """A temporary path beside ``final``; on success the file(s) are renamed into place."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmpdir = Path(tempfile.mkdtemp(prefix=".tmp-", dir=final.parent))
    tmp = tmpdir / final.name
    try:
        yield tmp
        for suffix in suffixes:
            src = tmp.with_suffix(suffix) if suffix else tmp
            dst = final.with_suffix(suffix) if suffix else final
            os.replace(src, dst)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


# --- OpenVINO IR with the hrseg metadata ----------------------------------------------------------------


def save_openvino(source: Any, meta: ModelMeta, out: str | Path, precision_hint: str | None = None) -> Path:
    """Convert an ONNX file (or an ``openvino.Model``) to OpenVINO IR ``out`` (.xml + .bin) with the metadata.

    The :class:`ModelMeta` JSON goes into the IR's ``rt_info`` under ``hrseg_config``
    (:data:`~hrseg.checkpoint.CONFIG_METADATA_KEY`), so :func:`read_openvino` and
    ``Segmenter.from_checkpoint("model.xml")`` need no other file. Weights stay fp32 in the file
    (``compress_to_fp16=False``); the inference precision is chosen when the model is compiled:
    ``precision_hint`` (``"bf16"`` / ``"f16"``) is stored under ``hrseg_precision`` and used by the reader.
    """
    ov = import_openvino()

    # the runtime's ONNX reader (what ov.convert_model runs for an ONNX file, minus the converter's telemetry)
    ov_model = source if isinstance(source, ov.Model) else ov.Core().read_model(str(source))
    ov_model.set_rt_info(meta.to_json(), [CONFIG_METADATA_KEY])
    if precision_hint:
        ov_model.set_rt_info(precision_hint, ["hrseg_precision"])
    out = Path(out)
    if out.suffix != ".xml":
        raise ValueError(f"OpenVINO IR is written as a .xml file (+ .bin), got {out}")
    with _atomic_target(out, (".xml", ".bin")) as tmp:
        ov.save_model(ov_model, str(tmp), compress_to_fp16=False)
    return out


def openvino_precisions(device: str = "CPU") -> list[str]:
    """The precisions OpenVINO runs natively on ``device`` here (fp32, int8 and bf16 / fp16)."""
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


def _openvino_run(
    xml: str | Path, precision: str = "fp32", threads: int | None = None
) -> Callable[[Tensor], Tensor]:
    if precision != "fp32" and precision in _OV_HINT and precision not in openvino_precisions():
        raise ValueError(
            f"this CPU does not run {precision} in OpenVINO (capabilities: {openvino_precisions()}); "
            "use precision='int8' or 'fp32'"
        )
    return openvino_runner(xml, _OV_HINT.get(precision, "f32"), threads)


def read_openvino(path: str | Path, precision: str = "fp32") -> tuple[Callable[[Tensor], Tensor], ModelMeta]:
    """Open an hrseg OpenVINO IR: a compiled ``(N, C, H, W) -> logits`` callable and its metadata.

    The file is read by :mod:`hrseg.checkpoint` (``read_exported``: metadata, errors); a ``precision`` other
    than fp32 recompiles it with that inference precision.

    Raises:
        hrseg.checkpoint.CheckpointError: no embedded hrseg metadata, or not readable by OpenVINO.
    """
    from hrseg.checkpoint import read_exported

    run, meta, _ = read_exported(path)
    if precision != "fp32":
        run = _openvino_run(path, precision, torch.get_num_threads())
    return run, meta


# --- export cache ------------------------------------------------------------------------------------------


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
        model: the eval-mode network (not modified).
        meta: its metadata (embedded in every file).
        kind: ``"onnx"`` or ``"openvino"``.
        precision: ``"fp32"`` or ``"int8"`` (bf16 / fp16 are compile-time choices on the fp32 file).
        cache_dir: default :func:`default_cache_dir`.
        calib_images: int8 only: the calibration images (see :func:`quantize_int8`; default eight generated
            street scenes). Only used when the int8 file is not cached yet.
        fingerprint: the cache key (default :func:`model_fingerprint`).

    Returns:
        The path of the cached ``.onnx`` / ``.xml``.

    Raises:
        RuntimeError: the fp32 ONNX export does not match the eager model (hrseg.export's parity check).
    """
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    folder = folder / (fingerprint or model_fingerprint(model, meta))
    file_precision = "int8" if precision == "int8" else "fp32"
    onnx_path = folder / ("model.onnx" if file_precision == "fp32" else "model-int8.onnx")
    if kind == "openvino":
        xml = folder / f"openvino-{file_precision}.xml"
        if not (xml.is_file() and xml.with_suffix(".bin").is_file()):
            source = export_cached(model, meta, "onnx", file_precision, cache_dir, calib_images, folder.name)
            save_openvino(source, meta, xml)
        return xml
    if onnx_path.is_file():
        return onnx_path
    if file_precision == "int8":
        fp32 = export_cached(model, meta, "onnx", "fp32", cache_dir, None, folder.name)
        with _atomic_target(onnx_path) as tmp:
            quantize_int8(fp32, tmp, calib_images, meta=meta)
        return onnx_path
    from hrseg.export import export  # same layer, lazily: hrseg.export imports hrseg.inference

    with _atomic_target(onnx_path) as tmp:
        result = export(model, format="onnx", out=tmp, meta=meta)
        if not result.passed:
            raise RuntimeError(
                f"ONNX export for the backend cache failed its parity check: {result.summary()}"
            )
        (folder / "export.json").write_text(
            json.dumps(
                {"model": meta.model, "max_abs_diff": result.max_abs_diff, "tolerance": result.tolerance}
            )
            + "\n"
        )
    return onnx_path


# --- int8 post-training static quantization --------------------------------------------------------------


def _calibration_batches(images: Iterable[Any] | None, meta: ModelMeta) -> list[np.ndarray]:
    """Normalized ``(1, C, H, W)`` float32 arrays from images (paths, PIL, arrays, tensors) or demo scenes."""
    from hrseg.images import to_image_tensor

    if images is None:
        from hrseg.data.synthetic import generate_scene  # lazily: demo scenes only when no data is given

        rng = np.random.default_rng(0)
        images = [generate_scene(rng, (128, 256))[0] for _ in range(8)]
    c = len(meta.mean)
    mean, std = meta.normalization()
    out = []
    for img in images:
        if isinstance(img, Tensor) and img.ndim == 3 and img.dtype == torch.float32 and img.min() < 0:
            x = img.unsqueeze(0)  # already normalized (a DataModule sample)
        else:
            x, _ = to_image_tensor(img, c)
            x = (x - mean) / std
        out.append(x.float().contiguous().numpy())
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

    Activations are calibrated on ``calib_images`` (paths / PIL / arrays / [0, 1] tensors, or normalized
    ``(C, H, W)`` tensors as a DataModule gives them; default: eight generated street scenes) with min-max
    ranges; weights are int8 per output channel, activations uint8. The hrseg metadata is carried over.
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
    props = {p.key: p.value for p in model.metadata_props}
    if meta is None:
        meta = ModelMeta.from_dict(json.loads(props[CONFIG_METADATA_KEY]))
    batches = _calibration_batches(calib_images, meta)
    input_name = model.graph.input[0].name

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self._it, None)
            return None if x is None else {input_name: x}

    out = Path(onnx_out)
    import logging

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
    if CONFIG_METADATA_KEY not in {p.key for p in quantized.metadata_props}:
        entry = quantized.metadata_props.add()
        entry.key, entry.value = CONFIG_METADATA_KEY, meta.to_json()
        onnx.save(quantized, str(out))
    return out


# --- the backend module ------------------------------------------------------------------------------------


class BackendModel(nn.Module):
    """A runtime (ONNX Runtime session, compiled OpenVINO model) behind ``model(x) -> logits``.

    Carries the source network's capability attributes and ``exported = True`` (so
    :class:`~hrseg.inference.Segmenter` does not prepare it again); ``backend``, ``precision`` and ``path``
    say what runs.
    """

    exported = True

    def __init__(
        self,
        run: Callable[[Tensor], Tensor],
        source: nn.Module,
        backend: str,
        precision: str,
        path: Path | None = None,
    ) -> None:
        """Wrap ``run``; capabilities are copied from ``source``."""
        super().__init__()
        self._run = run
        self.backend = backend
        self.precision = precision
        self.path = path
        copy_capabilities(source, self)

    def train(self, mode: bool = True) -> BackendModel:
        """Runtimes have no training mode."""
        return self

    def forward(self, x: Tensor) -> Tensor:
        """Logits for a normalized batch."""
        return self._run(x)


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
        cache_dir: the export cache (default :func:`default_cache_dir`).
        calib_images: int8 calibration images (used only when the int8 export is not cached yet).
        fast: torch backends: BN folding and channels_last (:func:`prepare_for_inference`).

    Raises:
        ValueError: an unknown or unavailable backend / precision, or a precision the hardware lacks.
    """
    from hrseg.inference.optimize import prepare_for_inference

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
    cpu_model = model if dev.type == "cpu" else _cpu_copy(model)
    if name == "onnxruntime":
        if precision in ("bf16", "fp16"):
            raise ValueError(f"precision={precision!r}: use backend='openvino' (ONNX Runtime: fp32 or int8)")
        path = export_cached(cpu_model, meta, "onnx", precision, cache_dir, calib_images)
        run = onnxruntime_runner(path, dev, torch.get_num_threads())
        return BackendModel(run, model, name, precision, path)
    path = export_cached(cpu_model, meta, "openvino", precision, cache_dir, calib_images)
    run = _openvino_run(path, precision, torch.get_num_threads())
    return BackendModel(run, model, name, precision, path)


def _cpu_copy(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model).cpu()


# --- accuracy against fp32 ---------------------------------------------------------------------------------


@dataclass
class AccuracyReport:
    """A candidate model's accuracy against the fp32 reference on a validation set.

    ``miou_reference`` / ``miou`` are mIoU against the ground truth masks (over the classes present in the
    masks or either prediction; against the reference's label maps when no masks are given, so
    ``miou_reference`` is 1.0 then); ``agreement`` is the fraction of pixels where both label maps agree.
    """

    images: int
    pixels: int
    miou_reference: float
    miou: float
    agreement: float
    against: str

    @property
    def drop(self) -> float:
        """The mIoU lost against the reference (positive = worse)."""
        return self.miou_reference - self.miou

    def summary(self) -> str:
        """One line for logs and the command."""
        return (
            f"mIoU {self.miou:.4f} vs fp32 {self.miou_reference:.4f} (drop {self.drop:+.4f}, against "
            f"{self.against}), pixel agreement {100 * self.agreement:.2f} % over {self.images} images"
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain values (JSON), with the drop."""
        return {**asdict(self), "drop": self.drop}


def accuracy_report(
    reference: Callable[[Any], Any],
    candidate: Callable[[Any], Any],
    images: Iterable[Any],
    masks: Iterable[Any] | None = None,
    num_classes: int | None = None,
    ignore_index: int | None = 255,
) -> AccuracyReport:
    """Compare two label-map predictors (e.g. ``Segmenter.predict`` fp32 and int8) on a validation set.

    Args:
        reference: image -> ``(H, W)`` label map (the fp32 model).
        candidate: image -> ``(H, W)`` label map (the reduced-precision model).
        images: the validation images (anything the predictors take).
        masks: ground truth ``(H, W)`` label maps in the same order; None compares with the reference.
        num_classes: class count (default: from the label maps).
        ignore_index: ground-truth label not scored.
    """
    pairs: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]] = []
    mask_list = list(masks) if masks is not None else None
    for i, img in enumerate(images):
        ref = np.asarray(_to_numpy(reference(img)), dtype=np.int64)
        got = np.asarray(_to_numpy(candidate(img)), dtype=np.int64)
        gt = np.asarray(_to_numpy(mask_list[i]), dtype=np.int64) if mask_list is not None else None
        pairs.append((ref, got, gt))
    if not pairs:
        raise ValueError("accuracy_report needs at least one image")
    n = num_classes or int(max(max(r.max(), g.max()) for r, g, _ in pairs)) + 1
    cm_ref = np.zeros((n, n), dtype=np.int64)
    cm_got = np.zeros((n, n), dtype=np.int64)
    agree = total = 0
    for ref, got, gt in pairs:
        agree += int((ref == got).sum())
        total += ref.size
        target = gt if gt is not None else ref
        valid = (
            (target >= 0) & (target < n) if ignore_index is None else (target != ignore_index) & (target < n)
        )
        t = target[valid]
        cm_ref += np.bincount(t * n + ref[valid], minlength=n * n).reshape(n, n)
        cm_got += np.bincount(t * n + got[valid], minlength=n * n).reshape(n, n)
    return AccuracyReport(
        images=len(pairs),
        pixels=total,
        miou_reference=_miou_present(cm_ref),
        miou=_miou_present(cm_got),
        agreement=agree / max(1, total),
        against="ground truth" if mask_list is not None else "fp32 label maps",
    )


def _miou_present(confmat: np.ndarray) -> float:
    """The mean IoU over the classes present (cityscapesScripts' average), from :mod:`hrseg.metrics`."""
    from hrseg.metrics import confusion_matrix_scores  # lazily: torchmetrics only when measuring

    return float(confusion_matrix_scores(torch.from_numpy(confmat))["mIoU_present"])


def _to_numpy(x: Any) -> Any:
    return x.detach().cpu().numpy() if isinstance(x, Tensor) else x
