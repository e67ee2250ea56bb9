"""Released weights as a ready model: a bare state dict / official checkpoint + a model name + a label set.

Official HRNet and HRNet-OCR checkpoints (and any plain ``.pth`` / ``.safetensors`` state dict or hub weights
reference) carry only tensors. With the architecture name and the dataset whose classes the head predicts,
they describe a model as completely as a checkpoint hrseg trained: :func:`load_released` builds the network,
loads every tensor (a head that does not fit is an error, never a random one) and returns it with the
:class:`~hrseg.checkpoint.ModelMeta` that ``Segmenter``, ``hrseg predict``, ``hrseg export`` and
``hrseg serve`` need.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from hrseg.checkpoint import CheckpointError
from hrseg.eval_protocol import EvalProtocol
from hrseg.inference.loading import build_from_meta
from hrseg.metadata import LabelSet, ModelMeta
from hrseg.models import load_pretrained, resolve_model
from hrseg.models.weights import CheckpointMismatchError

__all__ = ["load_released", "model_from_weights", "released_meta"]


def released_meta(
    model: str,
    classes: str | Sequence[str],
    align_corners: bool = False,
    model_options: Mapping[str, Any] | None = None,
    eval_protocol: EvalProtocol | None = None,
) -> ModelMeta:
    """The metadata of a released model: architecture, label set, ImageNet normalisation.

    Args:
        model: an hrseg model name (``hrnetv2_w48``, ``hrnetv2_w48_ocr``, ...; ``hrseg.list_models()``).
        classes: a registered label set (``"cityscapes"``, ``"voc"``, ...;
            ``hrseg.metadata.list_label_sets()``) or a list of class names.
        align_corners: of every bilinear resize; True for checkpoints of the official HRNet-OCR branch
            (``*_torch11.pth``), which trained with it everywhere; False for the HRNetV2 master branch.
        model_options: further ``build_model`` options (``bn_momentum``, ``ocr_mid_channels``, ...).
        eval_protocol: how to run it (default: whole image, one scale).
    """
    resolve_model(model)  # an unknown name fails here, listing the registered ones
    return ModelMeta(
        model=model,
        labels=LabelSet.coerce(classes),
        model_options=dict(model_options or {}),
        align_corners=align_corners,
        eval_protocol=eval_protocol or EvalProtocol(),
    )


def model_from_weights(
    weights: str | Path,
    meta: ModelMeta,
    trusted: bool = False,
) -> nn.Module:
    """Build the network ``meta`` describes and load every tensor of ``weights`` into it (eval mode).

    Raises:
        CheckpointError: unreadable weights, keys or shapes that do not fit, or weights that leave part of
            the network (typically the segmentation head) uninitialised: the message names the file.
        FileNotFoundError: the file (or hub reference) is not there.
    """
    network = build_from_meta(meta)
    try:
        report = load_pretrained(network, weights, trusted=trusted)
    except CheckpointMismatchError as err:
        raise CheckpointError(
            f"{weights}: these are not {meta.model} weights for {meta.num_classes} classes ({err.counts()}); "
            "check --model and --classes (or model= and classes=)"
        ) from err
    if report.missing:
        shown = ", ".join(report.missing[:4]) + (", ..." if len(report.missing) > 4 else "")
        raise CheckpointError(
            f"{weights}: these weights leave {len(report.missing)} tensors of {meta.model} "
            f"({meta.num_classes} classes) uninitialised ({shown}); they are not a segmentation checkpoint "
            "of this model (ImageNet weights initialise training: hrseg fit --model.weights ...)"
        )
    return network.eval()


def load_released(
    weights: str | Path,
    model: str,
    classes: str | Sequence[str],
    align_corners: bool = False,
    model_options: Mapping[str, Any] | None = None,
    eval_protocol: EvalProtocol | None = None,
    trusted: bool = False,
) -> tuple[nn.Module, ModelMeta]:
    """Released weights as ``(network in eval mode, ModelMeta)``, the pair ``load_checkpoint`` returns.

    :func:`released_meta` describes the model from its name and label set; :func:`model_from_weights` builds
    it and loads every tensor. Raises what they raise (``ValueError`` for an unknown name or label set,
    :class:`~hrseg.checkpoint.CheckpointError` for weights that do not fit, ``FileNotFoundError``).
    """
    meta = released_meta(
        model, classes, align_corners=align_corners, model_options=model_options, eval_protocol=eval_protocol
    )
    return model_from_weights(weights, meta, trusted=trusted), meta
