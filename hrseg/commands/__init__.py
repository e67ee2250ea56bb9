"""The ``hrseg`` command line: one module per command, kept apart from the library.

``main`` dispatches ``fit``/``validate``/``test`` to LightningCLI (:mod:`hrseg.commands.lightning`),
``predict`` to :mod:`hrseg.commands.predict`, ``export`` to :mod:`hrseg.commands.export`, ``data`` to
:mod:`hrseg.commands.data` and ``report`` to :mod:`hrseg.commands.report`. Library modules never import
from here.
"""

from __future__ import annotations

from hrseg.commands.main import main

__all__ = ["main"]
