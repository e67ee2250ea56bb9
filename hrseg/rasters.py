"""Rasters larger than memory: GeoTIFF and other GDAL formats read window by window, label GeoTIFFs written.

Everything here goes through ``rasterio`` (its wheels carry GDAL), an optional dependency imported on first
use: ``pip install hrseg[geo]``. :class:`RasterSource` reads any region of a raster (the chosen bands, its
nodata mask) without decoding the rest; :func:`write_label_raster` turns a finished raw label file into a
tiled, compressed GeoTIFF with the input's CRS, transform and size, the class palette as its colour table and
optionally overviews. Every error names the file (:class:`RasterError`). The streamed prediction that uses
them is :mod:`hrseg.deploy.stream` (docs/large-images.md).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from hrseg.images import ImageFileError

__all__ = [
    "GDAL_CACHE_MB",
    "RasterError",
    "RasterInfo",
    "RasterSource",
    "parse_bands",
    "probe_raster",
    "rasterio_available",
    "require_rasterio",
    "write_label_raster",
]

#: GDAL's block cache (its default, 5 % of the machine's memory, would count in the process's peak).
GDAL_CACHE_MB = 64
#: Side of the output GeoTIFF's tiles.
TILE = 512


class RasterError(ImageFileError):
    """A raster that cannot be read as asked (corrupt, truncated, no bands, a band that does not exist)."""


def rasterio_available() -> bool:
    """Whether ``rasterio`` can be imported (the ``geo`` extra)."""
    try:
        import rasterio  # noqa: F401
    except ImportError:
        return False
    return True


def require_rasterio(what: str) -> Any:
    """``rasterio``, or an error saying how to install it.

    Args:
        what: what needs it, for the message (``"streamed prediction"``).

    Raises:
        ImportError: rasterio is not installed.
    """
    try:
        import rasterio
    except ImportError:
        raise ImportError(f"{what} needs rasterio: pip install hrseg[geo]") from None
    return rasterio


def parse_bands(text: str | Sequence[int] | None) -> tuple[int, ...] | None:
    """``"3,2,1"`` -> ``(3, 2, 1)`` (1-based band numbers, as GDAL counts them); None stays None.

    Raises:
        ValueError: not a comma-separated list of positive integers.
    """
    if text is None:
        return None
    try:
        bands = tuple(int(b) for b in (text.split(",") if isinstance(text, str) else text))
    except ValueError:
        raise ValueError(f"bands must be comma-separated band numbers such as 3,2,1, got {text!r}") from None
    if not bands or min(bands) < 1:
        raise ValueError(f"bands are numbered from 1, got {text!r}")
    return bands


@dataclass(frozen=True)
class RasterInfo:
    """Size and georeference of a raster, read from its header.

    Args:
        height: rows.
        width: columns.
        count: bands.
        georeferenced: the file carries a CRS or a non-identity transform.
    """

    height: int
    width: int
    count: int
    georeferenced: bool

    @property
    def megapixels(self) -> float:
        """Pixels / 1e6."""
        return self.height * self.width / 1e6


def _reason(err: Exception) -> str:
    """GDAL's reason for a failed read; rasterio's generic "see previous exception" says nothing here."""
    text = str(err)
    return "truncated or corrupt data" if "previous exception" in text or not text else text


def _env() -> Any:
    rasterio = require_rasterio("reading rasters")
    return rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB, CPL_LOG="/dev/null")


def _open(path: Path) -> Any:
    """``rasterio.open`` for reading; a plain image without georeference is no reason for a warning."""
    rasterio = require_rasterio("reading rasters")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        return rasterio.open(path)


def probe_raster(path: str | Path) -> RasterInfo:
    """The header of a raster (nothing decoded).

    Raises:
        RasterError: GDAL cannot open it.
    """
    rasterio = require_rasterio("reading rasters")
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"{p}: raster file not found")
    with _env():
        try:
            with _open(p) as src:
                georef = src.crs is not None or not src.transform.is_identity
                return RasterInfo(src.height, src.width, src.count, georef)
        except rasterio.errors.RasterioError as err:
            raise RasterError(f"{p}: not a readable raster ({err})") from None


class RasterSource:
    """One raster opened for reads of any region: the chosen bands, as ``(h, w, bands)`` arrays.

    Args:
        path: the file (GeoTIFF, TIFF, PNG, JPEG, JPEG 2000, VRT, ... : what GDAL reads).
        bands: 1-based band numbers; None: every band of a 1- or ``channels``-band raster, the first
            ``channels`` when the one after them is alpha.
        channels: the bands the model takes (checked against the choice).

    Raises:
        RasterError: unreadable file, no bands, a band that does not exist, a data type other than uint8 /
            uint16, or a band count the model cannot take without ``bands``.
    """

    def __init__(self, path: str | Path, bands: Sequence[int] | None = None, channels: int = 3) -> None:
        self._rasterio = require_rasterio("reading rasters")
        self.path = Path(path).expanduser()
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: raster file not found")
        self._env = _env()
        self._env.__enter__()
        try:
            self._src = _open(self.path)
        except self._rasterio.errors.RasterioError as err:
            self._env.__exit__(None, None, None)
            raise RasterError(f"{self.path}: not a readable raster ({err})") from None
        try:
            self.bands = self._choose_bands(bands, channels)
        except RasterError:
            self.close()
            raise
        src = self._src
        self.height, self.width = int(src.height), int(src.width)
        self.crs, self.transform = src.crs, src.transform
        self.dtype = np.dtype(src.dtypes[self.bands[0] - 1])
        flags = [src.mask_flag_enums[b - 1] for b in self.bands]
        all_valid = self._rasterio.enums.MaskFlags.all_valid
        self.masked = any(f != [all_valid] for f in flags)
        self.nodata = src.nodata

    def _choose_bands(self, bands: Sequence[int] | None, channels: int) -> tuple[int, ...]:
        src = self._src
        count = int(src.count)
        if count == 0:
            raise RasterError(f"{self.path}: the raster has no bands")
        if bands is not None:
            wrong = [b for b in bands if not 1 <= b <= count]
            if wrong:
                raise RasterError(
                    f"{self.path}: band {wrong[0]} does not exist (the raster has {count} band"
                    f"{'s' if count > 1 else ''}, numbered 1..{count})"
                )
            chosen = tuple(bands)
        elif count in (1, channels):
            chosen = tuple(range(1, count + 1))
        elif count == channels + 1 and src.colorinterp[channels] == self._rasterio.enums.ColorInterp.alpha:
            chosen = tuple(range(1, channels + 1))
        else:
            raise RasterError(
                f"{self.path}: {count} bands for a {channels}-band model; choose them with --bands "
                f"(e.g. --bands {','.join(str(b) for b in range(min(count, channels), 0, -1))})"
            )
        if len(chosen) not in (1, channels):
            raise RasterError(f"{self.path}: {len(chosen)} bands chosen for a {channels}-band model")
        kinds = {src.dtypes[b - 1] for b in chosen}
        if not kinds <= {"uint8", "uint16"}:
            raise RasterError(
                f"{self.path}: bands of type {', '.join(sorted(kinds))}; uint8 and uint16 rasters are read"
            )
        if len(kinds) > 1:
            raise RasterError(f"{self.path}: the chosen bands mix data types ({', '.join(sorted(kinds))})")
        return chosen

    @property
    def info(self) -> RasterInfo:
        """Size and georeference."""
        georef = self.crs is not None or not self.transform.is_identity
        return RasterInfo(self.height, self.width, int(self._src.count), georef)

    def _window(self, y0: int, y1: int, x0: int, x1: int) -> Any:
        return self._rasterio.windows.Window(x0, y0, x1 - x0, y1 - y0)

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Rows ``[y0, y1)`` x columns ``[x0, x1)`` of the chosen bands: ``(h, w, bands)`` uint8 / uint16.

        Raises:
            RasterError: the region cannot be decoded (e.g. a truncated file).
        """
        try:
            data = self._src.read(indexes=list(self.bands), window=self._window(y0, y1, x0, x1))
        except self._rasterio.errors.RasterioError as err:
            raise RasterError(f"{self.path}: cannot read rows {y0}..{y1}: {_reason(err)}") from None
        return np.ascontiguousarray(data.transpose(1, 2, 0))

    def valid(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray | None:
        """Where the region holds data (False at nodata / masked pixels of any chosen band); None: all."""
        if not self.masked:
            return None
        try:
            masks = self._src.read_masks(list(self.bands), window=self._window(y0, y1, x0, x1))
        except self._rasterio.errors.RasterioError as err:
            raise RasterError(
                f"{self.path}: cannot read the mask of rows {y0}..{y1}: {_reason(err)}"
            ) from None
        valid: np.ndarray = (masks > 0).all(axis=0)
        return valid

    def close(self) -> None:
        """Close the file."""
        self._src.close()
        self._env.__exit__(None, None, None)

    def __enter__(self) -> RasterSource:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def write_label_raster(
    raw: Path,
    output: Path,
    height: int,
    width: int,
    dtype: np.dtype,
    nodata: int,
    palette: Sequence[Sequence[int]],
    crs: Any = None,
    transform: Any = None,
    overviews: bool = False,
    rows_per_write: int = TILE,
) -> Path:
    """A raw ``height x width`` label file -> a tiled, deflate-compressed (Geo)TIFF, atomically.

    Args:
        raw: row-major labels of ``dtype`` (what the streamed prediction writes band by band).
        output: the GeoTIFF (written to a temporary name, then renamed).
        height: rows.
        width: columns.
        dtype: uint8 or uint16.
        nodata: the label of unlabelled pixels (nodata / masked input), stored as the file's nodata.
        palette: one RGB colour per class: the colour table (uint8 outputs), so GIS tools show classes.
        crs: the input's coordinate reference system (None: none).
        transform: the input's affine transform (None: none).
        overviews: also build internal overviews (mode resampling: each level keeps the majority class).
        rows_per_write: rows read from ``raw`` and written per step (bounds memory).

    Returns:
        ``output``.
    """
    rasterio = require_rasterio("writing GeoTIFF")
    tmp = output.with_name(f".{output.name}.{os.getpid()}.tmp.tif")
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "height": height,
        "width": width,
        "count": 1,
        "dtype": dtype.name,
        "nodata": nodata,
        "tiled": True,
        "blockxsize": TILE,
        "blockysize": TILE,
        "compress": "deflate",
        "BIGTIFF": "IF_SAFER",
    }
    if crs is not None:
        profile["crs"] = crs
    if transform is not None and not transform.is_identity:
        profile["transform"] = transform
    try:
        with _env(), open(raw, "rb") as fh:
            with warnings.catch_warnings():  # an input without georeference gives an output without one
                warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
                dst = rasterio.open(tmp, "w", **profile)
            with dst:
                for y in range(0, height, rows_per_write):
                    n = min(rows_per_write, height - y)
                    # plain reads, not a memory map: mapped pages would count in the resident memory
                    rows = np.fromfile(fh, dtype=dtype, count=n * width).reshape(n, width)
                    dst.write(rows, 1, window=rasterio.windows.Window(0, y, width, n))
                if dtype == np.uint8:
                    dst.write_colormap(1, {i: (*map(int, c[:3]), 255) for i, c in enumerate(palette[:255])})
                factors = [f for f in (2, 4, 8, 16, 32, 64) if min(height, width) // f >= TILE // 2]
                if overviews and factors:
                    dst.build_overviews(factors, rasterio.enums.Resampling.mode)
                    dst.update_tags(ns="rio_overview", resampling="mode")
        os.replace(tmp, output)
    finally:
        if tmp.exists():
            tmp.unlink()
    return output
