"""``hrseg evaluate``: score Cityscapes predictions with hrseg's metric and with the official evaluator.

    hrseg predict --ckpt_path best.ckpt --input ROOT/leftImg8bit/val --output preds/ --format cityscapes
    hrseg evaluate --pred preds/ --gt ROOT/gtFine/val [--json scores.json]

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
    table = Table(title=f"Cityscapes evaluation ({ours['images']} images)")
    table.add_column("class")
    table.add_column("IoU (hrseg)", justify="right")
    if theirs is not None:
        table.add_column("IoU (cityscapesScripts)", justify="right")
    for name, value in ours["iou"].items():
        row = [name, f"{value:.4f}"]
        if theirs is not None:
            other = theirs["iou"].get(name, float("nan"))
            row.append("n/a" if math.isnan(other) else f"{other:.4f}")
        table.add_row(*row)
    table.add_section()
    table.add_row("mIoU (all 19 classes)", f"{ours['mIoU']:.4f}", *([""] if theirs is not None else []))
    table.add_row(
        "mIoU (classes present)",
        f"{ours['mIoU_present']:.4f}",
        *([f"{theirs['mIoU_classes']:.4f}"] if theirs is not None else []),
    )
    table.add_row("pixel acc", f"{ours['pixel_acc']:.4f}", *([""] if theirs is not None else []))
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
        description="Score Cityscapes label-id predictions (hrseg predict --format cityscapes) against "
        "gtFine with hrseg's whole-split metric and cityscapesScripts' official evaluator.",
    )
    p.add_argument("--pred", required=True, help="folder of <city>_<seq>_<frame>*.png label-id predictions")
    p.add_argument("--gt", required=True, help="ground-truth folder, e.g. ROOT/gtFine/val")
    p.add_argument("--no-official", action="store_true", help="skip cityscapesScripts (hrseg's metric only)")
    p.add_argument("--json", default=None, help="also write both score sets to this JSON file")
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
        result = evaluate_folder(args.pred, args.gt, official=not args.no_official)
    except (FileNotFoundError, ValueError, ImportError, RuntimeError) as err:
        print(f"hrseg evaluate: error: {err}", file=sys.stderr)
        return 1
    _print_table(result)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
        print(f"scores: {args.json}")
    return 0
