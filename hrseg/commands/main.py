"""The ``hrseg`` command: dispatches to one module per command.

LightningCLI owns ``fit``, ``validate`` and ``test``; ``predict``, ``evaluate``, ``export``, ``data`` and
``report`` are argparse commands with their own ``--help`` (``predict`` runs LightningCLI itself when given
``--config``).
Modules are imported only for the command that runs, so ``hrseg --help`` answers without loading torch.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

TRAINER_COMMANDS = ("fit", "validate", "test")
#: command -> module under hrseg.commands with a ``main(argv) -> int``
TOOL_COMMANDS = {
    "predict": "predict",
    "evaluate": "evaluate",
    "export": "export",
    "data": "data",
    "report": "report",
}

USAGE = """usage: hrseg [-h] [--version] {fit,validate,test,predict,evaluate,export,data,report} ...

HRNetV2 semantic segmentation on PyTorch Lightning.

commands:
  fit         train a model (LightningCLI), e.g. hrseg fit --config configs/demo.yaml
  validate    evaluate a checkpoint on the validation split
  test        evaluate a checkpoint on the test split (per-class IoU table and plots)
  predict     write label / colour PNGs for a folder, glob or file of images (resumable):
                hrseg predict --ckpt best.ckpt --input images/ --output out/ [--config X.yaml] [...]
  evaluate    score Cityscapes label-id predictions (predict --format cityscapes) with hrseg's metric and
              cityscapesScripts: hrseg evaluate --pred preds/ --gt ROOT/gtFine/val
  export      export a checkpoint to ONNX, torch.export (.pt2), safetensors or a hub model folder
              (--format hub: config.json + model.safetensors + model card; --push-to-hub org/name)
  data        generate demo data in real dataset layouts (synth) or validate a dataset (check)
  report      draw the validation panels and learning curve of a finished fit run

Run `hrseg COMMAND --help` for the options of one command.
"""


def _run_trainer_command(argv: list[str]) -> int:
    """LightningCLI ``fit`` / ``validate`` / ``test``; a bad dataset, weights file or run prints one line.

    Those errors are raised in the launching process before any DDP worker starts (see
    ``HRSegCLI._check_inputs``), so the user reads one message instead of a traceback per process.
    """
    from hrseg.checkpoint import CheckpointError
    from hrseg.commands.lightning import run_lightning_cli
    from hrseg.data.checks import DatasetError
    from hrseg.task import NonFiniteLossError

    try:
        run_lightning_cli(argv)
    except (DatasetError, CheckpointError, FileNotFoundError, NonFiniteLossError) as err:
        print(f"hrseg {argv[0]}: error: {err}", file=sys.stderr)
        return 1
    return 0


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
        return _run_trainer_command(argv)
    print(f"hrseg: unknown command {command!r}\n", file=sys.stderr)
    print(USAGE, file=sys.stderr)
    return 2
