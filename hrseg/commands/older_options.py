"""The flat task options of earlier releases, on the command line and in config files.

``SegmentationTask`` once took its loss, optimiser and evaluation protocol as flat options (``--model.lr``,
``--model.loss ohem``, ``--model.ohem_thresh``, ``--model.eval_mode`` ...); they are now one value each
(``--model.optimizer.*``, ``--model.loss.*``, ``--model.eval_protocol.*``). On the command line the old
spellings are rewritten with a one-line note; a config file is the user's to edit, so one in the flat layout
is refused in one line naming the file and where each option went. Checkpoints with the flat keys are read by
:func:`hrseg.task.upgrade_hparams`. The tables of old names live with each group (``LEGACY_*_KEYS``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hrseg.commands.options import UsageError, deprecation_note
from hrseg.eval_protocol import LEGACY_PROTOCOL_KEYS
from hrseg.losses import LEGACY_LOSS_KEYS, LOSS_NAMES
from hrseg.optim import LEGACY_OPTIMIZER_KEYS

__all__ = ["check_config_layout", "upgrade_legacy_options"]


def _legacy_model_options() -> dict[str, str | None]:
    """Flat ``--model.*`` options of earlier releases -> their grouped spelling (None: no single option)."""
    table: dict[str, str | None] = {}
    for group, keys in (
        ("optimizer", LEGACY_OPTIMIZER_KEYS),
        ("loss", LEGACY_LOSS_KEYS),
        ("eval_protocol", LEGACY_PROTOCOL_KEYS),
    ):
        for old, new in keys.items():
            table[f"--model.{old}"] = f"--model.{group}.{new}" if new is not None else None
    return table


def _is_loss_terms(value: str) -> bool:
    """Whether a ``--model.loss`` value is a bare loss spec (``ohem``, ``ce+dice``, ``[{name: ...}]``)."""
    text = value.strip()
    return text.startswith("[") or all(part.strip() in LOSS_NAMES for part in text.split("+"))


def upgrade_legacy_options(args: Sequence[str], prog: str) -> list[str]:
    """``args`` with the flat ``--model.*`` options of earlier releases in their grouped spelling.

    ``--model.lr 0.02`` -> ``--model.optimizer.lr 0.02``, ``--model.optimizer adamw`` ->
    ``--model.optimizer.name adamw``, ``--model.loss ohem`` -> ``--model.loss.terms ohem``,
    ``--model.eval_mode slide`` -> ``--model.eval_protocol.mode slide`` ..., each with a one-line note.

    Raises:
        UsageError: ``--model.ohem_thresh`` / ``--model.ohem_min_kept``: now options of the ohem loss term.
    """
    table = _legacy_model_options()
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        name, has_value, value = arg.partition("=")
        if not has_value and i + 1 < len(args) and name in (*table, "--model.optimizer", "--model.loss"):
            value, i = args[i + 1], i + 1
        new = name
        if name in table:
            grouped = table[name]
            if grouped is None:
                raise UsageError(
                    f"{name} is now an option of the ohem loss term, e.g. "
                    "--model.loss.terms='[{name: ohem, thresh: 0.7, min_kept: 100000}]'"
                )
            new = grouped
        elif name == "--model.optimizer" and value in ("sgd", "adamw"):
            new = "--model.optimizer.name"
        elif name == "--model.loss" and _is_loss_terms(value):
            new = "--model.loss.terms"
        if new != name:
            deprecation_note(prog, name, new)
        out.append(f"{new}={value}" if value or has_value else arg)
        i += 1
    return out


def check_config_layout(args: Sequence[str]) -> None:
    """Refuse, in one line naming the file, a ``--config`` whose ``model`` section has the older flat options.

    jsonargparse would report ``loss: ohem`` as a failed union match and ``lr: 0.02`` as an unknown key; this
    says where each option went instead. (The command line's flat spellings are rewritten with a note; a
    file is the user's to edit, and the shipped configs show the grouped layout.)
    """
    import yaml

    table = {old.removeprefix("--model."): new for old, new in _legacy_model_options().items()}
    for i, arg in enumerate(args):
        if arg in ("--config", "-c") and i + 1 < len(args):
            path = args[i + 1]
        elif arg.startswith(("--config=", "-c=")):
            path = arg.split("=", 1)[1]
        else:
            continue
        try:
            model = (yaml.safe_load(Path(path).read_text()) or {}).get("model")
        except (OSError, yaml.YAMLError, AttributeError):
            continue  # LightningCLI reports an unreadable file itself
        if not isinstance(model, dict):
            continue
        moved = {k: table[k] for k in model if k in table}
        if isinstance(model.get("optimizer"), str):
            moved["optimizer"] = "--model.optimizer.name"
        if isinstance(model.get("loss"), str | list):
            moved["loss"] = "--model.loss.terms"
        if moved:
            where = ", ".join(
                f"{old} -> {new.removeprefix('--model.') if new else 'an option of the ohem term'}"
                for old, new in moved.items()
            )
            raise UsageError(
                f"{path}: the model section uses the flat options of earlier hrseg versions; group them: "
                f"{where} (the shipped configs show the layout: hrseg fit --config demo --print_config)"
            )
