"""Streamed prediction of images larger than memory: windows read, run, blended and written band by band.

:func:`predict_raster` reads a raster window by window (:class:`hrseg.rasters.RasterSource`), runs the
protocol's windows through :func:`hrseg.inference.tiling.sweep` (the sweep the in-memory protocol runs, so
the label map is the in-memory one bit for bit), and writes the labels of every finished band of rows to a
raw file beside the output. A progress file records the last finished band: a killed run starts again from
it. When the last band is written, the raw labels become a tiled, compressed GeoTIFF with the input's CRS,
transform and size (:func:`hrseg.rasters.write_label_raster`), and the raw and progress files go. Until then
the output does not exist, so a half-written prediction is never mistaken for a finished one.

Peak memory is bounded by the window batch, one strip's overlap carry (classes x (window - stride) x strip
width floats) and one band of labels (band rows x strip width), not by the image (docs/large-images.md).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from hrseg.eval_protocol import EvalProtocol
from hrseg.images import to_image_tensor
from hrseg.inference.protocol import class_argmax, slide_runner
from hrseg.inference.tiling import WindowGrid, sweep
from hrseg.metadata import ModelMeta
from hrseg.rasters import (
    RasterError,
    RasterSource,
    probe_raster,
    rasterio_available,
    write_label_raster,
)

__all__ = [
    "DEFAULT_STREAM_WINDOW",
    "STREAM_ABOVE_MP",
    "STREAM_MODES",
    "StreamOptions",
    "partial_paths",
    "predict_raster",
    "should_stream",
    "stream_protocol",
]

#: ``auto``: stream georeferenced rasters and images above the threshold; ``on``: every image; ``off``: none.
STREAM_MODES = ("auto", "on", "off")

#: Images above this many megapixels are streamed by default (``hrseg predict --stream auto``).
STREAM_ABOVE_MP = 16.0
#: The window of a streamed prediction whose protocol has none (mode ``whole``).
DEFAULT_STREAM_WINDOW = (1024, 1024)


@dataclass(frozen=True)
class StreamOptions:
    """How a raster is streamed.

    Args:
        bands: 1-based input bands (``(3, 2, 1)``); None: every band of an RGB or grey raster.
        band_rows: output rows written (and resumable) at a time.
        strip_width: columns swept at a time: wider images go in vertical strips, each with its own carry
            (windows straddling a strip border run once per strip: about window / strip_width extra work).
        overviews: build internal overviews in the output GeoTIFF.
    """

    bands: tuple[int, ...] | None = None
    band_rows: int = 1024
    strip_width: int = 8192
    overviews: bool = False

    def __post_init__(self) -> None:
        """Reject sizes that cannot work."""
        if self.band_rows < 1 or self.strip_width < 1:
            raise ValueError(
                f"band_rows and strip_width must be >= 1, got {self.band_rows}, {self.strip_width}"
            )


def stream_protocol(protocol: EvalProtocol) -> tuple[EvalProtocol, str | None]:
    """The protocol a streamed prediction runs, and a note when it differs from ``protocol``.

    ``slide`` at one scale and ``tile`` stream as they are. ``slide`` at several scales resizes the whole
    image, so it streams as ``tile`` (each window at every scale), and so does ``official`` (its crop as the
    window); ``whole`` gets the window
    :data:`DEFAULT_STREAM_WINDOW` (``slide``, or ``tile`` with several scales).
    """
    if protocol.mode == "tile" or (protocol.mode == "slide" and protocol.scales == (1.0,)):
        return protocol, None
    if protocol.mode == "slide":
        return protocol.replace(mode="tile"), (
            "slide at several scales resizes the whole image: streamed as tile, every window at every scale"
        )
    if protocol.mode == "official":  # its resize of the whole image by the long side cannot stream
        return protocol.replace(mode="tile"), (
            "the official pipeline resizes the whole image: streamed as tile, its crop as the window"
        )
    mode = "slide" if protocol.scales == (1.0,) else "tile"
    window = protocol.window or DEFAULT_STREAM_WINDOW
    streamed = protocol.replace(mode=mode, window=window)
    return streamed, "the whole-image protocol runs windows when streamed (--window to choose)"


def _pil_megapixels(path: Path) -> float | None:
    """Megapixels from the image header through PIL (None: PIL cannot tell)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.width * img.height / 1e6
    except Exception:  # any failure: the reader that opens the file reports it, naming it
        return None


def should_stream(
    path: Path, mode: str = "auto", above_mp: float = STREAM_ABOVE_MP, bands: object = None
) -> tuple[bool, str | None]:
    """Whether ``hrseg predict`` streams ``path``, and a line to print about the choice.

    ``auto`` streams georeferenced rasters (their output keeps the georeference), images above ``above_mp``
    megapixels and any image read with chosen ``bands``; the others go through memory as before.

    Raises:
        ValueError: an unknown mode.
        ImportError: streaming asked for (``on``, ``bands``) without rasterio.
    """
    if mode not in STREAM_MODES:
        raise ValueError(f"stream must be one of {STREAM_MODES}, got {mode!r}")
    if mode == "off":
        return False, None
    if not rasterio_available():
        if mode == "on" or bands is not None:
            raise ImportError(
                "streamed prediction (--stream on, --bands) needs rasterio: pip install hrseg[geo]"
            )
        mp = _pil_megapixels(path)
        if mp is not None and mp > above_mp:
            return False, (
                f"{path}: {mp:.1f} MP is above {above_mp:g} MP, but streaming needs rasterio "
                "(pip install hrseg[geo]); predicted in memory"
            )
        return False, None
    if mode == "on" or bands is not None:
        return True, None  # asked for: nothing to say
    try:
        info = probe_raster(path)
    except RasterError:
        return False, None  # not for GDAL: the in-memory reader opens it, or says why it cannot
    if info.georeferenced:
        return True, f"{path}: georeferenced, streamed into a GeoTIFF with its georeference"
    if info.megapixels > above_mp:
        return True, f"{path}: {info.megapixels:.1f} MP is above {above_mp:g} MP, streamed"
    return False, None


def partial_paths(output: Path) -> tuple[Path, Path]:
    """The raw labels and the progress file of an unfinished streamed prediction to ``output``."""
    return output.with_name(output.name + ".partial"), output.with_name(output.name + ".progress.json")


class _RowCache:
    """The rows of a strip's columns read so far, kept while windows still need them.

    The sweep asks for window rows top to bottom; each read decodes only the rows not held yet, so formats
    read sequentially (PNG, JPEG, striped TIFF) are decoded once per strip.
    """

    def __init__(self, source: RasterSource, x0: int, x1: int) -> None:
        self.source, self.x0, self.x1 = source, x0, x1
        self.top = 0
        self.rows = np.zeros((0, x1 - x0, len(source.bands)), dtype=source.dtype)

    def get(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        bottom = self.top + self.rows.shape[0]
        if y0 < self.top or y0 >= bottom:
            self.top, self.rows, bottom = y0, self.rows[:0], y0
        keep = self.rows[y0 - self.top :]
        if y1 > bottom:
            new = self.source.read(bottom, y1, self.x0, self.x1)
            keep = np.concatenate([keep, new]) if keep.shape[0] else new
        self.top, self.rows = y0, keep
        return self.rows[: y1 - y0, x0 - self.x0 : x1 - self.x0]


def _fingerprint(
    source: RasterSource, meta: ModelMeta, protocol: EvalProtocol, options: StreamOptions
) -> dict:
    stat = source.path.stat()
    return {
        "input": str(source.path.resolve()),
        "input_size": stat.st_size,
        "input_mtime_ns": stat.st_mtime_ns,
        "shape": [source.height, source.width],
        "bands": list(source.bands),
        "model": meta.model,
        "classes": list(meta.labels.class_names),
        "protocol": protocol.to_dict(),
        "band_rows": options.band_rows,
        "strip_width": options.strip_width,
    }


def _write_rows(fd: int, labels: np.ndarray, y0: int, x0: int, width: int) -> None:
    """Rows of labels at ``(y0, x0)`` of the raw row-major file ``width`` columns wide."""
    item = labels.dtype.itemsize
    if x0 == 0 and labels.shape[1] == width:
        os.pwrite(fd, np.ascontiguousarray(labels).tobytes(), y0 * width * item)
        return
    for r in range(labels.shape[0]):
        os.pwrite(fd, labels[r].tobytes(), ((y0 + r) * width + x0) * item)


def _save_progress(path: Path, fingerprint: dict, strip: int, row: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"fingerprint": fingerprint, "strip": strip, "row": row}))
    os.replace(tmp, path)


def _load_progress(path: Path, raw: Path, fingerprint: dict, expected_bytes: int) -> tuple[int, int] | None:
    """``(strip, row)`` to resume from, or None when there is nothing (valid) to resume."""
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if state.get("fingerprint") != fingerprint or not raw.is_file() or raw.stat().st_size != expected_bytes:
        return None
    return int(state["strip"]), int(state["row"])


def _strip_blocks(
    source: RasterSource,
    grid: WindowGrid,
    columns: tuple[int, int],
    start_row: int,
    run: Callable[[Tensor], Tensor],
    divisor: int,
    batch: int,
    prepare: Callable[[np.ndarray], Tensor],
) -> Iterator[tuple[int, int, int, int, Tensor]]:
    """The sweep of one strip, its windows read through a row cache."""
    cw = grid.crop[1]
    xs = [x for x in grid.cols if x < columns[1] and x + cw > columns[0]]
    cache = _RowCache(source, xs[0], xs[-1] + cw)

    def read(y0: int, y1: int, x0: int, x1: int) -> Tensor:
        return prepare(cache.get(y0, y1, x0, x1))

    yield from sweep(read, grid, run, batch, divisor, columns=columns, start_row=start_row)


def predict_raster(
    path: str | Path,
    output: str | Path,
    model: Callable[[Tensor], Tensor],
    meta: ModelMeta,
    protocol: EvalProtocol,
    *,
    device: torch.device | str = "cpu",
    batch_windows: int = 4,
    size_divisor: int = 1,
    in_channels: int = 3,
    options: StreamOptions | None = None,
    progress: bool = False,
    resume: bool = True,
) -> Path:
    """Predict one raster window by window and write its label GeoTIFF; resumes an interrupted run.

    Args:
        path: the input raster (GeoTIFF, TIFF, PNG, JPEG, ...: what GDAL reads).
        output: the label GeoTIFF to write (``uint8``, ``uint16`` above 255 classes; nodata 255 / 65535 at
            the input's nodata and masked pixels; the class palette as colour table; the input's CRS and
            transform).
        model: the network, in eval mode (``Segmenter.model``).
        meta: its metadata (normalisation, classes, align_corners).
        protocol: a window protocol (see :func:`stream_protocol`).
        device: where the model runs.
        batch_windows: windows per forward.
        size_divisor: pad network inputs to a multiple of this.
        in_channels: the model's input channels.
        options: bands, band rows, strip width, overviews.
        progress: a progress bar in megapixels.
        resume: go on from the progress file of an interrupted run with the same settings.

    Returns:
        ``output``.

    Raises:
        RasterError: the raster cannot be read (naming it).
        ValueError: a protocol that cannot stream.
    """
    opts = options or StreamOptions()
    out = Path(output)
    dev = torch.device(device)
    align = meta.align_corners
    run, divisor = slide_runner(
        model,
        protocol,
        num_classes=meta.num_classes,
        align_corners=align,
        size_divisor=size_divisor,
        flip_permutation=meta.labels.flip_permutation(),
    )

    def prepare(pixels: np.ndarray) -> Tensor:
        return meta.normalize(to_image_tensor(pixels, in_channels)[0].to(dev))

    with RasterSource(path, opts.bands, in_channels) as source:
        h, w = source.height, source.width
        assert protocol.window is not None  # slide_runner accepted it: slide or tile have one
        stride = protocol.effective_stride()
        assert stride is not None
        grid = WindowGrid.of(h, w, protocol.window, stride)
        dtype = np.dtype(np.uint8 if meta.num_classes <= 255 else np.uint16)
        nodata = 255 if dtype == np.uint8 else 65535  # the largest value: never a class id
        strips = [(c, min(c + opts.strip_width, w)) for c in range(0, w, opts.strip_width)]
        raw, state = partial_paths(out)
        fingerprint = _fingerprint(source, meta, protocol, opts)
        start = _load_progress(state, raw, fingerprint, h * w * dtype.itemsize) if resume else None
        out.parent.mkdir(parents=True, exist_ok=True)
        if start is None:
            start = (0, 0)
            with open(raw, "wb") as fh:
                fh.truncate(h * w * dtype.itemsize)
            _save_progress(state, fingerprint, 0, 0)
        else:  # said with or without a progress bar: the run does not start from the top
            print(
                f"{source.path}: resuming at strip {start[0] + 1}/{len(strips)}, row {start[1]}",
                file=sys.stderr,
            )
        bar: Any = None
        if progress:
            from tqdm.auto import tqdm

            done = sum((c1 - c0) * h for c0, c1 in strips[: start[0]]) + start[1] * (
                strips[start[0]][1] - strips[start[0]][0] if start[0] < len(strips) else 0
            )
            bar = tqdm(
                total=round(h * w / 1e6, 2), initial=round(done / 1e6, 2), unit="MP", desc=source.path.name
            )
        fd = os.open(raw, os.O_WRONLY)
        try:
            with torch.inference_mode():
                for k in range(start[0], len(strips)):
                    c0, c1 = strips[k]
                    first = start[1] if k == start[0] else 0
                    labels = np.zeros((opts.band_rows + grid.crop[0], c1 - c0), dtype=dtype)
                    band_top = first  # labels[0] is this row
                    finished = first  # rows above this are final (all their blocks were yielded)
                    row_end = first
                    blocks = _strip_blocks(
                        source, grid, (c0, c1), first, run, divisor, batch_windows, prepare
                    )
                    for y0, y1, x0, x1, values in blocks:
                        if y0 >= row_end:  # a new window row: every row above it is final
                            finished = row_end
                            row_end = y1
                            band_top, labels = _flush(
                                fd,
                                labels,
                                band_top,
                                finished,
                                opts.band_rows,
                                c0,
                                w,
                                state,
                                fingerprint,
                                k,
                                bar,
                            )
                        block = class_argmax(values)[0].cpu().numpy().astype(dtype)
                        valid = source.valid(y0, y1, x0, x1)
                        if valid is not None:
                            block[~valid] = nodata
                        labels[y0 - band_top : y1 - band_top, x0 - c0 : x1 - c0] = block
                    _flush(
                        fd, labels, band_top, h, opts.band_rows, c0, w, state, fingerprint, k, bar, last=True
                    )
                    _save_progress(state, fingerprint, k + 1, 0)
        finally:
            os.close(fd)
            if bar is not None:
                bar.close()
        write_label_raster(
            raw,
            out,
            h,
            w,
            dtype,
            nodata,
            meta.labels.palette,
            crs=source.crs,
            transform=source.transform,
            overviews=opts.overviews,
        )
    raw.unlink()
    state.unlink()
    return out


def _flush(
    fd: int,
    labels: np.ndarray,
    band_top: int,
    finished: int,
    band_rows: int,
    x0: int,
    width: int,
    state: Path,
    fingerprint: dict,
    strip: int,
    bar: Any,
    last: bool = False,
) -> tuple[int, np.ndarray]:
    """Write every whole band of final rows (the rest too when ``last``); returns the new band top."""
    while finished - band_top >= band_rows or (last and finished > band_top):
        n = min(band_rows, finished - band_top)
        _write_rows(fd, labels[:n], band_top, x0, width)
        band_top += n
        _save_progress(state, fingerprint, strip, band_top)
        if bar is not None:
            bar.update(round(n * labels.shape[1] / 1e6, 2))
        rest = labels[n:].copy()
        labels = np.zeros_like(labels)
        labels[: rest.shape[0]] = rest
    return band_top, labels
