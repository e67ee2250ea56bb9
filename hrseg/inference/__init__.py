"""Inference: the evaluation protocol, the fast path, checkpoint loading, ``Segmenter`` and prediction files.

One concern per module:

- :mod:`~hrseg.inference.protocol`: whole image / sliding window / multi-scale + flip (:func:`infer`);
- :mod:`~hrseg.inference.optimize`: conv+BN folding, channels_last, compile (:func:`prepare_for_inference`);
- :mod:`~hrseg.inference.runtime`: the one wrapper for exported graphs (ONNX Runtime, OpenVINO, ``.pt2``):
  :class:`RuntimeModel`, sessions created on use;
- :mod:`~hrseg.inference.loading`: a ready network from any checkpoint (:func:`load_checkpoint`);
- :mod:`~hrseg.inference.segmenter`: :class:`Segmenter`, files and arrays in, label maps and colours out;
- :mod:`~hrseg.inference.writer`: the PNG files of a prediction and the resumable :func:`predict_folder`;
- :mod:`~hrseg.inference.backends`: backend selection and building (``Segmenter(backend=..., precision=...)``:
  torch, ``torch.compile``, or ONNX Runtime / OpenVINO on a cached export of :mod:`hrseg.export`).

Nothing here imports Lightning, albumentations or OpenCV: a deployment needs torch, PIL and numpy (plus ONNX
Runtime for ``.onnx`` files). Image inputs are converted by :mod:`hrseg.images`, colours come from
:mod:`hrseg.colors`, checkpoint files are read by :mod:`hrseg.checkpoint`.
"""

from __future__ import annotations

from hrseg.checkpoint import CONFIG_METADATA_KEY, ModelMeta
from hrseg.images import ImageInput, open_image, to_image_tensor
from hrseg.inference.device import resolve_device
from hrseg.inference.loading import build_from_meta, load_checkpoint
from hrseg.inference.optimize import fold_batchnorm, prepare_for_inference
from hrseg.inference.protocol import EvalProtocol, Output, class_argmax, infer, sliding_window_starts
from hrseg.inference.runtime import RuntimeModel, load_exported
from hrseg.inference.segmenter import Segmenter
from hrseg.inference.writer import PredictSummary, output_paths, predict_folder, write_prediction

__all__ = [
    "CONFIG_METADATA_KEY",
    "EvalProtocol",
    "ImageInput",
    "ModelMeta",
    "Output",
    "PredictSummary",
    "RuntimeModel",
    "Segmenter",
    "build_from_meta",
    "class_argmax",
    "fold_batchnorm",
    "infer",
    "load_checkpoint",
    "load_exported",
    "open_image",
    "output_paths",
    "predict_folder",
    "prepare_for_inference",
    "resolve_device",
    "sliding_window_starts",
    "to_image_tensor",
    "write_prediction",
]
