"""The inference runtime: the evaluation protocol, the fast path, checkpoint loading, exported graphs.

One concern per module:

- :mod:`~hrseg.inference.protocol`: whole image / sliding window / multi-scale + flip (:func:`infer`);
- :mod:`~hrseg.inference.optimize`: conv+BN folding, channels_last, compile (:func:`prepare_for_inference`);
- :mod:`~hrseg.inference.runtime`: the one wrapper for exported graphs (ONNX Runtime, OpenVINO, ``.pt2``):
  :class:`RuntimeModel`, sessions created on use;
- :mod:`~hrseg.inference.loading`: a ready network from any checkpoint (:func:`load_checkpoint`);
- :mod:`~hrseg.inference.device`: where inference runs (:func:`resolve_device`; ``"auto"``: CUDA, else MPS,
  else CPU);
- :mod:`~hrseg.inference.released`: released weights (a bare state dict + model name + label set) as a ready
  model and its metadata.

This is the layer the exporter (:mod:`hrseg.export`) writes and verifies through, so it imports nothing of
:mod:`hrseg.export` nor of :mod:`hrseg.deploy` (``Segmenter``, ``predict_folder`` and the backend builder that
exports on demand live there, above both).

Nothing here imports Lightning, albumentations or OpenCV: a deployment needs torch, PIL and numpy (plus ONNX
Runtime for ``.onnx`` files). Image inputs are converted by :mod:`hrseg.images`, colours come from
:mod:`hrseg.colors`, checkpoint files are read by :mod:`hrseg.checkpoint`.
"""

from __future__ import annotations

from hrseg.checkpoint import CONFIG_METADATA_KEY
from hrseg.images import ImageInput, open_image, to_image_tensor
from hrseg.inference.device import resolve_device
from hrseg.inference.loading import build_from_meta, load_checkpoint
from hrseg.inference.optimize import fold_batchnorm, prepare_for_inference
from hrseg.inference.protocol import EvalProtocol, Output, class_argmax, infer, sliding_window_starts
from hrseg.inference.runtime import RuntimeModel, load_exported
from hrseg.metadata import ModelMeta

__all__ = [
    "CONFIG_METADATA_KEY",
    "EvalProtocol",
    "ImageInput",
    "ModelMeta",
    "Output",
    "RuntimeModel",
    "build_from_meta",
    "class_argmax",
    "fold_batchnorm",
    "infer",
    "load_checkpoint",
    "load_exported",
    "open_image",
    "prepare_for_inference",
    "resolve_device",
    "sliding_window_starts",
    "to_image_tensor",
]
