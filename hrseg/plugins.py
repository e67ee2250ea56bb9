"""Plugins: modules outside hrseg that register heads or models, imported by the ``hrseg`` command.

A plugin is any importable module whose import registers something (``@register_head("foo")`` ...). The
command imports, before it resolves any name, the modules named in the environment variable
``HRSEG_PLUGINS`` (comma-separated import names) and the entry points of the group ``hrseg.plugins`` of the
installed distributions. Python users need none of this: importing their module registers it.
"""

from __future__ import annotations

import importlib
import os
from importlib.metadata import entry_points

__all__ = ["ENTRY_POINT_GROUP", "ENV_VAR", "PluginError", "load_plugins"]

ENV_VAR = "HRSEG_PLUGINS"
ENTRY_POINT_GROUP = "hrseg.plugins"


class PluginError(ImportError):
    """A plugin named by ``HRSEG_PLUGINS`` or an ``hrseg.plugins`` entry point failed to import."""


def load_plugins() -> list[str]:
    """Import every plugin module (environment variable first, then entry points); returns their names.

    Raises:
        PluginError: a plugin failed to import; the message says where it was named and why it failed.
    """
    loaded: list[str] = []
    for name in (n.strip() for n in os.environ.get(ENV_VAR, "").split(",")):
        if not name:
            continue
        try:
            importlib.import_module(name)
        except ImportError as err:
            raise PluginError(f"plugin {name!r} named in {ENV_VAR} failed to import: {err}") from err
        loaded.append(name)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
        except ImportError as err:
            raise PluginError(
                f"plugin {ep.value!r} (entry point {ep.name!r} of {ENTRY_POINT_GROUP}): {err}"
            ) from err
        loaded.append(ep.value)
    return loaded
