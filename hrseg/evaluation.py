"""Score a folder of predicted label PNGs against a dataset's ground truth, as published numbers are scored.

Any registered label set (``--classes NAME``: ``cityscapes``, ``voc``, ... or a plugin's) defines the scoring:
its classes, its ignore value, and the raw id -> train id table of the ground-truth files
(:meth:`hrseg.metadata.LabelSet.lookup_table`: Cityscapes ``labelIds``, ADE20K's shifted ids); PASCAL-Context
59 and 60 classes are simply two label sets. Predictions hold the same raw ids as the ground truth (benchmark
files, ``pred_ids="raw"``) or train ids (``hrseg predict``'s ``<name>_trainIds.png``, ``pred_ids="train"``).

- Pairing: Cityscapes ground truth is ``<city>_<seq>_<frame>_gtFine_labelIds.png`` and its prediction
  ``<city>_<seq>_<frame>*.png`` (what ``hrseg predict --format cityscapes`` writes, as in cityscapesScripts);
  any other label set's ground truth is every ``<stem>.png`` under the folder and its prediction
  ``<stem>.png``, ``<stem>_trainIds.png`` or ``<stem>_labelIds.png`` under the prediction folder.
- hrseg's metric: one whole-split confusion matrix (:class:`hrseg.metrics.SegmentationMetrics`), ignored
  ground truth dropped; a predicted value that is no class (an ignored raw id, an id outside the classes)
  counts as a miss of the ground-truth class, as in cityscapesScripts. Reports ``mIoU`` (mean over all
  classes, the official HRNet number) and ``mIoU_present`` (over the classes with a non-empty union).
- Cityscapes only: cityscapesScripts' ``evalPixelLevelSemanticLabeling`` (``pip install cityscapesscripts``,
  imported only here); its class IoU averages over the classes present, so it equals hrseg's ``mIoU_present``.

The command is ``hrseg evaluate`` (:mod:`hrseg.commands.evaluate`).
"""

from __future__ import annotations

import contextlib
import io
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from hrseg.metadata import LabelSet

__all__ = [
    "GT_SUFFIX",
    "PRED_SUFFIXES",
    "PredIds",
    "evaluate_folder",
    "hrseg_scores",
    "match_predictions",
    "official_scores",
]

GT_SUFFIX = "_gtFine_labelIds.png"
#: what a prediction of ground truth ``<stem>.png`` may be called (outside Cityscapes)
PRED_SUFFIXES = (".png", "_trainIds.png", "_labelIds.png")
_KEY = re.compile(r"^(.+_\d{6}_\d{6})")

#: the values of prediction PNGs: the ground truth's own (raw) ids, or train ids ``0 .. C-1``
PredIds = Literal["raw", "train"]


def _is_cityscapes(labels: LabelSet) -> bool:
    return labels.name == "cityscapes"


def _pair(
    gts: Sequence[Path],
    keys: Sequence[str],
    index: dict[str, list[Path]],
    pred_dir: str | Path,
    expected: str,
) -> list[tuple[Path, Path]]:
    """One prediction per ground truth (``index``: key -> candidate predictions), or an error naming them."""
    pairs: list[tuple[Path, Path]] = []
    missing: list[str] = []
    for gt, key in zip(gts, keys, strict=True):
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
            f"(expected {expected}), e.g. {', '.join(missing[:3])}"
        )
    return pairs


def match_predictions(
    pred_dir: str | Path, gt_dir: str | Path, labels: LabelSet | str = "cityscapes"
) -> list[tuple[Path, Path]]:
    """Pair every ground-truth PNG under ``gt_dir`` with its one prediction under ``pred_dir`` (recursive).

    Cityscapes: ``*_gtFine_labelIds.png`` with ``<city>_<seq>_<frame>*.png``, as in cityscapesScripts. Other
    label sets: every ``<stem>.png`` with ``<stem>.png`` / ``<stem>_trainIds.png`` / ``<stem>_labelIds.png``.

    Raises:
        FileNotFoundError: no ground truth, or ground truth without a prediction (the first ones are named).
        ValueError: a ground truth with several candidate predictions, or two ground-truth files of one name.
    """
    labels = LabelSet.coerce(labels)
    preds = sorted(Path(pred_dir).rglob("*.png"))
    index: dict[str, list[Path]] = {}
    if _is_cityscapes(labels):
        gts = sorted(Path(gt_dir).rglob(f"*{GT_SUFFIX}"))
        if not gts:
            raise FileNotFoundError(f"{gt_dir}: no *{GT_SUFFIX} files (expected e.g. ROOT/gtFine/val)")
        for path in preds:
            match = _KEY.match(path.name)
            if match:
                index.setdefault(match[1], []).append(path)
        keys = [gt.name[: -len(GT_SUFFIX)] for gt in gts]
        return _pair(gts, keys, index, pred_dir, "<city>_<seq>_<frame>*.png")
    gts = sorted(Path(gt_dir).rglob("*.png"))
    if not gts:
        raise FileNotFoundError(f"{gt_dir}: no ground-truth *.png files")
    keys = [gt.stem for gt in gts]
    if len(set(keys)) < len(keys):
        twice = sorted({k for k in keys if keys.count(k) > 1})
        raise ValueError(f"{gt_dir}: several ground-truth files named {', '.join(twice[:3])}.png")
    for path in preds:
        for suffix in PRED_SUFFIXES:
            if path.name.endswith(suffix):
                index.setdefault(path.name[: -len(suffix)], []).append(path)
    return _pair(gts, keys, index, pred_dir, "<stem>.png, <stem>_trainIds.png or <stem>_labelIds.png")


def _read_ids(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        if img.mode not in ("L", "P", "I", "I;16"):
            raise ValueError(f"{path}: expected a single-channel label-id PNG, got mode {img.mode}")
        return np.asarray(img, dtype=np.int64)


def hrseg_scores(
    pairs: Sequence[tuple[Path, Path]], labels: LabelSet | str = "cityscapes", pred_ids: PredIds = "raw"
) -> dict[str, Any]:
    """Whole-split scores with hrseg's metric of (prediction, ground truth) label PNG pairs.

    Args:
        pairs: (prediction, ground truth) paths, e.g. from :func:`match_predictions`.
        labels: the label set (or its registered name): classes, ignore value, raw id -> train id table.
        pred_ids: ``"raw"``: predictions hold the ground truth's ids (mapped through the same table);
            ``"train"``: train ids. Either way a value that is no class counts as a miss.

    Returns:
        ``mIoU``, ``mIoU_present``, ``pixel_acc``, ``mean_acc`` (floats), ``iou`` (class name -> IoU) and
        ``images`` (the pair count).

    Raises:
        ValueError: sizes differ, or a ground-truth value is no label id of the set (the file is named).
    """
    import torch

    from hrseg.metrics import SegmentationMetrics, confusion_matrix_scores

    labels = LabelSet.coerce(labels)
    if pred_ids not in ("raw", "train"):
        raise ValueError(f"pred_ids must be 'raw' or 'train', got {pred_ids!r}")
    c = labels.num_classes
    lut = labels.lookup_table().astype(np.int64)  # raw id -> train id (or ignore); -1: not a label id
    void, ignored = c, c + 1  # an extra prediction column for non-class values; a ground-truth value to skip
    gt_lut = np.where(lut == labels.ignore_index, ignored, lut)
    if pred_ids == "raw":
        pred_lut = np.where((lut >= 0) & (lut < c), lut, void)
    else:
        pred_lut = np.full(max(len(lut), c), void, dtype=np.int64)
        pred_lut[:c] = np.arange(c)
    pred_lut = np.append(pred_lut, void)  # values past the table: no class either
    what = f"{labels.name or 'the label set'}'s"
    metrics = SegmentationMetrics(c + 1, ignore_index=ignored)
    for pred_path, gt_path in pairs:
        pred, gt = _read_ids(pred_path), _read_ids(gt_path)
        if pred.shape != gt.shape:
            raise ValueError(
                f"{pred_path}: size {pred.shape} differs from its ground truth {gt_path} {gt.shape}"
            )
        train = gt_lut[np.clip(gt, 0, len(lut) - 1)]
        bad = (gt >= len(lut)) | (train < 0)
        if bad.any():
            values = ", ".join(str(v) for v in np.unique(gt[bad])[:5])
            raise ValueError(f"{gt_path}: values {values} are no label ids of {what} ground truth files")
        metrics.update(
            torch.from_numpy(pred_lut[np.clip(pred, 0, len(pred_lut) - 1)]), torch.from_numpy(train)
        )
    # the void row is empty; the void column holds predicted values that are no class: misses of the truth
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


def evaluate_folder(
    pred_dir: str | Path,
    gt_dir: str | Path,
    official: bool | None = None,
    labels: LabelSet | str = "cityscapes",
    pred_ids: PredIds = "raw",
) -> dict[str, Any]:
    """Score a prediction folder: ``{"labels": name, "hrseg": {...}, "cityscapesScripts": {...} | None}``.

    Args:
        pred_dir: the predictions (see :func:`match_predictions` for their names).
        gt_dir: the ground truth in the dataset's own ids.
        official: also run cityscapesScripts (Cityscapes only); None: for Cityscapes.
        labels: the label set or its registered name.
        pred_ids: ``"raw"`` (the ground truth's ids) or ``"train"`` (train ids) in the predictions.

    Raises:
        ValueError: ``official=True`` for another label set than Cityscapes, or what the scorers raise.
    """
    labels = LabelSet.coerce(labels)
    if official and not _is_cityscapes(labels):
        raise ValueError(f"cityscapesScripts scores Cityscapes only, not {labels.name or 'this label set'}")
    if official and pred_ids != "raw":
        raise ValueError("cityscapesScripts reads label ids: score train-id predictions with official=False")
    pairs = match_predictions(pred_dir, gt_dir, labels)
    run_official = _is_cityscapes(labels) and pred_ids == "raw" if official is None else official
    return {
        "labels": labels.name,
        "hrseg": hrseg_scores(pairs, labels, pred_ids),
        "cityscapesScripts": official_scores(pairs) if run_official else None,
    }
