"""Export a trained model to ONNX, torch.export (``.pt2``) or a safetensors bundle, each checked vs eager.

Every export is loaded back (ONNX Runtime ``InferenceSession``; ``torch.export.load``; safetensors into a
fresh ``build_model``) and run on an input whose batch size and height/width differ from the export
example; the maximum absolute difference to the eager model is printed and the command fails above the
tolerance. A graph that silently specialised to the example size therefore cannot pass.

Which ONNX exporter, and why: the default is the dynamo exporter, fed with a ``torch.export`` program that
was traced with *strict* ``torch.export.Dim`` ranges for batch, height and width. Strict dims make any size
arithmetic that would freeze a dimension an export-time error instead of a wrong file: with torch 2.14 here,
the TorchScript exporter traced HRNetV2's ``int(size)`` head resize into constants and produced a graph that
failed in ONNX Runtime at any other size, and ``torch.onnx.export(module, dynamo=True, dynamic_shapes=...)``
relaxed the dims and silently wrote a static-shape graph. The same strict program also yields the ``.pt2``.
The TorchScript exporter is kept behind ``--exporter torchscript`` (it exports several times faster, and is
correct here thanks to the export wrapper below), but it is deprecated upstream. Both graphs ran at the same
speed in ONNX Runtime.

The exported graph is the inference graph: conv+BN pairs are folded (``fold_bn``); the model's own forward
resizes to symbolic sizes, so batch, height and width stay dynamic. The ``hrseg export`` command is
:mod:`hrseg.commands.export`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hrseg.checkpoint import CONFIG_METADATA_KEY, ModelMeta, onnxruntime_runner
from hrseg.images import to_image_tensor
from hrseg.inference.loading import load_checkpoint
from hrseg.inference.optimize import copy_capabilities, prepare_for_inference
from hrseg.models import upsample_logits

__all__ = [
    "FORMATS",
    "HUB_FORMAT",
    "OPENVINO_FORMAT",
    "SUFFIXES",
    "ExportResult",
    "ExportWrapper",
    "default_check_size",
    "export",
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
    #: reduced-precision exports: an :class:`hrseg.inference.backends.AccuracyReport` against fp32
    accuracy: Any = None
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


def _check_image(meta: ModelMeta, shape: tuple[int, int, int, int], path: str | Path | None) -> Tensor:
    """A normalized, image-like check input: a real image if given, else a deterministic street-like scene.

    Random noise exercises networks unlike real data (BN statistics, saturated ReLUs); a smooth scene with
    edges gives realistic logits.
    """
    b, c, h, w = shape
    if path is not None:
        x, _ = to_image_tensor(path, c)
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False).expand(b, -1, -1, -1)
    else:
        gen = torch.Generator().manual_seed(1234)
        yy = torch.linspace(0, 1, h).view(h, 1).expand(h, w)
        xx = torch.linspace(0, 1, w).view(1, w).expand(h, w)
        sky = torch.stack([0.4 + 0.2 * yy, 0.6 + 0.1 * yy, 0.9 - 0.1 * yy])
        road = torch.stack([0.35 + 0.05 * xx, 0.3 + 0.05 * xx, 0.35 + 0.0 * xx])
        img = torch.where((yy > 0.55).unsqueeze(0), road, sky)
        for _ in range(6):
            y0, x0 = torch.rand(2, generator=gen).tolist()
            hh, ww = (0.1 + 0.3 * torch.rand(2, generator=gen)).tolist()
            color = torch.rand(3, 1, 1, generator=gen)
            box = (yy >= y0) & (yy < y0 + hh) & (xx >= x0) & (xx < x0 + ww)
            img = torch.where(box.unsqueeze(0), color.expand(3, h, w), img)
        img = (img + 0.03 * torch.randn(3, h, w, generator=gen)).clamp(0, 1)
        x = torch.stack([img] * b)[:, :c]
    mean, std = meta.normalization(c)
    return ((x - mean) / std).contiguous()


def _dims(model: nn.Module, height: int, width: int) -> tuple[dict[int, Any], int]:
    """Strict dynamic dims for (batch, height, width) and the spatial multiple the model needs.

    Read from the model's capabilities (``size_divisor``, ``min_export_size``): HRNetV2 takes any size from
    33 up, encoder-decoder baselines multiples of their output stride.
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


def _torch_export(wrapper: nn.Module, example: Tensor, dims: dict[int, Any]) -> torch.export.ExportedProgram:
    """Trace with strict dims: any specialisation of batch / height / width raises here, not at deployment."""
    with torch.no_grad():
        return torch.export.export(wrapper, (example,), dynamic_shapes={"image": dims}, strict=False)


def _rename_onnx_dims(model: Any) -> None:
    """Give ONNX inputs/outputs readable dim names (batch, height, width) instead of exporter symbols."""
    graph = model.graph
    names = {0: "batch", 2: "height", 3: "width"}
    mapping: dict[str, str] = {}
    for inp in graph.input:
        for i, dim in enumerate(inp.type.tensor_type.shape.dim):
            if dim.dim_param and i in names:
                mapping[dim.dim_param] = names[i]
    # Replace longest symbols first so "s1" does not clobber part of "s17".
    order = sorted(mapping, key=len, reverse=True)
    for value in [*graph.input, *graph.output]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param:
                text = dim.dim_param
                for sym in order:
                    text = text.replace(sym, mapping[sym])
                dim.dim_param = text


def _export_onnx(
    wrapper: nn.Module,
    example: Tensor,
    dims: dict[int, Any],
    out: Path,
    meta: ModelMeta,
    exporter: str,
    opset: int | None,
) -> None:
    import onnx

    if exporter == "dynamo":
        program = _torch_export(wrapper, example, dims)
        onnx_program = torch.onnx.export(
            program,
            dynamo=True,
            input_names=["image"],
            output_names=["logits"],
            opset_version=opset,
            external_data=False,
            optimize=True,
            verbose=False,
        )
        assert onnx_program is not None
        onnx_program.save(str(out), external_data=False)
    elif exporter == "torchscript":
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                wrapper,
                (example,),
                str(out),
                dynamo=False,
                input_names=["image"],
                output_names=["logits"],
                opset_version=opset or 17,
                dynamic_axes={
                    "image": {0: "batch", 2: "height", 3: "width"},
                    "logits": {0: "batch", 2: "h", 3: "w"},
                },
                do_constant_folding=True,
            )
    else:
        raise ValueError(f"exporter must be 'dynamo' or 'torchscript', got {exporter!r}")
    model = onnx.load(str(out))
    if exporter == "dynamo":
        _rename_onnx_dims(model)
    entry = model.metadata_props.add()
    entry.key, entry.value = CONFIG_METADATA_KEY, meta.to_json()
    onnx.save(model, str(out))


def _write_bundle(model: nn.Module, meta: ModelMeta, out: Path) -> list[Path]:
    """Official-key fp32 weights (not BN-folded, so they also fine-tune and load with load_pretrained)."""
    from safetensors.torch import save_file

    if out.suffix == ".safetensors":
        weights, config = out, out.with_suffix(".json")
    else:
        out.mkdir(parents=True, exist_ok=True)
        weights, config = out / "model.safetensors", out / "config.json"
    weights.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(weights), metadata={CONFIG_METADATA_KEY: meta.to_json(), "format": "pt"})
    config.write_text(meta.to_json() + "\n")
    return [weights, config]


def default_check_size(height: int, width: int, min_size: int = 33) -> tuple[int, int]:
    """A check size unlike the example: odd, and neither a multiple of 4 nor equal to the example."""
    return max(min_size + 4, height // 2 + 13), width + 29


def export(
    checkpoint: str | Path | nn.Module,
    format: Format = "onnx",
    out: str | Path | None = None,
    height: int = 256,
    width: int = 256,
    tolerance: float | None = None,
    fold_bn: bool = True,
    exporter: Literal["dynamo", "torchscript"] = "dynamo",
    opset: int | None = None,
    upsample: bool = False,
    meta: ModelMeta | None = None,
    check_size: tuple[int, int] | None = None,
    check_image: str | Path | None = None,
    trusted: bool = False,
    precision: Literal["fp32", "bf16", "fp16", "int8"] = "fp32",
    calib_images: Any = None,
    val_images: Any = None,
    val_masks: Any = None,
    max_drop: float | None = 0.005,
) -> ExportResult:
    """Export one format, load it back and compare it with the eager model at another input size.

    Args:
        checkpoint: Lightning ``.ckpt`` / safetensors bundle path, or an ``nn.Module`` together with ``meta``.
        format: ``"onnx"``, ``"pt2"``, ``"safetensors"`` or ``"hub"`` (a model folder with a model card).
        out: output file (``.onnx`` / ``.pt2`` / ``.safetensors``; a folder for a safetensors bundle or
            ``hub``). Default: next to the checkpoint with the format's suffix (``hub``: ``<stem>_hub/``).
        height: export example height (the graph stays dynamic; HRNetV2 accepts any size >= 33).
        width: export example width.
        tolerance: allowed max abs difference; default ``1e-4 * max(1, max |eager logits|)`` (fp32 reordering
            and BN folding give ~1e-6 relative).
        fold_bn: fold conv+BN in the exported graph (ONNX / pt2).
        exporter: ONNX exporter (see the module docstring).
        opset: ONNX opset (default: the exporter's).
        upsample: put the resize of the logits to the input size into the graph.
        meta: model metadata when ``checkpoint`` is a module.
        check_size: (H, W) of the parity input (default :func:`default_check_size`).
        check_image: an image file for the parity input (default: a generated scene).
        trusted: allow pickled objects in a ``.ckpt``.
        precision: ``"int8"`` (ONNX / OpenVINO: ONNX Runtime static quantization calibrated on
            ``calib_images``) or ``"bf16"`` / ``"fp16"`` (OpenVINO where the CPU runs it: the inference
            precision hint is stored in the IR). Reduced precision is checked by its mIoU against the fp32
            model on ``val_images`` instead of the logits tolerance.
        calib_images: int8 calibration images (paths / PIL / arrays / tensors; default generated scenes).
        val_images: validation images for the accuracy check (default: 8 generated street scenes).
        val_masks: their ground truth label maps (default: compare with the fp32 label maps).
        max_drop: the mIoU drop against fp32 above which ``.passed`` is False (None: report only).

    Returns:
        :class:`ExportResult`; check ``.passed``.
    """
    if format not in (*FORMATS, HUB_FORMAT, OPENVINO_FORMAT):
        raise ValueError(f"format must be one of {(*FORMATS, HUB_FORMAT, OPENVINO_FORMAT)}, got {format!r}")
    if precision != "fp32" and format not in ("onnx", OPENVINO_FORMAT):
        raise ValueError(f"precision={precision!r} applies to the onnx and openvino formats, not {format!r}")
    if precision in ("bf16", "fp16") and format != OPENVINO_FORMAT:
        raise ValueError(f"precision={precision!r} is an OpenVINO inference precision: use format='openvino'")
    if isinstance(checkpoint, nn.Module):
        if meta is None:
            raise ValueError("pass meta=ModelMeta(...) when exporting a module")
        model = checkpoint.eval()
        default_out = Path(f"model{SUFFIXES[format]}" if format != HUB_FORMAT else "model")
    else:
        model, meta = load_checkpoint(checkpoint, trusted=trusted)
        ckpt_path = Path(checkpoint)
        default_out = (
            ckpt_path.with_suffix(SUFFIXES[format])
            if format != HUB_FORMAT
            else ckpt_path.with_name(f"{ckpt_path.stem}_hub")
        )
    out_path = Path(out) if out is not None else default_out
    out_path.parent.mkdir(parents=True, exist_ok=True)
    in_ch = int(getattr(model, "in_channels", 3) or 3)
    dims, multiple = _dims(model, height, width)
    ch, cw = check_size or default_check_size(height, width, int(getattr(model, "min_export_size", 1)))
    if multiple > 1 and check_size is None:
        ch, cw = (height // multiple + 1) * multiple, (width // multiple + 2) * multiple
    if ch % multiple or cw % multiple:
        raise ValueError(f"check size ({ch}, {cw}) must be a multiple of {multiple} for this model")
    check = _check_image(meta, (1, in_ch, ch, cw), check_image)
    with torch.inference_mode():
        reference = model(check)
        if upsample:
            reference = upsample_logits(reference, (ch, cw), meta.align_corners)
    start = time.perf_counter()
    extra: dict[str, Any] = {}
    if format in ("safetensors", HUB_FORMAT):
        if format == HUB_FORMAT:
            if out_path.suffix == ".safetensors":
                raise ValueError(f"--format hub writes a folder, not a file: {out_path}")
            from hrseg.hub import save_model_folder
            from hrseg.modelcard import model_card, read_training_summary

            summary = None if isinstance(checkpoint, nn.Module) else read_training_summary(checkpoint)
            files = save_model_folder(model, meta, out_path, card=model_card(meta, summary))
        else:
            files = _write_bundle(model, meta, out_path)
        export_seconds = time.perf_counter() - start
        fresh, _ = load_checkpoint(files[0])
        with torch.inference_mode():
            got = fresh(check)
            if upsample:
                got = upsample_logits(got, (ch, cw), meta.align_corners)
        result = got.numpy()
    else:
        net = prepare_for_inference(model, fold_bn=fold_bn, channels_last=False)
        wrapper = ExportWrapper(net, upsample=upsample, align_corners=meta.align_corners).eval()
        example = _check_image(meta, (2, in_ch, height, width), None)
        if format == "onnx" and precision == "fp32":
            _export_onnx(wrapper, example, dims, out_path, meta, exporter, opset)
            export_seconds = time.perf_counter() - start
            result = onnxruntime_runner(out_path)(check).numpy()
            extra["exporter"] = exporter
        elif format in ("onnx", OPENVINO_FORMAT):
            files = _export_runtime(
                wrapper, example, dims, out_path, meta, exporter, opset, format, precision, calib_images
            )
            export_seconds = time.perf_counter() - start
            result = _run_exported(out_path, check)
            extra.update(exporter=exporter, precision=precision)
        else:
            program = _torch_export(wrapper, example, dims)
            torch.export.save(
                program, str(out_path), extra_files={f"{CONFIG_METADATA_KEY}.json": meta.to_json()}
            )
            export_seconds = time.perf_counter() - start
            loaded = torch.export.load(str(out_path)).module()
            with torch.inference_mode():
                result = loaded(check).numpy()
            extra["dynamic"] = {str(k): str(v) for k, v in program.range_constraints.items()}
        if format != OPENVINO_FORMAT and precision == "fp32":
            files = [out_path]
    ref = reference.numpy()
    if result.shape != ref.shape:
        raise RuntimeError(
            f"{format} export returned shape {result.shape} for input {tuple(check.shape)}, eager {ref.shape}"
        )
    diff = float(np.abs(result - ref).max())
    logit_range = float(np.abs(ref).max())
    tol = tolerance if tolerance is not None else 1e-4 * max(1.0, logit_range)
    accuracy = None
    # reduced precision: the label maps' accuracy is the check, the logits difference is only reported
    if precision != "fp32":
        accuracy = _accuracy(model, meta, out_path, val_images, val_masks)
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


def _export_runtime(
    wrapper: nn.Module,
    example: Tensor,
    dims: dict[int, Any],
    out_path: Path,
    meta: ModelMeta,
    exporter: str,
    opset: int | None,
    format: str,
    precision: str,
    calib_images: Any,
) -> list[Path]:
    """ONNX int8, or OpenVINO IR at any precision: the fp32 ONNX export, then quantization / conversion."""
    import tempfile

    from hrseg.inference.backends import openvino_precisions, quantize_int8, save_openvino

    if precision in ("bf16", "fp16") and precision not in openvino_precisions():
        raise ValueError(
            f"this CPU does not run {precision} in OpenVINO (capabilities: {openvino_precisions()}); "
            "use --quantize int8 or fp32"
        )
    with tempfile.TemporaryDirectory(prefix="hrseg-export-") as tmp:
        source = Path(tmp) / "model.onnx"
        _export_onnx(wrapper, example, dims, source, meta, exporter, opset)
        if precision == "int8":
            quantized = Path(tmp) / "model-int8.onnx"
            quantize_int8(source, quantized, calib_images, meta=meta)
            source = quantized
        if format == OPENVINO_FORMAT:
            hint = {"bf16": "bf16", "fp16": "f16"}.get(precision)
            save_openvino(source, meta, out_path, precision_hint=hint)
            files = [out_path, out_path.with_suffix(".bin")]
        else:
            import shutil

            shutil.move(str(source), str(out_path))
            files = [out_path]
    return files


def _run_exported(path: Path, check: Tensor) -> np.ndarray:
    """The exported file's logits for ``check`` (read back by :mod:`hrseg.checkpoint`)."""
    from hrseg.checkpoint import read_exported

    run, _, _ = read_exported(path)
    with torch.inference_mode():
        return run(check).numpy()


def _accuracy(model: nn.Module, meta: ModelMeta, path: Path, images: Any, masks: Any) -> Any:
    """The exported file's label maps against the fp32 model's (``backends.accuracy_report``)."""
    from hrseg.checkpoint import read_exported
    from hrseg.inference.backends import accuracy_report
    from hrseg.inference.loading import ExportedModel
    from hrseg.inference.segmenter import Segmenter

    if images is None:
        from hrseg.data.synthetic import generate_scene

        rng = np.random.default_rng(12345)  # not the calibration scenes
        images = [generate_scene(rng, (128, 256))[0] for _ in range(8)]
        masks = None
    run, _, kind = read_exported(path)
    reference = Segmenter(model, meta)
    candidate = Segmenter(ExportedModel(run, meta, kind), meta)
    return accuracy_report(
        reference.predict, candidate.predict, images, masks, meta.num_classes, meta.ignore_index
    )
