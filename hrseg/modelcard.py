"""The model card (``README.md``) of a shareable hrseg model folder (``hrseg export --format hub``).

The card is generated from the :class:`~hrseg.checkpoint.ModelMeta` (architecture, classes, normalization)
and, when the export starts from a Lightning ``.ckpt``, from what the run recorded: the checkpoint callback's
monitored score, epoch and step, the DataModule, and the run's ``config.yaml`` / ``metrics.csv`` beside the
``checkpoints/`` folder when they are there. It is a ``huggingface_hub.ModelCard`` whose metadata
(:class:`~huggingface_hub.ModelCardData`: library, license, tags, datasets, metrics and a ``model-index`` of
:class:`~huggingface_hub.EvalResult` built from the checkpoint's validation scores) the Hugging Face Hub
renders as the model's evaluation results. This module imports only :mod:`hrseg.checkpoint`.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from hrseg.checkpoint import CheckpointError, read_lightning_record
from hrseg.metadata import ModelMeta

__all__ = [
    "DATASET_LICENSES",
    "DEFAULT_LICENSE",
    "TrainingSummary",
    "model_card",
    "read_training_summary",
    "validation_scores",
]

#: The card's ``license`` unless the training data has its own terms (:data:`DATASET_LICENSES`) or the caller
#: names one: hrseg's own (MIT).
DEFAULT_LICENSE = "mit"
#: DataModule -> the hub license fields its data imposes on weights trained on it (``license: other`` with a
#: name and link, as the hub spec asks for licenses outside its list).
DATASET_LICENSES = {
    "CityscapesDataModule": {
        "license": "other",
        "license_name": "cityscapes-terms-of-use",  # non-commercial research only
        "license_link": "https://www.cityscapes-dataset.com/license/",
    },
}


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
        metrics: the last validation / test scores logged up to the checkpoint's step (``metrics.csv``).
        hparams: the task's training hyper-parameters (loss, optimizer, lr, ...).
        is_best: the checkpoint is the callback's best model, so ``best_score`` is its own score.
        config: the run's ``config.yaml`` when it has a ``data:`` section (it rebuilds the DataModule).
    """

    epoch: int | None = None
    global_step: int | None = None
    datamodule: str | None = None
    data_args: dict[str, Any] = field(default_factory=dict)
    monitor: str | None = None
    best_score: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    hparams: dict[str, Any] = field(default_factory=dict)
    is_best: bool = False
    config: Path | None = None


# the task's groups (dicts) and its pretrained weights: the recipe a model card shows
_HPARAM_KEYS = ("loss", "optimizer", "eval_protocol", "weights")


def _as_float(value: Any) -> float | None:
    try:
        return float(value.item() if isinstance(value, torch.Tensor) else value)
    except (TypeError, ValueError):
        return None


def _last_metrics(csv_path: Path, max_step: int | None = None) -> dict[str, float]:
    """The last logged value of each ``val/*`` and ``test/*`` scalar of a CSVLogger ``metrics.csv``.

    ``max_step``: only rows logged up to that step (the checkpoint's), so an earlier (best) checkpoint is
    described by its own validation, not by the run's last one.
    """
    last: dict[str, float] = {}
    with csv_path.open() as fh:
        for row in csv.DictReader(fh):
            step = _as_float(row.get("step"))
            if max_step is not None and step is not None and step > max_step:
                continue
            for key, value in row.items():
                if key and key.startswith(("val/", "test/")) and value:
                    number = _as_float(value)
                    if number is not None:
                        last[key] = number
    return last


def _recipe_value(value: Any) -> str:
    """``name=sgd, lr=0.01`` for a group (unset fields left out), the value itself otherwise."""
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items() if v is not None)
    return f"`{value}`"


def read_training_summary(ckpt: str | Path) -> TrainingSummary:
    """Read the training record of a Lightning ``.ckpt`` (``weights_only``; no Lightning import needed).

    Anything missing is left empty: a safetensors bundle or a foreign file gives an empty summary.
    """
    path = Path(ckpt)
    summary = TrainingSummary()
    if path.suffix != ".ckpt" or not path.is_file():
        return summary
    try:
        data = read_lightning_record(path)
    except CheckpointError:  # not readable without pickle: the card simply says less
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
            best_path = str(state.get("best_model_path") or "")
            summary.is_best = bool(best_path) and Path(best_path).name == path.name
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
            summary.config = config
    if (run_dir / "metrics.csv").is_file():
        summary.metrics = _last_metrics(run_dir / "metrics.csv", summary.global_step)
    return summary


def _class_table(meta: ModelMeta) -> list[str]:
    rows = ["| id | class | colour |", "|---|---|---|"]
    for i, (name, rgb) in enumerate(
        zip(meta.labels.class_names or [], meta.labels.palette or [], strict=False)
    ):
        rows.append(f"| {i} | {name} | `#{''.join(f'{int(c):02x}' for c in rgb)}` |")
    return rows


#: DataModule -> (hub dataset id, readable name) for the card's ``datasets`` and ``model-index``.
_DATASETS = {
    "CityscapesDataModule": ("cityscapes", "Cityscapes"),
    "VOCDataModule": ("pascal_voc", "PASCAL VOC 2012"),
    "DemoDataModule": ("hrseg-synthetic-streets", "hrseg generated street scenes"),
    "FolderDataModule": ("imagefolder", "images and masks in a folder"),
}
#: Logged score -> (hub metric type, readable name), in the order the model-index lists them.
_METRICS = {
    "val/mIoU": ("mean_iou", "mIoU"),
    "val/mIoU_present": ("mean_iou", "mIoU (classes present)"),
    "val/pixel_acc": ("accuracy", "pixel accuracy"),
}
# The metadata header's key order: what a reader of the README looks for first.
_HEADER_ORDER = [
    *("library_name", "license", "license_name", "license_link"),
    *("pipeline_tag", "tags", "datasets", "metrics"),
]


def validation_scores(summary: TrainingSummary) -> dict[str, float]:
    """The checkpoint's validation scores (mIoU, mIoU over present classes, pixel accuracy).

    The last ``val/*`` values logged up to the checkpoint's step and, for the checkpoint callback's best
    model, its monitored best score (the score of exactly these weights).
    """
    scores = {k: v for k, v in summary.metrics.items() if k in _METRICS}
    if summary.is_best and summary.monitor in _METRICS and summary.best_score is not None:
        scores[summary.monitor] = summary.best_score
    return scores


def _dataset(summary: TrainingSummary) -> tuple[str, str] | None:
    if not summary.datamodule:
        return None
    return _DATASETS.get(
        summary.datamodule, (summary.datamodule.removesuffix("DataModule").lower(), summary.datamodule)
    )


def _card_data(meta: ModelMeta, s: TrainingSummary, license: str | None) -> ModelCardData:
    """The hub metadata: library, license, tags, datasets, metrics and the model-index of the scores."""
    terms: dict[str, str] = {"license": license} if license else {}
    terms = terms or DATASET_LICENSES.get(s.datamodule or "", {"license": DEFAULT_LICENSE})
    tags = ["hrseg", "semantic-segmentation", "image-segmentation", "pytorch"]
    tags += ["hrnet"] if meta.model.startswith("hrnet") else ["segmentation-models-pytorch"]
    if s.datamodule:
        tags.append(s.datamodule.removesuffix("DataModule").lower())
    dataset = _dataset(s)
    scores = validation_scores(s)
    results = [
        EvalResult(
            task_type="image-segmentation",
            task_name="Semantic segmentation",
            dataset_type=dataset[0],
            dataset_name=dataset[1],
            dataset_split="validation",
            metric_type=_METRICS[key][0],
            metric_name=_METRICS[key][1],
            metric_value=round(value, 4),
        )
        for key, value in scores.items()
        if dataset is not None
    ]
    return ModelCardData(
        library_name="hrseg",
        pipeline_tag="image-segmentation",
        tags=tags,
        datasets=[dataset[0]] if dataset else None,
        metrics=sorted({_METRICS[key][0] for key in scores}) or None,
        model_name=meta.model,
        eval_results=results or None,
        license=terms.get("license"),
        license_name=terms.get("license_name"),
        license_link=terms.get("license_link"),
    )


def model_card(
    meta: ModelMeta,
    summary: TrainingSummary | None = None,
    repo_id: str | None = None,
    license: str | None = None,
) -> ModelCard:
    """The model card (``README.md``) of a model folder: hub metadata, use, architecture, classes, scores.

    Args:
        meta: the model's metadata (from the folder's ``config.json``).
        summary: the training record (:func:`read_training_summary`); ``None``: not known.
        repo_id: the hub repository the card is for (used in the examples; default ``<org>/<name>``).
        license: the weights' license, a hub license id (default: the training data's terms,
            :data:`DATASET_LICENSES`, else :data:`DEFAULT_LICENSE`).

    Returns:
        A ``huggingface_hub.ModelCard``; ``str(card)`` is the README text, ``card.save(path)`` writes it.
    """
    s = summary or TrainingSummary()
    name = repo_id or "<org>/<name>"
    header = _card_data(meta, s, license).to_yaml(original_order=_HEADER_ORDER)
    lines = [
        "---",
        header,
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
        f"or `hrseg predict --ckpt_path hf-hub:{name} --input images/ --output out/`; fine-tune from it with",
        f"`--model.weights hf-hub:{name}`.",
        "",
        "## Architecture",
        "",
        f"- model: `{meta.model}`" + (f", options `{meta.model_options}`" if meta.model_options else ""),
        f"- input: RGB normalized with mean {meta.mean} and std {meta.std}",
        f"- align_corners: {meta.align_corners}; ignore index: {meta.labels.ignore_index}",
        f"- predicts with the protocol it was validated with: {meta.eval_protocol.describe()}",
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
        lines += [f"- {k}: {_recipe_value(v)}" for k, v in s.hparams.items()]
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
        "averaging). The metadata header's `model-index` lists this checkpoint's validation scores (the",
        "best monitored score when it is the checkpoint callback's best model, else the last logged ones).",
        "",
    ]
    return ModelCard("\n".join(lines))
