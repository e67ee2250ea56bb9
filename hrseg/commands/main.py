"""The ``hrseg`` command: dispatches to one module per command.

LightningCLI owns ``fit``, ``validate`` and ``test``; ``predict``, ``export``, ``data`` and ``report`` are
argparse commands with their own ``--help`` (``predict`` runs LightningCLI itself when given ``--config``).
Modules are imported only for the command that runs, so ``hrseg --help`` answers without loading torch.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

TRAINER_COMMANDS = ("fit", "validate", "test")
#: command -> module under hrseg.commands with a ``main(argv) -> int``
TOOL_COMMANDS = {"predict": "predict", "export": "export", "data": "data", "report": "report"}

USAGE = """usage: hrseg [-h] [--version] {fit,validate,test,predict,export,data,report} ...

HRNetV2 semantic segmentation on PyTorch Lightning.

commands:
  fit         train a model (LightningCLI), e.g. hrseg fit --config configs/demo.yaml
  validate    evaluate a checkpoint on the validation split
  test        evaluate a checkpoint on the test split (per-class IoU table and plots)
  predict     write label / colour PNGs for a folder, glob or file of images (resumable):
                hrseg predict --ckpt best.ckpt --input images/ --output out/ [--config X.yaml] [...]
  export      export a checkpoint to ONNX, torch.export (.pt2) or safetensors, verified against eager
  data        generate demo data in real dataset layouts (synth) or validate a dataset (check)
  report      draw the validation panels and learning curve of a finished fit run

Run `hrseg COMMAND --help` for the options of one command.
"""


def main(args: Sequence[str] | None = None) -> int:
    """Run the ``hrseg`` command line; returns the process exit code."""
    argv = list(sys.argv[1:] if args is None else args)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    if argv[0] in ("-V", "--version"):
        from hrseg import __version__

        print(f"hrseg {__version__}")
        return 0
    command = argv[0]
    if command in TOOL_COMMANDS:
        module = importlib.import_module(f"hrseg.commands.{TOOL_COMMANDS[command]}")
        return int(module.main(argv[1:]))
    if command in TRAINER_COMMANDS:
        from hrseg.commands.lightning import run_lightning_cli

        run_lightning_cli(argv)
        return 0
    print(f"hrseg: unknown command {command!r}\n", file=sys.stderr)
    print(USAGE, file=sys.stderr)
    return 2
