"""What the generated-layout writers of the dataset modules share.

Each dataset module writes generated scenes (:mod:`hrseg.data.scenes`) in its own exact on-disk layout
(``write_layout`` of :func:`hrseg.data.registry.register_dataset`); ``hrseg data synth`` calls them, and the
loader tests read what they write, so every DataModule is exercised on its real layout without downloading
anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from hrseg.data.scenes import SCENE_LABELS

__all__ = ["progress_bar", "scene_to_raw"]


def progress_bar(total: int, desc: str, enabled: bool) -> Any:
    """A tqdm bar over ``total`` images (hidden when not ``enabled``)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="img", disable=not enabled)


def scene_to_raw(mask: np.ndarray, raw_of: Mapping[str, int], unlabelled: int) -> np.ndarray:
    """Relabel a generated scene's train-id mask with a dataset's raw file values.

    Args:
        mask: the scene's label map (:data:`~hrseg.data.scenes.SCENE_LABELS` train ids, 255 unlabelled).
        raw_of: scene class name -> the dataset's raw value; scene classes not named become ``unlabelled``.
        unlabelled: the dataset's raw value of unlabelled pixels.

    Returns:
        A uint8 map of raw values (values above 255 are no 8-bit PNG value and are refused).
    """
    lut = np.full(256, unlabelled, dtype=np.int64)
    for name, raw in raw_of.items():
        lut[SCENE_LABELS.class_names.index(name)] = raw
    if lut.max() > 255 or lut.min() < 0:
        raise ValueError("raw label values must fit in 0..255")
    return lut[mask].astype(np.uint8)
