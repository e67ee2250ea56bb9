"""``hrseg predict``: label, colour and overlay PNGs for a folder, glob or file of images.

One command, one syntax, two engines:

- ``hrseg predict --ckpt_path CKPT --input PATH --output DIR``: the checkpoint alone describes the model and
  its classes (a Lightning ``.ckpt``, a safetensors bundle, an exported ``.onnx`` / ``.pt2``); images of any
  size go one at a time through :class:`hrseg.Segmenter` (:func:`hrseg.deploy.predict_folder`).
  Resumable; unreadable inputs are listed at the end and make the exit code 1.
- the same plus ``--config CFG``: the config's DataModule reads the images and LightningCLI's Trainer runs the
  task restored from ``--ckpt_path`` (GPUs, several devices, and every LightningCLI option: ``--trainer.*`` /
  ``--data.*`` / ``--model.*`` overrides, ``--data FolderDataModule``, ``--print_config``);
  :class:`hrseg.callbacks.PredictionWriter` writes the same files, batch by batch, and no prediction is kept
  in memory (``return_predictions`` is off).

The protocol options (``--mode``, ``--window``, ``--stride``, ``--scales``, ``--flip``, ``--base-size``,
``--variant``) mean the same in both;
each one given changes that field of the protocol the model was validated with (stored in the checkpoint, or
the config's ``model.eval_protocol`` with ``--config``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from hrseg.commands.options import (
    CommandParser,
    add_released_weights_options,
    add_size_argument,
    check_released_weights_options,
)
from hrseg.eval_protocol import MODES, VARIANTS

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = CommandParser(
        prog="hrseg predict",  # allow_abbrev is off: --trainer.* etc. pass through, no prefix may match here
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Predict a folder, glob or file of images and write <name>_trainIds.png, "
        "<name>_color.png (and <name>_overlay.png), or the Cityscapes / VOC benchmark files (--format); "
        "images whose outputs exist are skipped, so an interrupted run resumes.",
        epilog="""examples:
  hrseg predict --ckpt_path best.ckpt --input images/ --output out/ [--overlay] \\
      [--mode slide --window 512x1024]
      the checkpoint (.ckpt, safetensors bundle, .onnx, .pt2) carries model and classes; no config needed
  hrseg predict --config cityscapes/hrnetv2_w48 --ckpt_path best.ckpt --input images/ --output out/ \\
      --trainer.devices 2
      the config's DataModule and Trainer run the prediction (LightningCLI); every other option passes
      through to it, e.g. --data.init_args.eval_size [512,1024] or --print_config""",
    )
    p.add_argument("--ckpt_path", dest="ckpt", default=None, help="the trained model (required)")
    p.add_argument(
        "--input",
        default=None,
        help="image folder, glob pattern (quote it) or one image (with --config: default the config's "
        "predict_path or predict split)",
    )
    p.add_argument(
        "--output",
        default=None,
        help="output folder (with --config: default <trainer.default_root_dir>/predictions)",
    )
    p.add_argument("--config", "-c", default=None, help="a LightningCLI config (file or shipped name)")
    add_released_weights_options(p)
    group = p.add_argument_group(
        "evaluation protocol (default: the one stored with the model; each option given overrides its field)"
    )
    group.add_argument(
        "--mode",
        default=None,
        choices=list(MODES),
        help="whole: one forward per image; slide: sliding windows over images larger than --window; tile: "
        "sliding windows, the scales and flip run within each window (what large images stream); official: "
        "the official HRNet test pipeline (--window is its crop; --base-size, --variant)",
    )
    add_size_argument(group, "--window", default=None, help="sliding window, e.g. 512x1024")
    add_size_argument(group, "--stride", default=None, help="window stride, e.g. 341x683")
    group.add_argument(
        "--scales", type=float, nargs="+", default=None, help="test scales, e.g. 0.75 1.0 1.25"
    )
    group.add_argument(
        "--base-size",
        dest="base_size",
        type=int,
        default=None,
        help="--mode official: the long side at scale 1.0, e.g. 2048 (Cityscapes), 520 (ADE20K)",
    )
    group.add_argument(
        "--variant",
        default=None,
        choices=list(VARIANTS),
        help="--mode official: default (base_dataset.py) or cityscapes (cityscapes.py) window rules",
    )
    group.add_argument(
        "--flip",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="average with the horizontally flipped image (--no-flip: do not)",
    )
    out = p.add_argument_group("outputs")
    out.add_argument(
        "--format",
        default="trainids",
        choices=["trainids", "cityscapes", "voc"],
        help="trainids (default): <name>_trainIds.png + colour / overlay PNGs; cityscapes: "
        "<city>_<seq>_<frame>_labelIds.png only, for the Cityscapes benchmark and `hrseg evaluate`; voc: "
        "<name>.png palette PNGs in the VOC format",
    )
    out.add_argument("--overlay", action="store_true", help="also write <name>_overlay.png")
    out.add_argument("--no-color", action="store_true", help="do not write <name>_color.png")
    out.add_argument("--overwrite", action="store_true", help="recompute images whose outputs exist")
    big = p.add_argument_group(
        "large images (without --config; docs/large-images.md; needs pip install hrseg[geo])"
    )
    big.add_argument(
        "--stream",
        default="auto",
        choices=["auto", "on", "off"],
        help="read, predict and write window by window into <name>_trainIds.tif (a GeoTIFF with the "
        "input's georeference); auto (default): georeferenced rasters and images above --stream-above",
    )
    big.add_argument(
        "--stream-above",
        type=float,
        default=None,
        metavar="MP",
        help="megapixels above which --stream auto streams (default 16)",
    )
    big.add_argument("--bands", default=None, help="input bands, 1-based, e.g. 3,2,1 (streams the image)")
    big.add_argument("--band-rows", type=int, default=1024, help="output rows written (resumable) at a time")
    big.add_argument(
        "--strip-width",
        type=int,
        default=8192,
        help="columns swept at a time: wider images go in strips (bounds memory; windows at strip "
        "borders run twice)",
    )
    big.add_argument("--overviews", action="store_true", help="build overviews in the output GeoTIFF")
    p.add_argument(
        "--device",
        default=None,
        help="torch device without --config: auto (default: CUDA when available, else MPS, else CPU), cpu, "
        "cuda, cuda:1, mps",
    )
    rt = p.add_argument_group("runtime (without --config; hrseg.deploy.backends)")
    rt.add_argument(
        "--backend",
        default="torch",
        choices=["torch", "compile", "onnxruntime", "openvino", "auto"],
        help="torch (default: the fast path), compile (torch.compile), onnxruntime, openvino, or auto "
        "(OpenVINO on x86 CPUs when installed, else ONNX Runtime; torch on CUDA). Runtimes export the "
        "checkpoint once into the cache",
    )
    rt.add_argument(
        "--precision",
        default="fp32",
        choices=["fp32", "bf16", "fp16", "int8"],
        help="fp32 (default); bf16 / fp16 where the hardware runs it; int8 (onnxruntime / openvino, "
        "calibrated on generated street scenes, which fit only a model trained on them, unless the cached "
        "export exists; for other models run hrseg export --precision int8 and predict with its .onnx)",
    )
    rt.add_argument("--cache-dir", default=None, help="export cache (default $HRSEG_CACHE or ~/.cache/hrseg)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _protocol_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The protocol fields given on the command line (the rest stay as the model was validated)."""
    overrides: dict[str, Any] = {}
    for name in ("mode", "window", "stride", "scales", "flip", "base_size", "variant"):
        value = getattr(args, name)
        if value is not None:
            overrides[name] = value
    return overrides


def _standalone(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from hrseg.checkpoint import CheckpointError
    from hrseg.deploy import Segmenter, predict_folder
    from hrseg.deploy.stream import STREAM_ABOVE_MP, StreamOptions
    from hrseg.inference.device import describe_device
    from hrseg.rasters import parse_bands

    if args.input is None or args.output is None:
        parser.error("--input and --output are required without --config")
    _check_format(args, parser)
    try:
        streaming = StreamOptions(parse_bands(args.bands), args.band_rows, args.strip_width, args.overviews)
    except ValueError as err:
        parser.error(str(err))
    runtime: dict[str, Any] = {
        "device": args.device or "auto",
        "protocol": _protocol_overrides(args),
        "backend": args.backend,
        "precision": args.precision,
        "cache_dir": args.cache_dir,
    }
    try:
        if args.model is not None:
            segmenter = Segmenter.from_weights(
                args.ckpt,
                args.model,
                args.classes or "cityscapes",
                align_corners=args.align_corners,
                **runtime,
            )
        else:
            segmenter = Segmenter.from_checkpoint(args.ckpt, **runtime)
        print(
            f"hrseg predict: {segmenter.meta.model} on {describe_device(segmenter.device)} "
            f"({segmenter.backend}, {segmenter.precision}); protocol {segmenter.protocol.describe()}",
            file=sys.stderr,
        )
        summary = predict_folder(
            segmenter,
            args.input,
            args.output,
            write_color=not args.no_color and args.format == "trainids",
            write_overlay=args.overlay,
            skip_existing=not args.overwrite,
            progress=not args.no_progress,
            format=args.format,
            stream=args.stream,
            stream_above=STREAM_ABOVE_MP if args.stream_above is None else args.stream_above,
            stream_options=streaming,
        )
    except (CheckpointError, FileNotFoundError, ValueError, ImportError) as err:
        print(f"hrseg predict: error: {err}", file=sys.stderr)
        return 1
    print(summary)
    return 1 if summary.failed else 0


def _check_format(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Benchmark formats write one file per image: no colour or overlay PNGs beside them."""
    if args.format != "trainids" and args.overlay:
        parser.error(f"--overlay applies to --format trainids, not {args.format}")


def _lightning_argv(args: argparse.Namespace, extra: list[str], parser: argparse.ArgumentParser) -> list[str]:
    """The LightningCLI ``predict`` arguments equivalent to this command line."""
    if args.model is not None or args.classes is not None or args.align_corners:
        parser.error(
            "--model / --classes / --align-corners describe released weights without --config; with a config "
            "use --model.model, --model.weights and --data"
        )
    if args.device is not None:
        parser.error("--device applies without --config; use --trainer.accelerator / --trainer.devices")
    if args.backend != "torch" or args.precision != "fp32" or args.cache_dir is not None:
        parser.error("--backend / --precision / --cache-dir apply without --config")
    streamed = (args.stream, args.stream_above, args.bands, args.band_rows, args.strip_width, args.overviews)
    if streamed != ("auto", None, None, 1024, 8192, False):
        parser.error("--stream / --bands / --band-rows / --strip-width / --overviews apply without --config")
    argv = ["predict", "--config", args.config, "--return_predictions=false"]
    if args.ckpt is not None:
        argv += ["--ckpt_path", args.ckpt]
    if args.input is not None:
        argv += ["--data.predict_path", args.input]
    for name, value in _protocol_overrides(args).items():
        if isinstance(value, (list, tuple)):
            argv.append(f"--model.eval_protocol.{name}=[{','.join(str(v) for v in value)}]")
        else:
            argv.append(f"--model.eval_protocol.{name}={str(value).lower() if name == 'flip' else value}")
    if args.no_progress:
        argv.append("--trainer.enable_progress_bar=false")
    _check_format(args, parser)
    if args.output is not None:
        argv += [
            "--trainer.callbacks+=hrseg.callbacks.PredictionWriter",
            f"--trainer.callbacks.output_dir={args.output}",
            f"--trainer.callbacks.write_color={str(not args.no_color and args.format == 'trainids').lower()}",
            f"--trainer.callbacks.format={args.format}",
            f"--trainer.callbacks.write_overlay={str(args.overlay).lower()}",
            f"--trainer.callbacks.skip_existing={str(not args.overwrite).lower()}",
        ]
    elif args.overlay or args.no_color or args.overwrite or args.format != "trainids":
        parser.error("--overlay / --no-color / --overwrite / --format with --config need --output")
    return argv + extra


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``hrseg predict``; returns the exit code (1 when any input failed)."""
    parser = _parser()
    args, extra = parser.parse_known_args(list(sys.argv[1:] if argv is None else argv))
    check_released_weights_options(args, parser)
    if args.config is None:
        if extra:
            lightning = any(a.startswith(("--trainer", "--data", "--model", "--seed")) for a in extra)
            hint = ": LightningCLI options (--trainer.* / --data.* / --model.*) need --config" * lightning
            parser.error(f"unrecognized arguments: {' '.join(extra)}{hint}")
        if args.ckpt is None:
            parser.error("the following arguments are required: --ckpt_path")
        return _standalone(args, parser)
    from hrseg.commands.configs import require_config

    args.config = require_config(args.config)  # an unknown name lists the shipped configs, before any loading
    from hrseg.callbacks import PredictionWriter
    from hrseg.checkpoint import CheckpointError, read_model_checkpoint
    from hrseg.commands.lightning import run_lightning_cli

    if args.ckpt is None and "--print_config" not in " ".join(extra):
        parser.error("the following arguments are required: --ckpt_path")
    if args.ckpt is not None:
        try:  # the same reader and messages as the bare form, before any Trainer or process starts
            read_model_checkpoint(args.ckpt)
        except CheckpointError as err:
            print(f"hrseg predict: error: {err}", file=sys.stderr)
            return 1
    cli = run_lightning_cli(_lightning_argv(args, extra, parser))  # its usage errors: one line, by `hrseg`
    writers = [cb for cb in cli.trainer.callbacks if isinstance(cb, PredictionWriter)]  # type: ignore[attr-defined]
    return 1 if any(w.failed for w in writers) else 0
