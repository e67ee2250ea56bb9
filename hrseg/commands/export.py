"""``hrseg export``: export a checkpoint to ONNX, ``.pt2``, a safetensors bundle or a shareable hub folder.

Each export is checked against eager. ``--format hub`` writes ``config.json`` + ``model.safetensors`` + a
generated model card ``README.md`` (loadable with ``hrseg.Segmenter.from_pretrained(folder)``);
``--push-to-hub org/name`` then uploads that folder (:func:`hrseg.hub.push_to_hub`). Released weights (an
official ``.pth`` or any state dict) export with ``--model NAME --classes cityscapes``: ``--format hub`` turns
them into a self-describing folder.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hrseg.checkpoint import CheckpointError
from hrseg.commands.options import (
    CommandParser,
    add_released_weights_options,
    check_released_weights_options,
    size_type,
)
from hrseg.export import FORMATS, HUB_FORMAT, OPENVINO_FORMAT, SUFFIXES, export
from hrseg.images import IMAGE_EXTENSIONS

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = CommandParser(
        prog="hrseg export",
        description=(
            "Export a checkpoint to ONNX (dynamic batch/height/width), torch.export .pt2 or a "
            "self-describing safetensors bundle; each export is loaded back and compared with the eager "
            "model at another input size."
        ),
    )
    p.add_argument(
        "--ckpt_path", dest="ckpt", default=None, help="Lightning .ckpt or safetensors bundle (required)"
    )
    p.add_argument(
        "--format",
        default="onnx",
        choices=[*FORMATS, HUB_FORMAT, OPENVINO_FORMAT, "all"],
        help="export format (default onnx); hub: a model folder with config.json, model.safetensors and a "
        "model card README.md; openvino: OpenVINO IR .xml + .bin (pip install 'hrseg[deploy]')",
    )
    p.add_argument(
        "--output",
        dest="out",
        default=None,
        help="output file (a folder with --format all or for a safetensors bundle); default: next to the "
        "checkpoint",
    )
    p.add_argument(
        "--size",
        type=size_type(),
        default=(256, 256),
        help="export example size HxW (default 256x256; the graph stays dynamic)",
    )
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
    add_released_weights_options(p)
    p.add_argument(
        "--push-to-hub",
        default=None,
        metavar="ORG/NAME",
        help="with --format hub: upload the folder to this Hugging Face Hub repository (log in first: "
        "`hf auth login`)",
    )
    p.add_argument("--private", action="store_true", help="with --push-to-hub: create the repository private")
    low = p.add_argument_group(
        "reduced precision (onnx / openvino): checked by mIoU against the fp32 model on a validation set"
    )
    low.add_argument(
        "--precision",
        default="fp32",
        choices=["fp32", "bf16", "fp16", "int8"],
        help="int8: post-training static quantization; bf16 / fp16: OpenVINO inference precision where the "
        "CPU runs it",
    )
    low.add_argument(
        "--calib-data",
        default=None,
        help="int8 calibration images of the model's own domain: a config name or file (its DataModule's "
        "train split) or an image folder / glob; default: the train split recorded with the checkpoint "
        "(its run's config.yaml), generated street scenes for a model trained on them",
    )
    low.add_argument("--num-calib", type=int, default=16, help="number of calibration images (default 16)")
    low.add_argument(
        "--val-data",
        default=None,
        help="validation set for the accuracy check: a config (its val split, with ground truth) or an image "
        "folder / glob (compared with the fp32 label maps); default: the val split of --calib-data's config "
        "or of the recorded training config, else the calibration images (generated scenes for a model "
        "trained on them)",
    )
    low.add_argument("--num-val", type=int, default=32, help="number of validation images (default 32)")
    low.add_argument(
        "--max-drop",
        type=float,
        default=0.005,
        help="largest mIoU drop against fp32 accepted (default 0.005); above it the export is refused",
    )
    low.add_argument(
        "--warn-only",
        action="store_true",
        help="keep a reduced-precision export whose mIoU drop exceeds --max-drop (with a warning)",
    )
    return p


#: the DataModule of the generated street scenes: the one training set int8 may calibrate on unasked
GENERATED_DATAMODULE = "DemoDataModule"


class CalibrationError(ValueError):
    """No calibration images of the model's domain: the message says what to pass."""


def _is_image_spec(spec: str) -> bool:
    """An image folder, glob or file (else a config name or file)."""
    path = Path(spec).expanduser()
    return path.is_dir() or any(ch in spec for ch in "*?[") or path.suffix.lower() in IMAGE_EXTENSIONS


def _describe(spec: str, split: str) -> str:
    """What ``spec`` names, for the log: the folder / glob itself, or a config's split."""
    return spec if _is_image_spec(spec) else f"the {split} split of {spec}"


def load_images(spec: str, split: str, num: int) -> tuple[list[Any], list[Any] | None]:
    """Raw images (and ground truth masks) for calibration or validation: what a deployed model is given.

    Args:
        spec: an image folder or glob (file paths, no masks), or a config name / file whose ``data``
            DataModule lists the split; its samples are decoded without transforms (RGB uint8 images and
            train-id masks, the dataset's ``load``), never augmented or normalized.
        split: ``"train"`` (calibration) or ``"val"``.
        num: at most this many, the first ones in order.
    """
    from hrseg.images import list_images

    if _is_image_spec(spec):
        return [str(f) for f in list_images(spec, recursive=True)[:num]], None
    from hrseg.commands.data import datamodule_from_config

    dataset = datamodule_from_config(spec).build_dataset(split, train=False)
    images, masks = [], []
    for i in range(min(num, len(dataset))):
        image, mask, _ = dataset.load(i)
        images.append(image)
        masks.append(mask)
    # an unlabelled split is compared with the fp32 label maps
    return images, (masks if all(m is not None for m in masks) else None)


def recorded_data(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """The training data recorded with the checkpoint: (DataModule class name, run config with its data).

    Released weights (``--model``), bundles and hub folders record none: ``(None, None)``.
    """
    if args.model is not None:
        return None, None
    from hrseg.modelcard import read_training_summary

    summary = read_training_summary(args.ckpt)
    return summary.datamodule, (str(summary.config) if summary.config is not None else None)


def calibration_set(
    args: argparse.Namespace, datamodule: str | None, config: str | None
) -> tuple[list[Any], str]:
    """int8 calibration images of the model's domain and where they come from (a phrase for the log).

    ``--calib-data``; else the train split of the recorded training config; else generated street scenes for
    a model trained on them.

    Raises:
        CalibrationError: none of those (the message says what to pass), or the recorded data is unreadable.
    """
    if args.calib_data:
        images, _ = load_images(args.calib_data, "train", args.num_calib)
        return images, _describe(args.calib_data, "train")
    if datamodule == GENERATED_DATAMODULE:
        from hrseg.export import generated_calibration_images

        images = generated_calibration_images(args.num_calib)
        return images, "generated street scenes (the model was trained on them)"
    if config is not None:
        try:
            images, _ = load_images(config, "train", args.num_calib)
        except (FileNotFoundError, ValueError, OSError) as err:
            raise CalibrationError(
                f"int8 calibration: the training data recorded in {config} cannot be read ({err}); pass "
                "--calib-data with images of the model's domain"
            ) from None
        return images, _describe(config, "train") + " (recorded with the model)"
    raise CalibrationError(
        "int8 needs calibration images of the model's own domain: pass --calib-data (an image folder, a glob "
        f"or a config); {args.ckpt} records no training data, and generated street scenes fit only a model "
        "trained on them"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``hrseg export``: returns 0 when every export matches eager within the tolerance, else 1."""
    parser = _parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.ckpt is None:
        parser.error("the following arguments are required: --ckpt_path")
    height, width = args.size
    if args.push_to_hub and args.format != HUB_FORMAT:
        parser.error("--push-to-hub needs --format hub")
    check_released_weights_options(args, parser)
    formats: list[str] = list(FORMATS) if args.format == "all" else [args.format]
    precision = args.precision
    calib = val = masks = None
    val_source: str | None = None
    if precision != "fp32":
        if args.format not in ("onnx", OPENVINO_FORMAT):
            parser.error(f"--precision {precision} applies to --format onnx or openvino")
        try:
            datamodule, recorded = recorded_data(args)
            if precision == "int8":
                calib, calib_source = calibration_set(args, datamodule, recorded)
                print(f"hrseg export: int8 calibration on {len(calib)} images of {calib_source}")
            # the accuracy check: the user's validation images, else a config's val split (with ground truth)
            val_spec = args.val_data
            if val_spec is None and args.calib_data and not _is_image_spec(args.calib_data):
                val_spec = args.calib_data
            if val_spec is None and not args.calib_data and datamodule != GENERATED_DATAMODULE:
                val_spec = recorded
            if val_spec:
                try:
                    val, masks = load_images(val_spec, "val", args.num_val)
                except (FileNotFoundError, ValueError, OSError) as err:
                    hint = "; pass --val-data" if val_spec == recorded else ""
                    raise CalibrationError(f"the accuracy check: {err}{hint}") from None
                val_source = _describe(val_spec, "val")
            elif args.calib_data and calib is not None:  # in the model's domain, though not held out
                val = calib[: args.num_val]
                val_source = f"the calibration set {args.calib_data} (--val-data: held-out images)"
        except (FileNotFoundError, ValueError, OSError) as err:
            print(f"hrseg export: error: {err}", file=sys.stderr)
            return 1
    ckpt = Path(args.ckpt)
    source: Any = ckpt
    meta = None
    if args.model is not None:  # released weights: build the model they describe, export it like a checkpoint
        from hrseg.inference.released import load_released

        try:
            source, meta = load_released(
                args.ckpt,
                args.model,
                args.classes or "cityscapes",
                align_corners=args.align_corners,
                trusted=args.trusted,
            )
        except (CheckpointError, FileNotFoundError, ValueError) as err:
            print(f"hrseg export: error: {err}", file=sys.stderr)
            return 1
    status = 0
    for fmt in formats:
        if args.format == "all":
            base = Path(args.out) if args.out else ckpt.with_suffix("")
            out: Path | None = base / (f"model{SUFFIXES[fmt]}" if fmt != "safetensors" else "bundle")
        elif args.out:
            out = Path(args.out)
        else:  # beside the weights, as for a checkpoint
            out = ckpt.with_name(f"{ckpt.stem}_hub") if fmt == HUB_FORMAT else ckpt.with_suffix(SUFFIXES[fmt])
        try:
            result = export(
                source,
                meta=meta,
                format=fmt,  # type: ignore[arg-type]
                out=out,
                height=height,
                width=width,
                tolerance=args.tolerance,
                fold_bn=not args.no_fold_bn,
                exporter=args.exporter,
                opset=args.opset,
                upsample=args.upsample,
                check_image=args.check_image,
                trusted=args.trusted,
                precision=precision,
                calib_images=calib,
                val_images=val,
                val_masks=masks,
                max_drop=args.max_drop,
                val_source=val_source,
            )
        except (CheckpointError, FileNotFoundError, ValueError, RuntimeError) as err:
            print(f"hrseg export: error: {fmt}: {err}", file=sys.stderr)
            status = 1
            continue
        print(result.summary())
        if result.accuracy is not None and not result.passed:
            drop = f"mIoU drop {result.accuracy.drop:.4f} > --max-drop {args.max_drop}"
            if args.warn_only:
                print(
                    f"WARNING: hrseg export: {fmt} {precision}: {drop}; kept (--warn-only)", file=sys.stderr
                )
                continue
            for f in result.files:
                f.unlink(missing_ok=True)
            print(
                f"hrseg export: error: {fmt} {precision}: {drop}; refused, the file is removed",
                file=sys.stderr,
            )
            status = 1
        elif not result.passed:
            print(
                f"hrseg export: error: {fmt}: the exported model differs from eager by "
                f"{result.max_abs_diff:.3g} > {result.tolerance:.3g}; the file is kept for inspection",
                file=sys.stderr,
            )
            status = 1
        elif args.push_to_hub:
            from hrseg.hub.folder import push_to_hub

            try:
                url = push_to_hub(result.path, args.push_to_hub, private=args.private or None)
            except Exception as err:  # network, authentication and hub errors all end the command here
                print(f"hrseg export: error: push to {args.push_to_hub} failed: {err}", file=sys.stderr)
                return 1
            print(f"pushed {result.path} -> {url}")
    return status
