"""Streamed prediction holds the same memory for a larger raster: the peak depends on window, strip and band.

Each run is a fresh process streaming a generated GeoTIFF (``benchmarks.stream``, which also writes the record
quoted in docs/large-images.md) with a network stand-in of HRNetV2's output shape and little compute, so the
buffers of the stream dominate. Both rasters are wider than the strip, so the second, 4x larger one must not
need more: holding its label map alone (int64, as an in-memory prediction returns it) would add 4x more than
the first's, its class scores 19 x 4 bytes a pixel.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.stream import memory_run, write_geotiff

STRIP = 1024


@pytest.mark.slow
def test_peak_memory_stays_flat_for_a_larger_raster(tmp_path: Path) -> None:
    small = write_geotiff(tmp_path / "small.tif", 1024, 2048)
    large = write_geotiff(tmp_path / "large.tif", 2048, 4096)
    peaks = {}
    for name, raster in (("small", small), ("large", large)):
        use = memory_run("standin", raster, tmp_path / f"{name}_labels.tif", tmp_path, STRIP, band_rows=256)
        peaks[name] = use["peak_mb"]
        assert (tmp_path / f"{name}_labels.tif").is_file()
    print(f"peak RSS: {peaks['small']:.0f} MB for 2 MP, {peaks['large']:.0f} MB for 8 MP")
    # growth, not absolute numbers: holding the large raster's class scores whole would add 3/4 of them
    # (456 MB) to the small one's peak; the allocator's noise between two runs is a few tens of MB
    scores_mb = 2048 * 4096 * 19 * 4 / 2**20
    assert peaks["large"] <= peaks["small"] * 1.10, peaks
    assert peaks["large"] - peaks["small"] < scores_mb / 5, peaks
