"""``hrseg export``: export a checkpoint to ONNX, ``.pt2``, a safetensors bundle or a shareable hub folder.

Each export is checked against eager. ``--format hub`` writes ``config.json`` + ``model.safetensors`` + a
generated model card ``README.md`` (loadable with ``hrseg.Segmenter.from_pretrained(folder)``);
``--push-to-hub org/name`` then uploads that folder (:func:`hrseg.hub.push_to_hub`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from hrseg.checkpoint import CheckpointError
from hrseg.export import FORMATS, HUB_FORMAT, SUFFIXES, export

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hrseg export",
        description=(
            "Export a checkpoint to ONNX (dynamic batch/height/width), torch.export .pt2 or a "
            "self-describing safetensors bundle; each export is loaded back and compared with the eager "
            "model at another input size."
        ),
    )
    p.add_argument("--ckpt", required=True, help="Lightning .ckpt or safetensors bundle to export")
    p.add_argument(
        "--format",
        default="onnx",
        choices=[*FORMATS, HUB_FORMAT, "all"],
        help="export format (default onnx); hub: a model folder with config.json, model.safetensors and a "
        "model card README.md",
    )
    p.add_argument(
        "--out",
        default=None,
        help="output file (a folder with --format all or for a safetensors bundle); default next to --ckpt",
    )
    p.add_argument("--height", type=int, default=256, help="export example height (graph stays dynamic)")
    p.add_argument("--width", type=int, default=256, help="export example width (graph stays dynamic)")
    p.add_argument(
        "--tolerance",
        type=float,
        default=None,
        help="max allowed |export - eager| on the logits (default 1e-4 x max(1, max |logit|))",
    )
    p.add_argument("--exporter", default="dynamo", choices=["dynamo", "torchscript"], help="ONNX exporter")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset version (default: the exporter's)")
    p.add_argument("--no-fold-bn", action="store_true", help="keep BatchNorm layers in the exported graph")
    p.add_argument("--upsample", action="store_true", help="resize logits to the input size inside the graph")
    p.add_argument("--check-image", default=None, help="image file for the parity check (default: generated)")
    p.add_argument("--trusted", action="store_true", help="allow pickled Python objects in the .ckpt")
    p.add_argument(
        "--push-to-hub",
        default=None,
        metavar="ORG/NAME",
        help="with --format hub: upload the folder to this Hugging Face Hub repository (log in first: "
        "`hf auth login`)",
    )
    p.add_argument("--private", action="store_true", help="with --push-to-hub: create the repository private")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``hrseg export``: returns 0 when every export matches eager within the tolerance, else 1."""
    parser = _parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.push_to_hub and args.format != HUB_FORMAT:
        parser.error("--push-to-hub needs --format hub")
    formats: list[str] = list(FORMATS) if args.format == "all" else [args.format]
    ckpt = Path(args.ckpt)
    status = 0
    for fmt in formats:
        if args.format == "all":
            base = Path(args.out) if args.out else ckpt.with_suffix("")
            out: Path | None = base / (f"model{SUFFIXES[fmt]}" if fmt != "safetensors" else "bundle")
        else:
            out = Path(args.out) if args.out else None
        try:
            result = export(
                ckpt,
                format=fmt,  # type: ignore[arg-type]
                out=out,
                height=args.height,
                width=args.width,
                tolerance=args.tolerance,
                fold_bn=not args.no_fold_bn,
                exporter=args.exporter,
                opset=args.opset,
                upsample=args.upsample,
                check_image=args.check_image,
                trusted=args.trusted,
            )
        except (CheckpointError, FileNotFoundError, ValueError, RuntimeError) as err:
            print(f"hrseg export: {fmt}: {err}", file=sys.stderr)
            status = 1
            continue
        print(result.summary())
        if not result.passed:
            print(
                f"hrseg export: {fmt}: the exported model differs from eager by {result.max_abs_diff:.3g} "
                f"> {result.tolerance:.3g}; the file is kept for inspection",
                file=sys.stderr,
            )
            status = 1
        elif args.push_to_hub:
            from hrseg.hub import push_to_hub

            try:
                url = push_to_hub(result.path, args.push_to_hub, private=args.private or None)
            except Exception as err:  # network, authentication and hub errors all end the command here
                print(f"hrseg export: push to {args.push_to_hub} failed: {err}", file=sys.stderr)
                return 1
            print(f"pushed {result.path} -> {url}")
    return status
