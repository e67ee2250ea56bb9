"""The model card (``README.md``) of a shareable hrseg model folder (``hrseg export --format hub``).

The card is generated from the :class:`~hrseg.checkpoint.ModelMeta` (architecture, classes, normalization)
and, when the export starts from a Lightning ``.ckpt``, from what the run recorded: the checkpoint callback's
monitored score, epoch and step, the DataModule, and the run's ``config.yaml`` / ``metrics.csv`` beside the
``checkpoints/`` folder when they are there. It carries the hub metadata header (``library_name``, tags,
``pipeline_tag``) that the Hugging Face Hub reads. This module imports only :mod:`hrseg.checkpoint`.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from hrseg.checkpoint import ModelMeta

__all__ = ["TrainingSummary", "model_card", "read_training_summary"]


@dataclass
class TrainingSummary:
    """What a Lightning checkpoint (and its run folder) tells about training.

    Attributes:
        epoch: the checkpoint's epoch.
        global_step: the checkpoint's optimizer step.
        datamodule: the DataModule class (``CityscapesDataModule`` ...), when known.
        data_args: the DataModule's ``init_args`` from the run's ``config.yaml`` (``root``, ``crop_size``).
        monitor: the metric the checkpoint callback tracked (``val/mIoU``).
        best_score: its best value.
        metrics: the last logged validation / test scores (from ``metrics.csv``), name -> value.
        hparams: the task's training hyper-parameters (loss, optimizer, lr, ...).
    """

    epoch: int | None = None
    global_step: int | None = None
    datamodule: str | None = None
    data_args: dict[str, Any] = field(default_factory=dict)
    monitor: str | None = None
    best_score: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    hparams: dict[str, Any] = field(default_factory=dict)


_HPARAM_KEYS = ("loss", "class_weights", "optimizer", "lr", "weight_decay", "weights", "eval_protocol")


def _as_float(value: Any) -> float | None:
    try:
        return float(value.item() if isinstance(value, torch.Tensor) else value)
    except (TypeError, ValueError):
        return None


def _last_metrics(csv_path: Path) -> dict[str, float]:
    """The last logged value of each ``val/*`` and ``test/*`` scalar of a CSVLogger ``metrics.csv``."""
    last: dict[str, float] = {}
    with csv_path.open() as fh:
        for row in csv.DictReader(fh):
            for key, value in row.items():
                if key and key.startswith(("val/", "test/")) and value:
                    number = _as_float(value)
                    if number is not None:
                        last[key] = number
    return last


def read_training_summary(ckpt: str | Path) -> TrainingSummary:
    """Read the training record of a Lightning ``.ckpt`` (``weights_only``; no Lightning import needed).

    Anything missing is left empty: a safetensors bundle or a foreign file gives an empty summary.
    """
    path = Path(ckpt)
    summary = TrainingSummary()
    if path.suffix != ".ckpt" or not path.is_file():
        return summary
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # not readable without pickle: the card simply says less
        return summary
    if not isinstance(data, Mapping):
        return summary
    summary.epoch = data.get("epoch")
    summary.global_step = data.get("global_step")
    hp = data.get("hyper_parameters") or {}
    summary.hparams = {k: hp[k] for k in _HPARAM_KEYS if k in hp}
    for key, value in data.items():
        if isinstance(key, str) and key.endswith("DataModule") and isinstance(value, Mapping):
            summary.datamodule = key
    for key, state in (data.get("callbacks") or {}).items():
        if str(key).startswith("ModelCheckpoint") and isinstance(state, Mapping) and state.get("monitor"):
            summary.monitor = str(state["monitor"])
            summary.best_score = _as_float(state.get("best_model_score"))
            break
    run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    config = run_dir / "config.yaml"
    if config.is_file():
        import yaml

        try:
            cfg = yaml.safe_load(config.read_text()) or {}
        except yaml.YAMLError:
            cfg = {}
        data_cfg = cfg.get("data") if isinstance(cfg, dict) else None
        if isinstance(data_cfg, dict):
            class_path = str(data_cfg.get("class_path", summary.datamodule or ""))
            summary.datamodule = class_path.split(".")[-1] or None
            summary.data_args = dict(data_cfg.get("init_args") or {})
    if (run_dir / "metrics.csv").is_file():
        summary.metrics = _last_metrics(run_dir / "metrics.csv")
    return summary


def _class_table(meta: ModelMeta) -> list[str]:
    rows = ["| id | class | colour |", "|---|---|---|"]
    for i, (name, rgb) in enumerate(zip(meta.class_names or [], meta.palette or [], strict=False)):
        rows.append(f"| {i} | {name} | `#{''.join(f'{int(c):02x}' for c in rgb)}` |")
    return rows


def model_card(meta: ModelMeta, summary: TrainingSummary | None = None, repo_id: str | None = None) -> str:
    """The ``README.md`` of a model folder: hub metadata, usage, architecture, classes, data and metrics.

    Args:
        meta: the model's metadata (from the bundle's ``config.json``).
        summary: the training record (:func:`read_training_summary`); ``None``: not known.
        repo_id: the hub repository the card is for (used in the examples; default ``<org>/<name>``).
    """
    s = summary or TrainingSummary()
    name = repo_id or "<org>/<name>"
    tags = ["hrseg", "semantic-segmentation", "image-segmentation", "pytorch"]
    tags += ["hrnet"] if meta.model.startswith("hrnet") else ["segmentation-models-pytorch"]
    if s.datamodule:
        tags.append(s.datamodule.removesuffix("DataModule").lower())
    lines = [
        "---",
        "library_name: hrseg",
        "pipeline_tag: image-segmentation",
        "tags:",
        *[f"- {t}" for t in tags],
        "---",
        "",
        f"# {meta.model} ({meta.num_classes} classes)",
        "",
        "A semantic segmentation model trained with hrseg (HRNetV2 semantic segmentation on PyTorch",
        "Lightning), saved as `config.json` (architecture and class metadata) + `model.safetensors`",
        "(weights, official HRNet key names).",
        "",
        "## Use",
        "",
        "```python",
        "import hrseg",
        f'seg = hrseg.Segmenter.from_pretrained("{name}")   # or a local folder',
        'mask = seg.predict("street.png")                   # (H, W) class ids',
        "```",
        "",
        f"or `hrseg predict --ckpt hf-hub:{name} --input images/ --output out/`; fine-tune from it with",
        f"`--model.weights hf-hub:{name}`.",
        "",
        "## Architecture",
        "",
        f"- model: `{meta.model}`" + (f", options `{meta.model_options}`" if meta.model_options else ""),
        f"- input: RGB normalized with mean {meta.mean} and std {meta.std}",
        f"- align_corners: {meta.align_corners}; ignore index: {meta.ignore_index}",
        "",
        "## Classes",
        "",
        *_class_table(meta),
        "",
        "## Training data",
        "",
    ]
    if s.datamodule:
        lines.append(f"- DataModule: `{s.datamodule}`")
        shown = {k: v for k, v in s.data_args.items() if k in ("root", "crop_size", "aug", "eval_size")}
        lines += [f"- {k}: `{v}`" for k, v in shown.items()]
    else:
        lines.append("- not recorded in the exported checkpoint")
    if s.hparams:
        lines.append("- recipe: " + ", ".join(f"{k}={v}" for k, v in s.hparams.items()))
    if s.epoch is not None or s.global_step is not None:
        lines.append(f"- checkpoint at epoch {s.epoch}, step {s.global_step}")
    lines += ["", "## Metrics", ""]
    if s.monitor and s.best_score is not None:
        lines.append(f"- best `{s.monitor}` (checkpoint callback): {s.best_score:.4f}")
    for key in ("val/mIoU", "val/mIoU_present", "val/pixel_acc", "test/mIoU", "test/mIoU_present"):
        if key in s.metrics:
            lines.append(f"- last `{key}`: {s.metrics[key]:.4f}")
    if lines[-1] == "":
        lines.append("- none recorded in the exported checkpoint")
    lines += [
        "",
        "`mIoU` averages over all classes (a class absent from ground truth and prediction counts 0, as",
        "in the official HRNet evaluation); `mIoU_present` over the classes present (cityscapesScripts'",
        "averaging).",
        "",
    ]
    return "\n".join(lines)
