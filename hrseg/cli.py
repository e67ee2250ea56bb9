"""The ``hrseg`` command: LightningCLI for fit/validate/test/predict plus the tool subcommands.

LightningCLI owns the four Trainer subcommands; ``export`` and ``data`` are plain argparse tools, dispatched
here before LightningCLI sees the arguments so each keeps its own help text.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

TRAINER_COMMANDS = ("fit", "validate", "test", "predict")
TOOL_COMMANDS = ("export", "data")

USAGE = """usage: hrseg [-h] [--version] {fit,validate,test,predict,export,data} ...

HRNetV2 semantic segmentation on PyTorch Lightning.

commands:
  fit         train a model (LightningCLI), e.g. hrseg fit --config configs/demo.yaml
  validate    evaluate a checkpoint on the validation split
  test        evaluate a checkpoint on the test split (per-class IoU table and plots)
  predict     write label / colour PNGs for a folder or glob of images:
                hrseg predict --ckpt best.ckpt --input images/ --output out/ [--overlay] (resumable), or
                hrseg predict --config X.yaml --ckpt_path best.ckpt --data.predict_path images/ (LightningCLI)
  export      export a checkpoint to ONNX, torch.export (.pt2) or safetensors, verified against eager
  data        generate demo data in real dataset layouts (synth) or validate a dataset (check)

Run `hrseg COMMAND --help` for the options of one command.
"""


def _is_standalone_predict(argv: Sequence[str]) -> bool:
    """``hrseg predict --ckpt X --input DIR`` needs no config: the checkpoint carries model and classes."""
    has_config = any(a in ("--config", "-c") or a.startswith("--config=") for a in argv)
    return not has_config and any(a == "--input" or a.startswith("--input=") for a in argv)


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
    if command == "export":
        from hrseg.export import main as export_main

        return export_main(argv[1:])
    if command == "data":
        from hrseg.data.commands import main as data_main

        return data_main(argv[1:])
    if command == "predict" and _is_standalone_predict(argv[1:]):
        from hrseg.callbacks import main as predict_main

        return predict_main(argv[1:])
    if command in TRAINER_COMMANDS:
        from hrseg.lightning_cli import run_lightning_cli

        run_lightning_cli(argv)
        return 0
    print(f"hrseg: unknown command {command!r}\n", file=sys.stderr)
    print(USAGE, file=sys.stderr)
    return 2
