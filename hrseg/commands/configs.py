"""The configs shipped inside the package, and how a ``--config`` value names one.

``hrseg fit --config demo`` and ``hrseg export --calib-data cityscapes/hrnetv2_w48`` follow one rule, so an
installed ``hrseg`` finds its recipes outside a checkout. Imports nothing heavy: commands that only read a
config's ``data:`` section stay free of Lightning.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["CONFIG_DIR", "list_configs", "resolve_config"]

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
