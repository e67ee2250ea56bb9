"""Rebuild a ready-to-run network from any checkpoint: Lightning ``.ckpt``, safetensors bundle, ONNX, pt2, IR.

Files are read by :mod:`hrseg.checkpoint` (one reader, one error type); this module builds the network the
metadata describes and loads the weights into it, or runs an exported graph through
:mod:`hrseg.inference.runtime` so it looks like one.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from hrseg.checkpoint import CheckpointError, read_exported, read_model_checkpoint
from hrseg.hub.folder import resolve_model_path
from hrseg.inference.runtime import open_exported
from hrseg.metadata import ModelMeta
from hrseg.models import build_model

__all__ = ["EXPORTED_SUFFIXES", "build_from_meta", "check_weights_fit", "load_checkpoint"]

EXPORTED_SUFFIXES = (".onnx", ".pt2", ".xml")
"""File suffixes of exported graphs (run by :mod:`hrseg.inference.runtime`, not rebuilt from weights)."""


def build_from_meta(meta: ModelMeta, device: str = "cpu") -> nn.Module:
    """A freshly initialised network of the architecture ``meta`` describes."""
    with torch.device(device):
        return build_model(meta.model, num_classes=meta.num_classes, **meta.build_options())


def check_weights_fit(meta: ModelMeta, state: Mapping[str, Tensor], source: str | Path) -> None:
    """Refuse weights that do not fit the network ``meta`` describes, before that network is allocated.

    The network is built on the meta device (shapes only, no memory), so metadata that asks for an absurd
    class count or width is refused by comparing shapes, not by trying to allocate what it asks for.

    Raises:
        CheckpointError: one line naming ``source``, the architecture and the first differences.
    """
    try:
        skeleton = build_from_meta(meta, device="meta")
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{source}: invalid model config: {err}") from err
    expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    wrong = [f"{k} {got[k]} != {expected[k]}" for k in expected if k in got and got[k] != expected[k]]
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    if not (wrong or missing or unexpected):
        return
    details = "; ".join(
        f"{what}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
        for what, keys in (
            ("shapes (file != metadata)", wrong),
            ("missing", missing),
            ("unexpected", unexpected),
        )
        if keys
    )
    want = sum(int(torch.Size(shape).numel()) for shape in expected.values())
    have = sum(int(torch.Size(shape).numel()) for shape in got.values())
    raise CheckpointError(
        f"{source}: the metadata describes {meta.model} with {meta.num_classes} classes ({want:,} values), "
        f"but the weights hold {have:,} values that do not fit it ({details})"
    )


def load_checkpoint(
    path: str | Path, trusted: bool = False, device: str | torch.device = "cpu"
) -> tuple[nn.Module, ModelMeta]:
    """Rebuild the eval-mode network and its metadata from any checkpoint hrseg writes.

    Args:
        path: ``*.ckpt`` (hrseg SegmentationTask), ``*.safetensors`` (+ ``*.json``), ``*.json``, a bundle
            folder holding ``model.safetensors`` and ``config.json``, or an ``hrseg export`` ``.onnx`` /
            ``.pt2`` (run through ONNX Runtime / the exported program; already BN-folded), an OpenVINO IR
            ``.xml`` (``hrseg export --format openvino``; run by OpenVINO), or an hrseg model on the Hugging
            Face Hub (``org/name``, ``hf-hub:org/name@revision``; :func:`hrseg.hub.resolve_model_path`).
        trusted: allow pickled Python objects in a ``.ckpt`` (only for files you trust).
        device: where the inputs will live; an ``.onnx`` file then runs on ONNX Runtime's CUDA / TensorRT
            providers for a CUDA device (other checkpoints are returned on the CPU: move them yourself).

    Returns:
        The network (eval mode; a :class:`~hrseg.inference.runtime.RuntimeModel` for exported graphs) and
        its :class:`~hrseg.checkpoint.ModelMeta`.

    Raises:
        CheckpointError: the file is missing (:class:`~hrseg.checkpoint.CheckpointNotFoundError`, also a
            ``FileNotFoundError``), unreadable, or its weights do not fit the architecture it names.
    """
    # A hub reference (org/name[@rev]) becomes its cached model folder here; checkpoint reads local files only
    p = resolve_model_path(path)
    if p.suffix in EXPORTED_SUFFIXES:
        graph = read_exported(p)
        # the capabilities come from the architecture the metadata names, built without weights
        return open_exported(graph, build_from_meta(graph.meta, device="meta"), device), graph.meta
    meta, state = read_model_checkpoint(p, trusted=trusted)
    check_weights_fit(meta, state, p)  # absurd metadata (class count, width) is refused before allocating
    model = build_from_meta(meta)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(
            f"{p}: weights do not match {meta.model} with {meta.num_classes} classes: {err}"
        ) from err
    return model.eval(), meta
