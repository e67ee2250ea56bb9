"""``hrseg evaluate``: score predictions of any label set with hrseg's metric (Cityscapes: also the official).

    hrseg predict --ckpt_path best.ckpt --input ROOT/leftImg8bit/val --output preds/ --format cityscapes
    hrseg evaluate --pred preds/ --gt ROOT/gtFine/val [--json scores.json]
    hrseg predict --ckpt_path voc.ckpt --input VOC2012/JPEGImages --output preds/ --no-color
    hrseg evaluate --classes voc --pred-ids train --pred preds/ --gt VOC2012/SegmentationClass

The scoring is :mod:`hrseg.evaluation`; this module parses arguments and prints the table.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hrseg.commands.options import CommandParser
from hrseg.evaluation import evaluate_folder

__all__ = ["main"]


def _print_table(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    ours, theirs = result["hrseg"], result["cityscapesScripts"]
    name = result.get("labels") or "label set"
    table = Table(title=f"{name} evaluation ({ours['images']} images)")
    table.add_column("class")
    table.add_column("IoU (hrseg)", justify="right")
    if theirs is not None:
        table.add_column("IoU (cityscapesScripts)", justify="right")
    for cls, value in ours["iou"].items():
        row = [cls, f"{value:.4f}"]
        if theirs is not None:
            other = theirs["iou"].get(cls, float("nan"))
            row.append("n/a" if math.isnan(other) else f"{other:.4f}")
        table.add_row(*row)
    table.add_section()
    blank = [""] if theirs is not None else []
    table.add_row(f"mIoU (all {len(ours['iou'])} classes)", f"{ours['mIoU']:.4f}", *blank)
    table.add_row(
        "mIoU (classes present)",
        f"{ours['mIoU_present']:.4f}",
        *([f"{theirs['mIoU_classes']:.4f}"] if theirs is not None else []),
    )
    table.add_row("pixel acc", f"{ours['pixel_acc']:.4f}", *blank)
    Console().print(table)
    if theirs is not None:
        gap = abs(ours["mIoU_present"] - theirs["mIoU_classes"])
        print(f"|hrseg mIoU_present - cityscapesScripts class average| = {gap:.2e}")
        if theirs["iIoU_classes"] is not None:
            print(f"cityscapesScripts iIoU (classes): {theirs['iIoU_classes']:.4f}")
        print(f"cityscapesScripts IoU (categories): {theirs['mIoU_categories']:.4f}")


def _parser() -> argparse.ArgumentParser:
    p = CommandParser(
        prog="hrseg evaluate",
        description="Score label PNG predictions against a dataset's ground truth with hrseg's whole-split "
        "metric (the label set gives classes, ignored values and the ground truth's id table); Cityscapes "
        "label-id predictions (hrseg predict --format cityscapes) also with cityscapesScripts.",
    )
    p.add_argument(
        "--pred",
        required=True,
        help="prediction folder: <city>_<seq>_<frame>*.png (Cityscapes), else <stem>.png / "
        "<stem>_trainIds.png / <stem>_labelIds.png for every ground-truth <stem>.png",
    )
    p.add_argument("--gt", required=True, help="ground-truth folder, e.g. ROOT/gtFine/val")
    p.add_argument(
        "--classes",
        default="cityscapes",
        help="the registered label set of the ground truth (default cityscapes), e.g. voc",
    )
    p.add_argument(
        "--pred-ids",
        dest="pred_ids",
        default="raw",
        choices=["raw", "train"],
        help="raw (default): predictions hold the ground truth's ids (benchmark files); train: train ids "
        "(hrseg predict's <name>_trainIds.png)",
    )
    p.add_argument(
        "--no-official",
        action="store_true",
        help="skip cityscapesScripts (hrseg's metric only; it scores Cityscapes label ids only)",
    )
    p.add_argument("--json", default=None, help="also write the scores to this JSON file")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``hrseg evaluate``; returns 0, or 1 when the folders cannot be scored."""
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    for option, folder in (("--pred", args.pred), ("--gt", args.gt)):
        if not Path(folder).expanduser().is_dir():
            what = "is a file, not a folder" if Path(folder).expanduser().exists() else "folder not found"
            print(f"hrseg evaluate: error: {option} {folder}: {what}", file=sys.stderr)
            return 1
    try:
        result = evaluate_folder(
            args.pred,
            args.gt,
            official=False if args.no_official else None,
            labels=args.classes,
            pred_ids=args.pred_ids,
        )
    except (FileNotFoundError, ValueError, ImportError, RuntimeError) as err:
        print(f"hrseg evaluate: error: {err}", file=sys.stderr)
        return 1
    _print_table(result)
    if result["labels"] == "cityscapes" and result["cityscapesScripts"] is None and not args.no_official:
        print("cityscapesScripts not run: it reads label ids, not --pred-ids train", file=sys.stderr)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
        print(f"scores: {args.json}")
    return 0
