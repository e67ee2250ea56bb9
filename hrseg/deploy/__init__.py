"""The user-facing deployment API: ``Segmenter``, prediction files and the runtime backends.

- :mod:`~hrseg.deploy.segmenter`: :class:`Segmenter`, files and arrays in, label maps and colours out;
- :mod:`~hrseg.deploy.writer`: the PNG files of a prediction and the resumable :func:`predict_folder`;
- :mod:`~hrseg.deploy.stream`: images larger than memory, streamed into label GeoTIFFs
  (:func:`predict_raster`, ``Segmenter.predict_raster``), resumable band by band;
- :mod:`~hrseg.deploy.backends`: backend selection and building (``Segmenter(backend=..., precision=...)``:
  torch, ``torch.compile``, or ONNX Runtime / OpenVINO on a cached export of :mod:`hrseg.export`).

Why a package of its own: it sits above both the inference runtime (:mod:`hrseg.inference`: the protocol,
the fast path, checkpoint loading, the wrapper for exported graphs) and the exporter (:mod:`hrseg.export`,
which writes and verifies its files through that runtime). ``Segmenter(backend="onnxruntime")`` exports on
demand, so the code that asks for an export cannot live in the runtime package without the two importing
each other; here every import points down.

Like the runtime, nothing here imports Lightning, albumentations or OpenCV: a deployment needs torch, PIL and
numpy (plus ONNX Runtime or OpenVINO for those backends).
"""

from __future__ import annotations

from hrseg.deploy.backends import available_backends, build_backend, resolve_backend
from hrseg.deploy.segmenter import Segmenter
from hrseg.deploy.stream import StreamOptions, predict_raster
from hrseg.deploy.writer import (
    PREDICTION_FORMATS,
    PredictSummary,
    label_image,
    output_paths,
    outputs_exist,
    predict_folder,
    write_prediction,
)

__all__ = [
    "PREDICTION_FORMATS",
    "PredictSummary",
    "Segmenter",
    "StreamOptions",
    "available_backends",
    "build_backend",
    "label_image",
    "output_paths",
    "outputs_exist",
    "predict_folder",
    "predict_raster",
    "resolve_backend",
    "write_prediction",
]
