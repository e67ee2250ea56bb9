"""Segmentation metrics from one confusion matrix accumulated over the whole split.

The official protocol (docs/reference/protocol.md) sums a confusion matrix over all images of the split, drops
ignore pixels, and averages per-class IoU over ALL classes: a class absent from both the predictions and the
ground truth has ``TP + FP + FN = 0`` and counts as IoU 0 (the official code divides by ``max(1, union)``).
That is torchmetrics' ``MulticlassJaccardIndex(average=None, zero_division=0)`` followed by a plain mean;
torchmetrics' own ``average="macro"`` instead skips such classes, which would report a different number.

:class:`SegmentationMetrics` is a torchmetrics ``Metric`` (so DDP sums the matrix across processes) whose
update never leaves the device: ignore pixels are routed with ``torch.where`` and counted with
``index_add_`` into a fixed-size matrix, no boolean indexing or ``.item()``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from hrseg.metadata import IGNORE_INDEX

__all__ = ["SegmentationMetrics", "confusion_matrix_scores", "metric_key", "scores_to_log_dict"]


def confusion_matrix_scores(confmat: Tensor, dtype: torch.dtype = torch.float32) -> dict[str, Tensor]:
    """Official scores from a confusion matrix (rows: ground truth, columns: prediction).

    The one place every mIoU of the project is computed: training and evaluation metrics, ``hrseg evaluate``,
    the int8 accuracy report and the benchmarks.

    Args:
        confmat: ``(C, C)``, or ``(C, C + k)`` when predictions may also fall outside the C classes (the k
            extra "void" columns, e.g. a Cityscapes label id that is no training class): such pixels count
            as misses of their ground-truth class and as predictions of none.
        dtype: of the returned scores (computed in float64; reports of whole splits keep float64).

    Returns:
        ``iou`` (C,), ``acc`` (C,) per-class recall, ``mIoU``, ``pixel_acc``, ``mean_acc`` (scalars).
        Classes with an empty denominator score 0, as in the official evaluation. Also ``mIoU_present``:
        the mean over classes seen in the ground truth or the predictions only (how cityscapesScripts
        averages, skipping classes with an empty union); it equals ``mIoU`` whenever every class occurs,
        is informative on data that lacks some classes (e.g. the demo scenes), and is 0 when no class occurs
        at all (an empty split), like every other score with an empty denominator.
    """
    if confmat.ndim != 2 or confmat.shape[1] < confmat.shape[0]:
        raise ValueError(f"confusion matrix must be (C, C + k), got shape {tuple(confmat.shape)}")
    c = confmat.shape[0]
    cm = confmat.double()
    tp = cm[:, :c].diagonal()
    gt = cm.sum(dim=1)  # labelled pixels per class, void predictions included
    pred = cm[:, :c].sum(dim=0)
    union = gt + pred - tp
    iou = tp / union.clamp(min=1)
    acc = tp / gt.clamp(min=1)
    present = (union > 0).double()
    scores = {
        "iou": iou,
        "acc": acc,
        "mIoU": iou.mean(),
        "mIoU_present": (iou * present).sum() / present.sum().clamp(min=1),
        "pixel_acc": tp.sum() / gt.sum().clamp(min=1),
        "mean_acc": acc.mean(),
    }
    return {key: value.to(dtype) for key, value in scores.items()}


class SegmentationMetrics(Metric):
    """mIoU, per-class IoU, pixel accuracy and mean accuracy over a whole split.

    Args:
        num_classes: number of classes ``C``.
        ignore_index: label value skipped in the ground truth.
        **kwargs: forwarded to :class:`torchmetrics.Metric` (e.g. ``sync_on_compute``).

    ``update(preds, target)`` takes label maps ``(B, H, W)`` or logits ``(B, C, H, W)`` (arg-maxed) and the
    ground truth ``(B, H, W)``. A ground-truth value outside ``[0, C)`` that is not ``ignore_index`` is a data
    bug: such pixels are counted on the device and ``compute`` raises, instead of dropping them silently.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    confmat: Tensor
    invalid: Tensor

    def __init__(self, num_classes: int, ignore_index: int | None = IGNORE_INDEX, **kwargs: Any) -> None:
        """Create the ``(C, C)`` int64 state, summed across processes."""
        super().__init__(**kwargs)
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.add_state(
            "confmat", default=torch.zeros(num_classes, num_classes, dtype=torch.long), dist_reduce_fx="sum"
        )
        self.add_state("invalid", default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add one batch to the confusion matrix (on the device, no host sync)."""
        if preds.ndim == target.ndim + 1:
            preds = preds.argmax(dim=1)
        if preds.shape != target.shape:
            raise ValueError(f"prediction shape {tuple(preds.shape)} != target shape {tuple(target.shape)}")
        preds = preds.reshape(-1).long()
        target = target.reshape(-1).long()
        c = self.num_classes
        labelled = (
            target != self.ignore_index if self.ignore_index is not None else torch.ones_like(target).bool()
        )
        in_range = (target >= 0) & (target < c)
        self.invalid += (labelled & ~in_range).sum()
        # ignore (and out-of-range) pixels go to an extra bin that is never read
        index = torch.where(labelled & in_range, target * c + preds, torch.full_like(target, c * c))
        if torch.are_deterministic_algorithms_enabled():
            counts = torch.bincount(index, minlength=c * c + 1)  # deterministic, but syncs on CUDA
        else:
            counts = torch.zeros(c * c + 1, dtype=torch.long, device=index.device)
            counts.index_add_(0, index, torch.ones_like(index))
        self.confmat += counts[: c * c].view(c, c)

    def compute(self) -> dict[str, Tensor]:
        """Scores of the accumulated matrix (see :func:`confusion_matrix_scores`) plus ``confmat`` itself."""
        invalid = int(self.invalid)
        if invalid:
            raise ValueError(
                f"{invalid} ground-truth pixels hold a label outside [0, {self.num_classes}) that is not "
                f"ignore_index={self.ignore_index}; map raw label values to train ids before evaluating"
            )
        scores = confusion_matrix_scores(self.confmat)
        scores["confmat"] = self.confmat.clone()
        return scores


def metric_key(class_name: str) -> str:
    """A logging-safe key for a class name: ``"traffic light"`` -> ``"traffic_light"``."""
    key = re.sub(r"[^0-9A-Za-z_]+", "_", class_name.strip()).strip("_")
    return key or "class"


def scores_to_log_dict(
    scores: dict[str, Tensor], prefix: str, class_names: Sequence[str] | None = None
) -> dict[str, Tensor]:
    """Flatten scores into scalar entries ``{prefix}/mIoU``, ``{prefix}/iou_<class>`` ... for ``log_dict``."""
    out = {
        f"{prefix}/mIoU": scores["mIoU"],
        f"{prefix}/mIoU_present": scores["mIoU_present"],
        f"{prefix}/pixel_acc": scores["pixel_acc"],
        f"{prefix}/mean_acc": scores["mean_acc"],
    }
    iou = scores["iou"]
    names = list(class_names) if class_names is not None else [str(i) for i in range(iou.numel())]
    if len(names) != iou.numel():
        raise ValueError(f"{len(names)} class names for {iou.numel()} classes")
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        key = metric_key(name)
        if key in seen:  # two names that sanitise alike must not overwrite each other
            key = f"{key}_{i}"
        seen[key] = i
        out[f"{prefix}/iou_{key}"] = iou[i]
    return out
