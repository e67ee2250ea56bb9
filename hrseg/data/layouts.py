"""What the generated-layout writers of the dataset modules share.

Each dataset module writes generated scenes (:mod:`hrseg.data.scenes`) in its own exact on-disk layout
(``write_layout`` of :func:`hrseg.data.registry.register_dataset`); ``hrseg data synth`` calls them, and the
loader tests read what they write, so every DataModule is exercised on its real layout without downloading
anything.
"""

from __future__ import annotations

from typing import Any

__all__ = ["progress_bar"]


def progress_bar(total: int, desc: str, enabled: bool) -> Any:
    """A tqdm bar over ``total`` images (hidden when not ``enabled``)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="img", disable=not enabled)
