"""The installed hrseg version, read once from the package metadata (``version`` in pyproject.toml).

A bottom module: the package root re-exports it as ``hrseg.__version__``, and modules that need the version
(the hub client's user agent, ``hrseg --version``) import it from here, never from the package root above
every layer.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["__version__"]

try:
    __version__: str = version("hrseg")
except PackageNotFoundError:  # a source tree put on sys.path without installing it: no metadata to read
    __version__ = "0+unknown"
