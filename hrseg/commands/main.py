"""The ``hrseg`` command: dispatches to one module per command.

LightningCLI owns ``fit``, ``validate`` and ``test``; ``predict``, ``evaluate``, ``export``, ``data``,
``report`` and ``serve`` are argparse commands with their own ``--help`` (``predict`` runs LightningCLI itself
when given ``--config``).
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
    "serve": "serve",
}

USAGE = """usage: hrseg [-h] [--version] {fit,validate,test,predict,evaluate,export,data,report,serve} ...

HRNetV2 semantic segmentation on PyTorch Lightning.

commands:
  fit         train a model (LightningCLI), e.g. hrseg fit --config demo
  validate    evaluate a checkpoint on the validation split
  test        evaluate a checkpoint on the test split (per-class IoU table and plots)
  predict     write label / colour PNGs for a folder, glob or file of images (resumable):
                hrseg predict --ckpt_path best.ckpt --input images/ --output out/ [--config X.yaml] [...]
  evaluate    score Cityscapes label-id predictions (predict --format cityscapes) with hrseg's metric and
              cityscapesScripts: hrseg evaluate --pred preds/ --gt ROOT/gtFine/val
  export      export a checkpoint to ONNX, torch.export (.pt2), safetensors or a hub model folder
              (--format hub: config.json + model.safetensors + model card; --push-to-hub org/name)
  data        generate demo data in real dataset layouts (synth), validate a dataset (check), count its
              classes (stats)
  report      draw the validation panels and learning curve of a finished fit run
  serve       serve a model over HTTP (LitServe): POST /predict, a page at /, /health, /info:
                hrseg serve --ckpt_path best.ckpt [--port 8000] [--api-key KEY]

Run `hrseg COMMAND --help` for the options of one command.
"""


#: (module, class) of the errors a user's input causes; matched only when the module is already imported, so
#: reporting them never imports torch or Lightning into a command that did not need them
DATA_ERRORS = (
    ("hrseg.checkpoint", "CheckpointError"),
    ("hrseg.data.checks", "DatasetError"),
    ("hrseg.task", "NonFiniteLossError"),
    ("hrseg.plugins", "PluginError"),
    ("hrseg.files", "DiskWriteError"),
)


def _data_error_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = [FileNotFoundError, NotADirectoryError, IsADirectoryError]
    for module_name, class_name in DATA_ERRORS:
        module = sys.modules.get(module_name)
        if module is not None:
            types.append(getattr(module, class_name))
    return tuple(types)


def _run(command: str, argv: list[str]) -> int:
    if command in TRAINER_COMMANDS:
        from hrseg.commands.configs import resolve_config_args

        resolve_config_args(argv)  # an unknown config name fails here, before Lightning is imported
        from hrseg.commands.lightning import run_lightning_cli

        # Data and weights errors are raised in the launching process before any DDP worker starts (see
        # ``HRSegCLI._check_inputs``), so the user reads one message instead of a traceback per process.
        run_lightning_cli([command, *argv])
        return 0
    module = importlib.import_module(f"hrseg.commands.{TOOL_COMMANDS[command]}")
    return int(module.main(argv))


def main(args: Sequence[str] | None = None) -> int:
    """Run the ``hrseg`` command line; returns the process exit code.

    Mistakes end in one line on stderr, ``hrseg <command>: error: ...``: exit 2 for a command line that
    cannot run (:class:`~hrseg.commands.options.UsageError`, unknown options, an unknown config name), 1 for
    inputs that cannot be used (a missing file or folder, a corrupt checkpoint, a dataset problem).
    """
    from hrseg.commands.options import EXIT_DATA, EXIT_USAGE, UsageError

    argv = list(sys.argv[1:] if args is None else args)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    if argv[0] in ("-V", "--version"):
        from hrseg._version import __version__

        print(f"hrseg {__version__}")
        return 0
    command = argv[0]
    if command not in TOOL_COMMANDS and command not in TRAINER_COMMANDS:
        choices = ", ".join([*TRAINER_COMMANDS, *TOOL_COMMANDS])
        print(f"hrseg: error: unknown command {command!r} (choose from {choices})", file=sys.stderr)
        return EXIT_USAGE
    try:
        from hrseg.plugins import load_plugins

        load_plugins()  # heads and models registered outside hrseg, before any name is resolved
        return _run(command, argv[1:])
    except UsageError as err:
        print(f"hrseg {command}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as err:
        from hrseg.files import FULL_DISK_ERRNOS, describe_disk_error, disk_error_of

        # a full / read-only disk anywhere (a logger's file, a cache): one line
        refused = disk_error_of(err, FULL_DISK_ERRNOS)
        if refused is not None and not isinstance(err, _data_error_types()):
            print(
                f"hrseg {command}: error: {describe_disk_error(refused.filename or 'a file', refused)}",
                file=sys.stderr,
            )
            return EXIT_DATA
        if not isinstance(err, _data_error_types()):
            raise  # a bug, not a mistake: keep the traceback
        # an error that lists much (every key of a mismatched checkpoint) also has a one-line form
        one_line = getattr(err, "one_line", None)
        print(f"hrseg {command}: error: {one_line() if callable(one_line) else err}", file=sys.stderr)
        return EXIT_DATA
