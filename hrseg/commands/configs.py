"""The configs shipped inside the package, and how a ``--config`` value names one.

``hrseg fit --config demo`` and ``hrseg export --calib-data cityscapes/hrnetv2_w48`` follow one rule, so an
installed ``hrseg`` finds its recipes outside a checkout. Imports nothing heavy: commands that only read a
config's ``data:`` section stay free of Lightning.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hrseg.commands.options import UsageError

__all__ = [
    "CONFIG_DIR",
    "ConfigNotFoundError",
    "list_configs",
    "require_config",
    "resolve_config",
    "resolve_config_args",
]

#: Shipped configs (the repository's top-level ``configs`` is a symlink to this folder).
CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


def list_configs() -> list[str]:
    """Names of the shipped configs, e.g. ``demo``, ``cityscapes/hrnetv2_w48``."""
    return sorted(p.relative_to(CONFIG_DIR).with_suffix("").as_posix() for p in CONFIG_DIR.rglob("*.yaml"))


def resolve_config(value: str) -> str:
    """Map a config argument to a file: an existing path wins, else a shipped config name.

    ``demo``, ``demo.yaml``, ``cityscapes/hrnetv2_w48`` and ``configs/demo.yaml`` (from any working
    directory) all resolve to files under :data:`CONFIG_DIR`. Unknown names are returned unchanged so the
    caller reports the missing file itself.
    """
    if Path(value).expanduser().exists():
        return value
    name = value.removeprefix("./").removeprefix("configs/").removeprefix("hrseg/configs/")
    for candidate in (CONFIG_DIR / name, CONFIG_DIR / f"{name}.yaml"):
        if candidate.is_file():
            return str(candidate)
    return value


class ConfigNotFoundError(UsageError, FileNotFoundError):
    """A ``--config`` value that is neither a file nor a shipped config (the error lists the shipped ones)."""


def require_config(value: str) -> str:
    """:func:`resolve_config`, failing with the list of shipped configs when nothing is found.

    Raises:
        ConfigNotFoundError: ``value`` is neither an existing file nor a shipped config name.
    """
    path = Path(resolve_config(value)).expanduser()
    if not path.is_file():
        what = "is a folder, not a config file" if path.is_dir() else "not found"
        raise ConfigNotFoundError(
            f"config {value!r} {what}; give a YAML file or a shipped config: {', '.join(list_configs())}"
        )
    return str(path)


def resolve_config_args(argv: Sequence[str]) -> list[str]:
    """``argv`` with every ``--config`` / ``-c`` value replaced by its file (:func:`require_config`).

    Raises:
        ConfigNotFoundError: a config value names neither a file nor a shipped config.
    """
    out: list[str] = []
    expect_value = False
    for arg in argv:
        if expect_value:
            out.append(require_config(arg))
            expect_value = False
        elif arg in ("--config", "-c"):
            out.append(arg)
            expect_value = True
        elif arg.startswith(("--config=", "-c=")):
            name, value = arg.split("=", 1)
            out.append(f"{name}={require_config(value)}")
        else:
            out.append(arg)
    return out
