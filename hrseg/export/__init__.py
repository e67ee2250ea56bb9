"""Export, conversion, quantization and the accuracy check of a trained model.

One concern per module:

- :mod:`~hrseg.export.formats`: one function per format (ONNX, ``.pt2``, safetensors bundle, hub folder,
  OpenVINO IR) and :func:`export`, which loads each back and checks it against eager;
- :mod:`~hrseg.export.graph`: the export wrapper, strict dynamic dims, the parity inputs;
- :mod:`~hrseg.export.to_onnx` / :mod:`~hrseg.export.to_openvino`: the ONNX file, the OpenVINO IR;
- :mod:`~hrseg.export.quantize`: int8 post-training static quantization (ONNX Runtime);
- :mod:`~hrseg.export.accuracy`: a reduced precision's mIoU (:mod:`hrseg.metrics`) and agreement vs fp32;
- :mod:`~hrseg.export.cache`: the export cache behind ``Segmenter(backend="onnxruntime" | "openvino")``.

This package sits between the inference runtime it uses (:mod:`hrseg.inference.runtime` runs what it writes,
:mod:`hrseg.inference.loading` reads checkpoints, :mod:`hrseg.inference.optimize` folds BN), which imports
nothing of it, and the deployment API above it (:mod:`hrseg.deploy`: the backend builder of
:class:`~hrseg.deploy.Segmenter`, :mod:`hrseg.deploy.backends`, exports on demand), which it never imports.
Runtimes and exporters are imported on use.
"""

from __future__ import annotations

from hrseg.export.accuracy import AccuracyReport, accuracy_report, label_map_predictor
from hrseg.export.cache import default_cache_dir, export_cached, model_fingerprint
from hrseg.export.formats import (
    FORMATS,
    HUB_FORMAT,
    OPENVINO_FORMAT,
    SUFFIXES,
    ExportResult,
    GraphOptions,
    export,
    export_hub,
    export_onnx,
    export_openvino,
    export_pt2,
    export_safetensors,
)
from hrseg.export.graph import ExportWrapper, check_input, default_check_size
from hrseg.export.quantize import GeneratedCalibrationWarning, generated_calibration_images, quantize_int8
from hrseg.export.to_onnx import write_onnx
from hrseg.export.to_openvino import save_openvino

__all__ = [
    "FORMATS",
    "HUB_FORMAT",
    "OPENVINO_FORMAT",
    "SUFFIXES",
    "AccuracyReport",
    "ExportResult",
    "ExportWrapper",
    "GeneratedCalibrationWarning",
    "GraphOptions",
    "accuracy_report",
    "check_input",
    "default_cache_dir",
    "default_check_size",
    "export",
    "export_cached",
    "export_hub",
    "export_onnx",
    "export_openvino",
    "export_pt2",
    "export_safetensors",
    "generated_calibration_images",
    "label_map_predictor",
    "model_fingerprint",
    "quantize_int8",
    "save_openvino",
    "write_onnx",
]
