"""Score Cityscapes predictions with hrseg's metric and with the official evaluator (cityscapesScripts).

The predictions are what ``hrseg predict --format cityscapes`` writes (or any submission): label-id PNGs
named ``<city>_<seq>_<frame>*.png``, one per ground-truth ``<city>_<seq>_<frame>_gtFine_labelIds.png``.
Both scorers read the same pairs:

- hrseg: label ids -> train ids through the official table, one whole-split confusion matrix
  (:class:`hrseg.metrics.SegmentationMetrics`); predicted ids outside the 19 classes count as misses of the
  ground-truth class, as in cityscapesScripts. Reports ``mIoU`` (mean over all 19 classes, the official HRNet
  number) and ``mIoU_present`` (over the classes with a non-empty union);
- cityscapesScripts' ``evalPixelLevelSemanticLabeling`` (``pip install cityscapesscripts``, imported only
  here): its class IoU averages over the classes present, so it equals hrseg's ``mIoU_present``.

The command is ``hrseg evaluate`` (:mod:`hrseg.commands.evaluate`).
"""

from __future__ import annotations

import contextlib
import io
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hrseg.metadata import get_label_set

__all__ = ["GT_SUFFIX", "evaluate_folder", "hrseg_scores", "match_predictions", "official_scores"]

GT_SUFFIX = "_gtFine_labelIds.png"
_KEY = re.compile(r"^(.+_\d{6}_\d{6})")


def match_predictions(pred_dir: str | Path, gt_dir: str | Path) -> list[tuple[Path, Path]]:
    """Pair every ``*_gtFine_labelIds.png`` under ``gt_dir`` with its one prediction under ``pred_dir``.

    A prediction matches ``<city>_<seq>_<frame>*.png`` (searched recursively), as in cityscapesScripts.

    Raises:
        FileNotFoundError: no ground truth, or ground truth without a prediction (the first ones are named).
        ValueError: a ground truth with several candidate predictions.
    """
    gts = sorted(Path(gt_dir).rglob(f"*{GT_SUFFIX}"))
    if not gts:
        raise FileNotFoundError(f"{gt_dir}: no *{GT_SUFFIX} files (expected e.g. ROOT/gtFine/val)")
    index: dict[str, list[Path]] = {}
    for path in sorted(Path(pred_dir).rglob("*.png")):
        match = _KEY.match(path.name)
        if match:
            index.setdefault(match[1], []).append(path)
    pairs: list[tuple[Path, Path]] = []
    missing: list[str] = []
    for gt in gts:
        key = gt.name[: -len(GT_SUFFIX)]
        found = index.get(key, [])
        if not found:
            missing.append(key)
        elif len(found) > 1:
            raise ValueError(f"several predictions for {key}: {', '.join(str(p) for p in found)}")
        else:
            pairs.append((found[0], gt))
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} of {len(gts)} ground-truth images have no prediction in {pred_dir} "
            f"(expected <city>_<seq>_<frame>*.png), e.g. {', '.join(missing[:3])}"
        )
    return pairs


def _read_ids(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        if img.mode not in ("L", "P", "I", "I;16"):
            raise ValueError(f"{path}: expected a single-channel label-id PNG, got mode {img.mode}")
        return np.asarray(img, dtype=np.int64)


def hrseg_scores(pairs: Sequence[tuple[Path, Path]]) -> dict[str, Any]:
    """Whole-split scores with hrseg's metric of (prediction, ground truth) label-id PNG pairs.

    Returns:
        ``mIoU``, ``mIoU_present``, ``pixel_acc``, ``mean_acc`` (floats), ``iou`` (class name -> IoU) and
        ``images`` (the pair count).

    Raises:
        ValueError: sizes differ, or a ground-truth value is no Cityscapes label id (the file is named).
    """
    import torch

    from hrseg.metrics import SegmentationMetrics, confusion_matrix_scores

    labels = get_label_set("cityscapes")
    c = labels.num_classes
    lut = labels.lookup_table()[:256].astype(np.int64)  # label id -> train id (or ignore); -1: not a label id
    pred_lut = np.where((lut >= 0) & (lut < c), lut, c)  # predicted non-class ids: an extra "void" column
    metrics = SegmentationMetrics(c + 1, ignore_index=labels.ignore_index)
    for pred_path, gt_path in pairs:
        pred, gt = _read_ids(pred_path), _read_ids(gt_path)
        if pred.shape != gt.shape:
            raise ValueError(
                f"{pred_path}: size {pred.shape} differs from its ground truth {gt_path} {gt.shape}"
            )
        if gt.max() > 255 or lut[gt].min() < 0:
            raise ValueError(f"{gt_path}: values that are no Cityscapes label id")
        metrics.update(torch.from_numpy(pred_lut[np.clip(pred, 0, 255)]), torch.from_numpy(lut[gt]))
    # the void row is empty; the void column holds predicted ids that are no class: misses of the truth
    scores = confusion_matrix_scores(metrics.compute()["confmat"][:c], dtype=torch.float64)
    return {
        **{key: float(scores[key]) for key in ("mIoU", "mIoU_present", "pixel_acc", "mean_acc")},
        "iou": {name: float(v) for name, v in zip(labels.class_names, scores["iou"].tolist(), strict=True)},
        "images": len(pairs),
    }


def official_scores(pairs: Sequence[tuple[Path, Path]], quiet: bool = True) -> dict[str, Any]:
    """Scores of cityscapesScripts' ``evalPixelLevelSemanticLabeling`` on the same pairs.

    Returns:
        ``mIoU_classes`` (its "Score Average" over classes, i.e. over the classes present), ``iou`` (class
        name -> IoU, NaN for classes without ground truth or prediction), ``iIoU_classes`` when the
        ``*_gtFine_instanceIds.png`` files are there, and ``mIoU_categories``.

    Raises:
        ImportError: cityscapesScripts is not installed (``pip install cityscapesscripts``).
        RuntimeError: the evaluator stopped (its message is included).
    """
    try:
        from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as ev
    except ImportError as err:
        raise ImportError(
            "the official Cityscapes evaluator needs cityscapesScripts: pip install cityscapesscripts "
            "(or pass --no-official)"
        ) from err
    args = ev.args
    args.evalInstLevelScore = all(
        Path(str(gt).replace("labelIds", "instanceIds")).is_file() for _, gt in pairs
    )
    args.evalPixelAccuracy = False
    args.JSONOutput = False
    args.quiet = quiet
    args.colorized = False
    args.bold = args.nocol = ""
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out if quiet else sys.stdout):
            result = ev.evaluateImgLists([str(p) for p, _ in pairs], [str(g) for _, g in pairs], args)
    except SystemExit as err:  # its printError() exits
        raise RuntimeError(f"cityscapesScripts stopped: {out.getvalue().strip()[-500:]}") from err
    return {
        "mIoU_classes": float(result["averageScoreClasses"]),
        "iou": {name: float(v) for name, v in result["classScores"].items()},
        "iIoU_classes": float(result["averageScoreInstClasses"]) if args.evalInstLevelScore else None,
        "mIoU_categories": float(result["averageScoreCategories"]),
    }


def evaluate_folder(pred_dir: str | Path, gt_dir: str | Path, official: bool = True) -> dict[str, Any]:
    """Both scorers on a prediction folder: ``{"hrseg": {...}, "cityscapesScripts": {...} | None}``."""
    pairs = match_predictions(pred_dir, gt_dir)
    return {
        "hrseg": hrseg_scores(pairs),
        "cityscapesScripts": official_scores(pairs) if official else None,
    }
