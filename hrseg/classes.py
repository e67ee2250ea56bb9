"""Class metadata (class count, names, palette, ignore label): its defaults and checks, once.

DataModules, the training task, checkpoints / exported bundles and plots all describe the classes the same
way; :func:`resolve_class_metadata` fills what is missing (``class_<i>`` names, the VOC colour map) and
rejects what does not fit, so the rules cannot drift apart. Layer 0: it imports only :mod:`hrseg.colors`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from hrseg.colors import IGNORE_INDEX, Color, default_palette

__all__ = ["ClassInfo", "resolve_class_metadata"]


@dataclass(frozen=True)
class ClassInfo:
    """Checked class metadata.

    Attributes:
        num_classes: number of train ids (0 .. num_classes - 1).
        class_names: one name per class.
        palette: one RGB colour per class, at least ``num_classes`` of them (a longer colour table, such as
            VOC's 256 entries, is kept whole).
        ignore_index: the label value losses and metrics skip; never a class id.
    """

    num_classes: int
    class_names: list[str]
    palette: list[Color]
    ignore_index: int = IGNORE_INDEX


def resolve_class_metadata(
    num_classes: int,
    class_names: Sequence[str] | None = None,
    palette: Sequence[Sequence[int]] | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> ClassInfo:
    """Fill the defaults of missing class metadata and check what was given.

    Args:
        num_classes: number of classes (>= 1).
        class_names: one name per class; None = ``class_<i>``.
        palette: RGB triples, at least one per class; None = :func:`hrseg.colors.default_palette`.
        ignore_index: label value that is no class.

    Returns:
        The :class:`ClassInfo` (names as ``str``, colours as int triples).

    Raises:
        ValueError: ``num_classes < 1``, a name count other than ``num_classes``, too few or malformed
            colours, or an ``ignore_index`` that is a class id.
    """
    num_classes = int(num_classes)
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    ignore_index = int(ignore_index)
    if 0 <= ignore_index < num_classes:
        raise ValueError(f"ignore_index {ignore_index} collides with a class id (num_classes={num_classes})")
    if class_names is None:
        class_names = [f"class_{i}" for i in range(num_classes)]
    names = [str(n) for n in class_names]
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class names given for num_classes={num_classes}")
    if palette is None:
        colors = default_palette(num_classes)
    else:
        if len(palette) < num_classes or any(len(rgb) != 3 for rgb in palette):
            raise ValueError(f"palette must hold {num_classes} RGB triples, got {len(palette)} entries")
        colors = [(int(rgb[0]), int(rgb[1]), int(rgb[2])) for rgb in palette]
    return ClassInfo(num_classes, names, colors, ignore_index)
