"""A reduced-precision model's accuracy against fp32: mIoU (through :mod:`hrseg.metrics`) and agreement."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from hrseg.images import to_image_tensor
from hrseg.inference.protocol import class_argmax, infer
from hrseg.metadata import IGNORE_INDEX, ModelMeta
from hrseg.metrics import SegmentationMetrics

__all__ = ["AccuracyReport", "accuracy_report", "label_map_predictor"]


@dataclass
class AccuracyReport:
    """A candidate model's accuracy against the fp32 reference on a validation set.

    ``miou_reference`` / ``miou`` are mIoU against the ground truth masks (over the classes present in the
    masks or either prediction; against the reference's label maps when no masks are given, so
    ``miou_reference`` is 1.0 then); ``agreement`` is the fraction of pixels where both label maps agree;
    ``source`` says which images they are (e.g. ``"the val split of configs/x.yaml"``; empty: not said).
    """

    images: int
    pixels: int
    miou_reference: float
    miou: float
    agreement: float
    against: str
    source: str = ""

    @property
    def drop(self) -> float:
        """The mIoU lost against the reference (positive = worse)."""
        return self.miou_reference - self.miou

    def summary(self) -> str:
        """One line for logs and the command."""
        return (
            f"mIoU {self.miou:.4f} vs fp32 {self.miou_reference:.4f} (drop {self.drop:+.4f}, against "
            f"{self.against}), pixel agreement {100 * self.agreement:.2f} % over {self.images} images"
            + (f" of {self.source}" if self.source else "")
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain values (JSON), with the drop."""
        return {**asdict(self), "drop": self.drop}


def accuracy_report(
    reference: Callable[[Any], Any],
    candidate: Callable[[Any], Any],
    images: Iterable[Any],
    masks: Iterable[Any] | None = None,
    num_classes: int | None = None,
    ignore_index: int | None = IGNORE_INDEX,
    source: str = "",
) -> AccuracyReport:
    """Compare two label-map predictors (e.g. ``Segmenter.predict`` fp32 and int8) on a validation set.

    Both mIoUs are ``mIoU_present`` of one :class:`~hrseg.metrics.SegmentationMetrics` confusion matrix each,
    summed over the whole set (cityscapesScripts' average over the classes present).

    Args:
        reference: image -> ``(H, W)`` label map (the fp32 model).
        candidate: image -> ``(H, W)`` label map (the reduced-precision model).
        images: the validation images (anything the predictors take).
        masks: ground truth ``(H, W)`` label maps in the same order; None compares with the reference.
        num_classes: class count (default: from the label maps).
        ignore_index: ground-truth label not scored.
        source: which images these are, for the report's summary.

    Raises:
        ValueError: no image, or a ground-truth label outside the classes that is not ``ignore_index``.
    """
    mask_list = list(masks) if masks is not None else None
    triples: list[tuple[Tensor, Tensor, Tensor]] = []
    for i, img in enumerate(images):
        ref, got = _label_tensor(reference(img)), _label_tensor(candidate(img))
        target = _label_tensor(mask_list[i]) if mask_list is not None else ref
        triples.append((ref, got, target))
    if not triples:
        raise ValueError("accuracy_report needs at least one image")
    n = num_classes or int(max(max(int(r.max()), int(g.max())) for r, g, _ in triples)) + 1
    scores_ref = SegmentationMetrics(n, ignore_index)
    scores_got = SegmentationMetrics(n, ignore_index)
    agree = total = 0
    for ref, got, target in triples:
        agree += int((ref == got).sum())
        total += ref.numel()
        scores_ref.update(ref[None], target[None])
        scores_got.update(got[None], target[None])
    return AccuracyReport(
        images=len(triples),
        pixels=total,
        miou_reference=float(scores_ref.compute()["mIoU_present"]),
        miou=float(scores_got.compute()["mIoU_present"]),
        agreement=agree / max(1, total),
        against="ground truth" if mask_list is not None else "fp32 label maps",
        source=source,
    )


def label_map_predictor(model: nn.Module, meta: ModelMeta) -> Callable[[Any], np.ndarray]:
    """Image -> ``(H, W)`` int64 train ids of ``model`` on the whole image, for :func:`accuracy_report`.

    The image goes through :func:`~hrseg.images.to_image_tensor` and :meth:`ModelMeta.normalize`, the
    network through :func:`~hrseg.inference.infer`: the path ``Segmenter.predict`` takes by default.
    """
    in_channels = int(getattr(model, "in_channels", 3) or 3)
    size_divisor = int(getattr(model, "size_divisor", 1))

    def predict(image: Any) -> np.ndarray:
        x, _ = to_image_tensor(image, in_channels)
        with torch.inference_mode():
            logits = infer(
                model,
                meta.normalize(x),
                num_classes=meta.num_classes,
                align_corners=meta.align_corners,
                output="logits",
                size_divisor=size_divisor,
            )
        return class_argmax(logits)[0].cpu().numpy().astype(np.int64)

    return predict


def _label_tensor(x: Any) -> Tensor:
    return (
        x.detach().cpu().long() if isinstance(x, Tensor) else torch.from_numpy(np.asarray(x, dtype=np.int64))
    )
