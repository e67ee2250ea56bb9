"""The PASCAL VOC bit-interleaved colour map: one rule for VOC itself and for datasets that bring no palette.

Kept in a module of its own with no imports so inference, plotting and the data package share it without
pulling each other in.
"""

from __future__ import annotations

__all__ = ["voc_colormap"]


def voc_colormap(n: int = 256) -> list[tuple[int, int, int]]:
    """Return the VOC colour map (k=1 -> (128,0,0), ..., 255 -> (224,224,192)).

    The three lowest bits of the index feed the top bit of R, G and B, the next three the next bit, and so on.
    """
    colors: list[tuple[int, int, int]] = []
    for k in range(n):
        r = g = b = 0
        c = k
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        colors.append((r, g, b))
    return colors
