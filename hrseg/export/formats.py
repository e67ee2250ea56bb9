"""One function per export format, and :func:`export`, which checks every one against eager.

Every export is loaded back through the deployment path (:func:`hrseg.inference.load_checkpoint`: ONNX
Runtime, OpenVINO, the ``.pt2`` program, or a fresh ``build_model`` for a safetensors bundle) and run on an
input whose batch size and height/width differ from the export example; the maximum absolute difference to the
eager model is reported and the export fails above the tolerance. A graph that silently specialised to the
example size therefore cannot pass. Reduced precisions (int8, OpenVINO bf16 / fp16) are checked by their mIoU
against the fp32 model instead (:mod:`hrseg.export.accuracy`).

The graph formats export the inference graph: conv+BN pairs are folded (``fold_bn``); the model's own forward
resizes to symbolic sizes, so batch, height and width stay dynamic (:mod:`hrseg.export.graph`; the choice of
ONNX exporter is explained in :mod:`hrseg.export.to_onnx`). The ``hrseg export`` command is
:mod:`hrseg.commands.export`.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from hrseg.checkpoint import CONFIG_METADATA_KEY
from hrseg.data.scenes import generate_scene
from hrseg.export.accuracy import AccuracyReport, accuracy_report, label_map_predictor
from hrseg.export.graph import ExportWrapper, check_input, default_check_size, export_dims, trace
from hrseg.export.quantize import quantize_int8
from hrseg.export.to_onnx import Exporter, write_onnx
from hrseg.export.to_openvino import save_openvino
from hrseg.files import atomic_output, save_safetensors
from hrseg.images import ImageInput
from hrseg.inference.loading import load_checkpoint
from hrseg.inference.optimize import prepare_for_inference
from hrseg.inference.runtime import check_openvino_precision
from hrseg.metadata import ModelMeta
from hrseg.models import upsample_logits

__all__ = [
    "FORMATS",
    "HUB_FORMAT",
    "OPENVINO_FORMAT",
    "SUFFIXES",
    "ExportResult",
    "GraphOptions",
    "export",
    "export_hub",
    "export_onnx",
    "export_openvino",
    "export_pt2",
    "export_safetensors",
]

Format = Literal["onnx", "pt2", "safetensors", "hub", "openvino"]
FORMATS: tuple[str, ...] = ("onnx", "pt2", "safetensors")
SUFFIXES = {"onnx": ".onnx", "pt2": ".pt2", "safetensors": ".safetensors", "openvino": ".xml"}
#: ``openvino``: OpenVINO IR (``.xml`` + ``.bin``) converted from the ONNX export, the hrseg metadata in its
#: rt_info; needs the ``deploy`` extra (openvino). Not part of ``--format all``.
OPENVINO_FORMAT = "openvino"
#: ``hub``: the safetensors bundle as a shareable folder (``config.json`` + ``model.safetensors`` +
#: a generated model card ``README.md``), the layout of huggingface_hub's ``ModelHubMixin``; publish it
#: with :func:`hrseg.hub.push_to_hub`. Not part of ``--format all`` (it is the bundle plus a card).
HUB_FORMAT = "hub"
#: formats that are graphs (traced, BN folded) rather than weights
GRAPH_FORMATS = ("onnx", "pt2", OPENVINO_FORMAT)
#: the seed of the generated validation scenes of the reduced-precision check (not the calibration scenes)
VALIDATION_SEED = 12345


@dataclass
class ExportResult:
    """Outcome of one export and its parity check."""

    format: str
    path: Path
    files: list[Path]
    max_abs_diff: float
    logit_range: float
    tolerance: float
    check_shape: tuple[int, ...]
    export_seconds: float
    extra: dict[str, Any] = field(default_factory=dict)
    #: reduced-precision exports: the accuracy against fp32
    accuracy: AccuracyReport | None = None
    #: the largest mIoU drop against fp32 a reduced-precision export may have
    max_drop: float | None = None

    @property
    def passed(self) -> bool:
        """True when the export matches eager within the tolerance (reduced precision: the mIoU drop)."""
        if self.accuracy is not None:
            return self.max_drop is None or self.accuracy.drop <= self.max_drop
        return self.max_abs_diff <= self.tolerance

    def summary(self) -> str:
        """One human-readable line (printed by the command)."""
        size_mb = sum(f.stat().st_size for f in self.files if f.exists()) / 1e6
        status = "OK" if self.passed else "FAILED"
        shape = "x".join(str(s) for s in self.check_shape)
        line = (
            f"{self.format}: {self.path} ({size_mb:.1f} MB, {self.export_seconds:.1f} s); "
            f"max |{self.format} - eager| = {self.max_abs_diff:.3g} at {shape} "
            f"(logits up to {self.logit_range:.3g}, tolerance {self.tolerance:.3g})"
        )
        if self.accuracy is not None:
            precision = self.extra.get("precision", "reduced precision")
            line += f"; {precision}: {self.accuracy.summary()}, allowed drop {self.max_drop}"
        return f"{line} {status}"


@dataclass(frozen=True)
class GraphOptions:
    """How the graph formats (onnx, pt2, openvino) trace the network.

    Attributes:
        height: export example height (the graph stays dynamic; HRNetV2 accepts any size >= 33).
        width: export example width.
        fold_bn: fold conv+BN in the exported graph.
        exporter: ONNX exporter (see :mod:`hrseg.export.to_onnx`).
        opset: ONNX opset (default: the exporter's).
        upsample: put the resize of the logits to the input size into the graph.
    """

    height: int = 256
    width: int = 256
    fold_bn: bool = True
    exporter: Exporter = "dynamo"
    opset: int | None = None
    upsample: bool = False

    def prepare(self, model: nn.Module, meta: ModelMeta) -> tuple[ExportWrapper, Tensor, dict[int, Any]]:
        """The export wrapper of ``model``, an example input (batch 2) and the strict dynamic dims."""
        dims, _ = export_dims(model, self.height, self.width)
        net = prepare_for_inference(model, fold_bn=self.fold_bn, channels_last=False)
        wrapper = ExportWrapper(net, upsample=self.upsample, align_corners=meta.align_corners).eval()
        example = check_input(meta, (2, _in_channels(model), self.height, self.width))
        return wrapper, example, dims


# --- one function per format ------------------------------------------------------------------------------


def export_onnx(
    model: nn.Module,
    meta: ModelMeta,
    out: Path,
    options: GraphOptions | None = None,
    precision: Literal["fp32", "int8"] = "fp32",
    calib_images: Any = None,
) -> list[Path]:
    """The ONNX file ``out``: fp32, or int8 by static quantization of the fp32 graph (``calib_images``)."""
    if precision not in ("fp32", "int8"):
        raise ValueError(f"ONNX exports are fp32 or int8, not {precision!r} (bf16 / fp16: format 'openvino')")
    options = options or GraphOptions()
    wrapper, example, dims = options.prepare(model, meta)
    if precision == "fp32":
        write_onnx(wrapper, example, dims, out, meta, options.exporter, options.opset)
        return [out]
    with tempfile.TemporaryDirectory(prefix="hrseg-export-") as tmp:
        fp32 = write_onnx(
            wrapper, example, dims, Path(tmp) / "model.onnx", meta, options.exporter, options.opset
        )
        quantize_int8(fp32, out, calib_images, meta=meta)
    return [out]


def export_openvino(
    model: nn.Module,
    meta: ModelMeta,
    out: Path,
    options: GraphOptions | None = None,
    precision: str = "fp32",
    calib_images: Any = None,
) -> list[Path]:
    """The OpenVINO IR ``out`` (.xml + .bin) of the ONNX export; int8 quantized, or bf16 / fp16 recorded.

    Raises:
        ValueError: a bf16 / fp16 precision this CPU does not run in OpenVINO.
    """
    check_openvino_precision(precision)
    with tempfile.TemporaryDirectory(prefix="hrseg-export-") as tmp:
        onnx_precision: Literal["fp32", "int8"] = "int8" if precision == "int8" else "fp32"
        [source] = export_onnx(model, meta, Path(tmp) / "model.onnx", options, onnx_precision, calib_images)
        save_openvino(source, meta, out, precision)
    return [out, out.with_suffix(".bin")]


def export_pt2(
    model: nn.Module, meta: ModelMeta, out: Path, options: GraphOptions | None = None
) -> list[Path]:
    """The ``torch.export`` program ``out`` (``.pt2``), the metadata in its extra files."""
    wrapper, example, dims = (options or GraphOptions()).prepare(model, meta)
    program = trace(wrapper, example, dims)
    with open(out, "wb") as fh:  # a Python file: a refused write keeps its errno (hrseg.files.disk_errors)
        torch.export.save(program, fh, extra_files={f"{CONFIG_METADATA_KEY}.json": meta.to_json()})
    return [out]


def export_safetensors(model: nn.Module, meta: ModelMeta, out: Path) -> list[Path]:
    """Official-key fp32 weights (not BN-folded, so they also fine-tune and load with load_pretrained).

    ``out`` is a ``.safetensors`` file (its config beside it as ``.json``) or a folder (``model.safetensors``
    + ``config.json``); the config is also embedded in the safetensors header.
    """
    if out.suffix == ".safetensors":
        weights, config = out, out.with_suffix(".json")
    else:
        out.mkdir(parents=True, exist_ok=True)
        weights, config = out / "model.safetensors", out / "config.json"
    weights.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_safetensors(state, weights, metadata={CONFIG_METADATA_KEY: meta.to_json(), "format": "pt"})
    config.write_text(meta.to_json() + "\n")
    return [weights, config]


def export_hub(model: nn.Module, meta: ModelMeta, out: Path, checkpoint: Path | None = None) -> list[Path]:
    """A shareable model folder (:func:`hrseg.hub.save_model_folder`): the bundle plus a model card.

    Args:
        model: the network.
        meta: its metadata.
        out: the folder.
        checkpoint: the Lightning ``.ckpt`` it came from, whose training summary goes into the card.
    """
    from hrseg.hub.folder import save_model_folder
    from hrseg.modelcard import model_card, read_training_summary

    if out.suffix == ".safetensors":
        raise ValueError(f"--format hub writes a folder, not a file: {out}")
    summary = read_training_summary(checkpoint) if checkpoint is not None else None
    return save_model_folder(model, meta, out, card=model_card(meta, summary))


# --- the dispatcher and its check -------------------------------------------------------------------------


def export(
    checkpoint: str | Path | nn.Module,
    format: Format = "onnx",
    out: str | Path | None = None,
    height: int = 256,
    width: int = 256,
    tolerance: float | None = None,
    fold_bn: bool = True,
    exporter: Exporter = "dynamo",
    opset: int | None = None,
    upsample: bool = False,
    meta: ModelMeta | None = None,
    check_size: tuple[int, int] | None = None,
    check_image: ImageInput | None = None,
    trusted: bool = False,
    precision: Literal["fp32", "bf16", "fp16", "int8"] = "fp32",
    calib_images: Any = None,
    val_images: Any = None,
    val_masks: Any = None,
    max_drop: float | None = 0.005,
    val_source: str | None = None,
) -> ExportResult:
    """Export one format, load it back and compare it with the eager model at another input size.

    Args:
        checkpoint: Lightning ``.ckpt`` / safetensors bundle path, or an ``nn.Module`` together with ``meta``.
        format: ``"onnx"``, ``"pt2"``, ``"safetensors"``, ``"hub"`` (a model folder with a model card) or
            ``"openvino"``.
        out: output file (``.onnx`` / ``.pt2`` / ``.safetensors`` / ``.xml``; a folder for a safetensors
            bundle or ``hub``). Default: next to the checkpoint with the format's suffix (``hub``:
            ``<stem>_hub/``).
        height: export example height (the graph stays dynamic; HRNetV2 accepts any size >= 33).
        width: export example width.
        fold_bn: fold conv+BN in the exported graph (ONNX / pt2 / OpenVINO).
        exporter: ONNX exporter (see :mod:`hrseg.export.to_onnx`).
        opset: ONNX opset (default: the exporter's).
        upsample: put the resize of the logits to the input size into the graph.
        tolerance: allowed max abs difference; default ``1e-4 * max(1, max |eager logits|)`` (fp32 reordering
            and BN folding give ~1e-6 relative).
        meta: model metadata when ``checkpoint`` is a module.
        check_size: (H, W) of the parity input (default :func:`default_check_size`).
        check_image: an image for the parity input (default: a generated scene).
        trusted: allow pickled objects in a ``.ckpt``.
        precision: ``"int8"`` (ONNX / OpenVINO: ONNX Runtime static quantization calibrated on
            ``calib_images``) or ``"bf16"`` / ``"fp16"`` (OpenVINO where the CPU runs it: the inference
            precision is recorded in the IR). Reduced precision is checked by its mIoU against the fp32
            model on ``val_images`` instead of the logits tolerance.
        calib_images: int8 calibration images of the model's domain (paths / PIL / arrays / tensors;
            default generated street scenes, with a warning: see :mod:`hrseg.export.quantize`).
        val_images: validation images for the accuracy check (default: 8 generated street scenes).
        val_masks: their ground truth label maps (default: compare with the fp32 label maps).
        max_drop: the mIoU drop against fp32 above which ``.passed`` is False (None: report only).
        val_source: what ``val_images`` are, for the accuracy summary (e.g. ``"images in photos/"``).

    Returns:
        :class:`ExportResult`; check ``.passed``.
    """
    _check_format(format, precision)
    model, meta, source = _source(checkpoint, meta, trusted)
    out_path = Path(out) if out is not None else _default_out(source, format)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    options = GraphOptions(height, width, fold_bn, exporter, opset, upsample)
    check = _check_batch(model, meta, options, check_size, check_image)
    # with --upsample the graph formats resize inside the graph; bundles are weights, compared as they are
    reference = _logits(model, check, meta, upsample and format in GRAPH_FORMATS)
    start = time.perf_counter()
    extra: dict[str, Any] = {}
    # written beside out_path under a temporary name and renamed whole: a failed export (a full disk, a kill)
    # leaves no partial file under the final name
    with atomic_output(out_path, "no partial export was left; rerun once there is room") as tmp:
        if format == "onnx":
            files = export_onnx(
                model, meta, tmp, options, "int8" if precision == "int8" else "fp32", calib_images
            )
            extra["exporter"] = exporter
        elif format == OPENVINO_FORMAT:
            files = export_openvino(model, meta, tmp, options, precision, calib_images)
            extra["exporter"] = exporter
        elif format == "pt2":
            files = export_pt2(model, meta, tmp, options)
        elif format == HUB_FORMAT:
            files = export_hub(model, meta, tmp, source)
        else:
            files = export_safetensors(model, meta, tmp)
        files = [out_path.parent / f.relative_to(tmp.parent) for f in files]
    export_seconds = time.perf_counter() - start
    if precision != "fp32":
        extra["precision"] = precision
    loaded, _ = load_checkpoint(files[0])  # the deployment path reads it back
    got = _logits(loaded, check, meta, upsample=False)  # a graph resizes itself; bundles are compared raw
    if got.shape != reference.shape:
        raise RuntimeError(
            f"{format} export returned shape {tuple(got.shape)} for input {tuple(check.shape)}, "
            f"eager {tuple(reference.shape)}"
        )
    diff = float((got - reference).abs().max())
    logit_range = float(reference.abs().max())
    tol = tolerance if tolerance is not None else 1e-4 * max(1.0, logit_range)
    accuracy = None
    # reduced precision: the label maps' accuracy is the check, the logits difference is only reported
    if precision != "fp32":
        accuracy = _accuracy(model, loaded, meta, val_images, val_masks, val_source)
        tol = float("inf") if tolerance is None else tol
        extra["accuracy"] = accuracy.to_dict()
    return ExportResult(
        format=format,
        path=out_path,
        files=files,
        max_abs_diff=diff,
        logit_range=logit_range,
        tolerance=tol,
        check_shape=tuple(check.shape),
        export_seconds=export_seconds,
        extra=extra,
        accuracy=accuracy,
        max_drop=max_drop if accuracy is not None else None,
    )


def _check_format(format: str, precision: str) -> None:
    """Refuse unknown formats and precisions a format does not have, before any work."""
    if format not in (*FORMATS, HUB_FORMAT, OPENVINO_FORMAT):
        raise ValueError(f"format must be one of {(*FORMATS, HUB_FORMAT, OPENVINO_FORMAT)}, got {format!r}")
    if precision != "fp32" and format not in ("onnx", OPENVINO_FORMAT):
        raise ValueError(f"precision={precision!r} applies to the onnx and openvino formats, not {format!r}")
    if precision in ("bf16", "fp16") and format != OPENVINO_FORMAT:
        raise ValueError(f"precision={precision!r} is an OpenVINO inference precision: use format='openvino'")


def _source(
    checkpoint: str | Path | nn.Module, meta: ModelMeta | None, trusted: bool
) -> tuple[nn.Module, ModelMeta, Path | None]:
    """The eval-mode network, its metadata and the checkpoint file (None for a module)."""
    if isinstance(checkpoint, nn.Module):
        if meta is None:
            raise ValueError("pass meta=ModelMeta(...) when exporting a module")
        return checkpoint.eval(), meta, None
    model, read_meta = load_checkpoint(checkpoint, trusted=trusted)
    return model, read_meta, Path(checkpoint)


def _default_out(source: Path | None, format: str) -> Path:
    """Beside the checkpoint with the format's suffix (``hub``: ``<stem>_hub/``); ``model.*`` for a module."""
    if source is None:
        return Path(f"model{SUFFIXES[format]}" if format != HUB_FORMAT else "model")
    return (
        source.with_suffix(SUFFIXES[format])
        if format != HUB_FORMAT
        else source.with_name(f"{source.stem}_hub")
    )


def _in_channels(model: nn.Module) -> int:
    return int(getattr(model, "in_channels", 3) or 3)


def _check_batch(
    model: nn.Module,
    meta: ModelMeta,
    options: GraphOptions,
    check_size: tuple[int, int] | None,
    check_image: ImageInput | None,
) -> Tensor:
    """The parity input: batch 1 at a size unlike the example's (the model's size rules checked first)."""
    _, multiple = export_dims(model, options.height, options.width)
    ch, cw = check_size or default_check_size(
        options.height, options.width, int(getattr(model, "min_export_size", 1))
    )
    if multiple > 1 and check_size is None:
        ch, cw = (options.height // multiple + 1) * multiple, (options.width // multiple + 2) * multiple
    if ch % multiple or cw % multiple:
        raise ValueError(f"check size ({ch}, {cw}) must be a multiple of {multiple} for this model")
    return check_input(meta, (1, _in_channels(model), ch, cw), check_image)


def _logits(model: nn.Module, x: Tensor, meta: ModelMeta, upsample: bool) -> Tensor:
    with torch.inference_mode():
        out = model(x)
        return upsample_logits(out, tuple(x.shape[-2:]), meta.align_corners) if upsample else out


def _accuracy(
    reference: nn.Module,
    candidate: nn.Module,
    meta: ModelMeta,
    images: Any,
    masks: Any,
    source: str | None,
) -> AccuracyReport:
    """The exported model's label maps against the fp32 model's, on ``images`` (default: generated scenes)."""
    if images is None:
        rng = np.random.default_rng(VALIDATION_SEED)
        images = [generate_scene(rng, (128, 256))[0] for _ in range(8)]
        masks = None
        source = "generated street scenes"
    return accuracy_report(
        label_map_predictor(reference, meta),
        label_map_predictor(candidate, meta),
        images,
        masks,
        meta.num_classes,
        meta.labels.ignore_index,
        source or "",
    )
