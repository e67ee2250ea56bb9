"""The conventions every ``hrseg`` command shares: one vocabulary, one size syntax, one-line errors.

- Names follow LightningCLI where it has one: ``--ckpt_path`` for a checkpoint, ``-c`` / ``--config`` for a
  config; ``--output`` names what a command writes; sizes are ``HxW`` (``--size 512x1024``); reduced
  precision is ``--precision`` (``int8`` included).
- One spelling per option: the same concept has the same name in every command (docs/cli.md).
- Usage errors print one line, ``hrseg <cmd>: error: ...``, and exit 2 (:class:`CommandParser`); errors in
  the data a command reads exit 1 (:mod:`hrseg.commands.main` turns them into one line).

Imports nothing beyond the standard library, so ``hrseg <cmd> --help`` stays fast.
"""

from __future__ import annotations

import argparse
from typing import Any, NoReturn

__all__ = [
    "EXIT_DATA",
    "EXIT_USAGE",
    "CommandParser",
    "UsageError",
    "add_size_argument",
    "parse_size",
    "size_type",
]

#: exit status of a command line that cannot run as written (argparse's convention)
EXIT_USAGE = 2
#: exit status of a command that ran but could not read or use its inputs (a file, a folder, a checkpoint)
EXIT_DATA = 1


class UsageError(ValueError):
    """A command line that cannot run as written; reported as one line with exit status 2."""


def parse_size(text: str, minimum: int = 1) -> tuple[int, int]:
    """Parse ``HxW`` (``512x1024``; ``512X1024`` and ``512*1024`` too) into ``(height, width)``.

    Raises:
        ValueError: not two integers separated by ``x``, or a side below ``minimum``.
    """
    parts = text.strip().lower().replace("*", "x").split("x")
    try:
        height, width = (int(p) for p in parts)
    except ValueError:
        raise ValueError(f"expected HxW, e.g. 512x1024, got {text!r}") from None
    if height < minimum or width < minimum:
        raise ValueError(f"size must be at least {minimum}x{minimum}, got {text!r}")
    return height, width


def size_type(minimum: int = 1) -> Any:
    """An argparse ``type=`` for ``HxW`` values (errors become usage errors naming the option)."""

    def convert(text: str) -> tuple[int, int]:
        try:
            return parse_size(text, minimum)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    convert.__name__ = "HxW size"  # argparse names the type in "invalid HxW size value"
    return convert


class CommandParser(argparse.ArgumentParser):
    """An argparse parser whose usage errors are one line: ``hrseg <cmd>: error: ... (see --help)``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)  # an abbreviation must never silently pick an option
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        """Print the message on one line and exit with :data:`EXIT_USAGE`."""
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def add_size_argument(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup, *names: str, **kwargs: Any
) -> None:
    """An ``HxW`` option (``--window 512x1024``) stored as ``(height, width)``."""
    parser.add_argument(*names, type=size_type(), metavar="HxW", **kwargs)


def add_released_weights_options(parser: argparse.ArgumentParser, what: str = "--ckpt_path") -> None:
    """``--model`` / ``--classes`` / ``--align-corners``: what a bare state dict given as ``what`` is.

    Official HRNet / HRNet-OCR checkpoints and any plain ``.pth`` / ``.safetensors`` state dict carry only
    tensors; with these options predict, export and serve build the model they describe
    (:mod:`hrseg.inference.released`).
    """
    group = parser.add_argument_group(
        f"released weights (a bare state dict / official .pth / .safetensors / hub weights as {what})"
    )
    group.add_argument(
        "--model",
        default=None,
        help="the architecture of the weights, e.g. hrnetv2_w48_ocr (hrseg.list_models())",
    )
    group.add_argument(
        "--classes",
        default=None,
        help="the registered label set of its head: cityscapes (default with --model), voc, ade20k, "
        "cocostuff, pascal_context_59, pascal_context_60, lip, ... (hrseg.metadata.list_label_sets())",
    )
    group.add_argument(
        "--align-corners",
        action="store_true",
        help="bilinear resizes with align_corners=True (the official HRNet-OCR branch's *_torch11.pth)",
    )


def check_released_weights_options(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """``--classes`` / ``--align-corners`` describe released weights: they need ``--model``."""
    if args.model is None and (args.classes is not None or args.align_corners):
        parser.error("--classes / --align-corners describe released weights: give --model too")
