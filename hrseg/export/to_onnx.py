"""The ONNX file of an export graph, the hrseg metadata embedded.

Which ONNX exporter, and why: the default is the dynamo exporter, fed with a ``torch.export`` program that
was traced with *strict* ``torch.export.Dim`` ranges for batch, height and width (:func:`hrseg.export.graph.
trace`). Strict dims make any size arithmetic that would freeze a dimension an export-time error instead of a
wrong file: with torch 2.14 here, the TorchScript exporter traced HRNetV2's ``int(size)`` head resize into
constants and produced a graph that failed in ONNX Runtime at any other size, and
``torch.onnx.export(module, dynamo=True, dynamic_shapes=...)`` relaxed the dims and silently wrote a
static-shape graph. The same strict program also yields the ``.pt2``. The TorchScript exporter is kept
behind ``--exporter torchscript`` (it exports several times faster, and is correct here thanks to the export
wrapper), but it is deprecated upstream. Both graphs ran at the same speed in ONNX Runtime.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from hrseg.checkpoint import CONFIG_METADATA_KEY, PRECISION_METADATA_KEY
from hrseg.export.graph import trace
from hrseg.metadata import ModelMeta

__all__ = ["EXPORTERS", "Exporter", "set_onnx_metadata", "write_onnx"]

Exporter = Literal["dynamo", "torchscript"]
EXPORTERS: tuple[str, ...] = ("dynamo", "torchscript")


def write_onnx(
    wrapper: nn.Module,
    example: Tensor,
    dims: dict[int, Any],
    out: Path,
    meta: ModelMeta,
    exporter: str = "dynamo",
    opset: int | None = None,
) -> Path:
    """Export ``wrapper`` to the fp32 ONNX file ``out`` with dynamic batch / height / width and ``meta``.

    Args:
        wrapper: the :class:`~hrseg.export.graph.ExportWrapper` (eval mode).
        example: an example input ``(N, C, H, W)``.
        dims: its strict dynamic dims (:func:`~hrseg.export.graph.export_dims`).
        out: the ``.onnx`` file.
        meta: embedded under :data:`~hrseg.checkpoint.CONFIG_METADATA_KEY`.
        exporter: ``"dynamo"`` or ``"torchscript"`` (see the module docstring).
        opset: ONNX opset (default: the exporter's).
    """
    import onnx

    if exporter == "dynamo":
        program = trace(wrapper, example, dims)
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
        raise ValueError(f"exporter must be one of {EXPORTERS}, got {exporter!r}")
    model = onnx.load(str(out))
    if exporter == "dynamo":
        _rename_onnx_dims(model)
    set_onnx_metadata(model, meta)
    onnx.save(model, str(out))
    return out


def set_onnx_metadata(model: Any, meta: ModelMeta, precision: str | None = None) -> None:
    """Embed ``meta`` (and a reduced ``precision``) in an ``onnx.ModelProto``'s metadata, replacing both."""
    values = {CONFIG_METADATA_KEY: meta.to_json()}
    if precision is not None:
        values[PRECISION_METADATA_KEY] = precision
    kept = [(p.key, p.value) for p in model.metadata_props if p.key not in values]
    del model.metadata_props[:]
    for key, value in [*kept, *values.items()]:
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


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
