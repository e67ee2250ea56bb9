"""The sliding-window sweep: windows run row by row, overlaps blended with a count map, memory per window row.

One implementation serves the in-memory protocol (:func:`hrseg.inference.infer`, modes ``slide`` and
``tile``) and the streamed prediction of images larger than memory (:mod:`hrseg.deploy.stream`), so both
give the same numbers bit for bit: every pixel's value is the sum of the outputs of the windows covering it,
added in the same (row-major) order, divided by how many windows cover it.

The sweep visits the window rows top to bottom. Within a row it keeps only the columns that a later window
of the row still adds to, and it hands on to the next row only the rows where the two overlap (``window -
stride`` rows): a finished block is yielded as soon as no later window touches it. A column range
(``columns``) restricts the sweep to the windows that overlap it, so a very wide image is swept in vertical
strips, each with its own bounded carry; windows straddling a strip border run once for each strip (the same
crop, so the same output).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Block", "WindowGrid", "sliding_window_starts", "sweep"]

#: ``(y0, y1, x0, x1, values)``: rows ``[y0, y1)`` and columns ``[x0, x1)`` of the blended output,
#: ``values`` of shape ``(B, C, y1 - y0, x1 - x0)``.
Block = tuple[int, int, int, int, Tensor]


def sliding_window_starts(length: int, window: int, stride: int) -> list[int]:
    """Window offsets along one axis: every ``stride``, the last one aligned to the border.

    A window at least as long as the axis gives the single offset 0.
    """
    if length <= window:
        return [0]
    steps = -(-(length - window) // stride) + 1
    return sorted({min(i * stride, length - window) for i in range(steps)})


@dataclass(frozen=True)
class WindowGrid:
    """The windows of a sliding-window pass over an image: their offsets along each axis and crop size.

    A window larger than the image along an axis is cut to the image (the crop covers the whole axis).

    Args:
        height: image rows.
        width: image columns.
        crop: ``(rows, columns)`` of every window after cutting to the image.
        rows: window offsets along the rows (sorted, the last aligned to the bottom border).
        cols: window offsets along the columns.
    """

    height: int
    width: int
    crop: tuple[int, int]
    rows: tuple[int, ...]
    cols: tuple[int, ...]

    @classmethod
    def of(cls, height: int, width: int, window: tuple[int, int], stride: tuple[int, int]) -> WindowGrid:
        """The grid of ``window``-sized windows every ``stride`` over a ``height`` x ``width`` image.

        Raises:
            ValueError: a stride larger than the window (pixels between windows would have no output).
        """
        if stride[0] > window[0] or stride[1] > window[1]:
            raise ValueError(
                f"the window stride {stride[0]}x{stride[1]} is larger than the window "
                f"{window[0]}x{window[1]}: pixels between windows would have no prediction"
            )
        ch, cw = min(window[0], height), min(window[1], width)
        rows = tuple(sliding_window_starts(height, ch, stride[0]))
        cols = tuple(sliding_window_starts(width, cw, stride[1]))
        return cls(height, width, (ch, cw), rows, cols)

    def coverage(self, starts: tuple[int, ...], length: int, size: int) -> Tensor:
        """How many windows cover each position of one axis (float, exact small integers)."""
        count = torch.zeros(length, dtype=torch.float64)
        for s in starts:
            count[s : s + size] += 1
        return count

    def first_row_reaching(self, row: int) -> int:
        """Index of the first window row that covers ``row`` or a row below it."""
        return next((i for i, y in enumerate(self.rows) if y + self.crop[0] > row), len(self.rows))


def sweep(
    read: Callable[[int, int, int, int], Tensor],
    grid: WindowGrid,
    run: Callable[[Tensor], Tensor],
    batch: int,
    divisor: int = 1,
    columns: tuple[int, int] | None = None,
    start_row: int = 0,
) -> Iterator[Block]:
    """Run every window of ``grid`` and yield the blended output block by block, top to bottom.

    Args:
        read: ``(y0, y1, x0, x1) -> (B, C_in, y1 - y0, x1 - x0)`` network input of that region.
        grid: the windows.
        run: ``(N, C_in, h, w) -> (N, C, h, w)`` window outputs at the crop size (N = windows x B,
            window-major).
        batch: windows per ``run`` call (a call never mixes two window rows).
        divisor: every sum is divided by the window count times this (the passes a window output sums).
        columns: ``(x0, x1)``: only the output columns of this range (and the windows overlapping it).
        start_row: rows above this are not yielded (their windows run only where they reach below it).

    Yields:
        :data:`Block` s; together they tile rows ``[start_row, height)`` x ``columns`` exactly once.
    """
    ch, cw = grid.crop
    c0, c1 = columns if columns is not None else (0, grid.width)
    xs = [x for x in grid.cols if x < c1 and x + cw > c0]
    edges = sorted({e for x in xs for e in (x, x + cw)})
    segments = list(itertools.pairwise(edges))
    row_count = grid.coverage(grid.rows, grid.height, ch)
    col_count = grid.coverage(grid.cols, grid.width, cw)
    carry: dict[int, Tensor] = {}  # segment -> its rows shared with the next window row (sums so far)
    for i in range(grid.first_row_reaching(start_row), len(grid.rows)):
        y = grid.rows[i]
        end = grid.rows[i + 1] if i + 1 < len(grid.rows) else y + ch  # rows [y, end) finish with this row
        band: dict[int, Tensor] = {}
        next_carry: dict[int, Tensor] = {}
        for k in range(0, len(xs), batch):
            chunk = xs[k : k + batch]
            out = run(torch.cat([read(y, y + ch, x, x + cw) for x in chunk], dim=0))
            b = out.shape[0] // len(chunk)
            for j, x in enumerate(chunk):
                part = out[j * b : (j + 1) * b]
                for s, (a, e) in enumerate(segments):
                    if e <= x or a >= x + cw:
                        continue
                    if s not in band:
                        band[s] = torch.zeros(
                            (b, out.shape[1], ch, e - a), dtype=out.dtype, device=out.device
                        )
                        if s in carry:
                            shared = carry.pop(s)
                            band[s][:, :, : shared.shape[2]] = shared
                    band[s] += part[:, :, :, a - x : e - x]
            limit = xs[k + batch] if k + batch < len(xs) else edges[-1]  # later windows start here or after
            for s in sorted(band):
                a, e = segments[s]
                if e > limit:
                    continue
                values = band.pop(s)
                if end < y + ch:  # a copy: a view would keep the whole window row's rows alive
                    next_carry[s] = values[:, :, end - y :].clone()
                lo, hi = max(a, c0), min(e, c1)
                top = max(y, start_row)
                if lo < hi and top < end:
                    count = row_count[top:end, None] * col_count[None, lo:hi] * divisor
                    block = values[:, :, top - y : end - y, lo - a : hi - a]
                    yield top, end, lo, hi, block / count.to(block.dtype).to(block.device)
        carry = next_carry
