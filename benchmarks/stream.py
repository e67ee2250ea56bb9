"""Streamed prediction of large rasters: throughput against the in-memory sliding window, flat peak memory.

Two measurements, one record::

    python -m benchmarks.stream --speed-size 1536x2048 --gigapixels 0.05,0.2,0.5 \\
        --out benchmarks/records/<date>-cpu-stream

- **speed**: one generated GeoTIFF predicted in memory (``Segmenter.predict`` of the whole array) and streamed
  (``Segmenter.predict_raster``), alternated ``--rounds`` times in one process so both see the same load;
  megapixels per second of each and their ratio (goal >= 0.95). The label maps are compared too.
- **memory**: one fresh process per raster size streams a generated square GeoTIFF and reports its peak
  resident memory (``ru_maxrss``) and a sample of it every 50 ms (the flat part shows after start-up).

The network is ``hrnetv2_w18_small_v1`` (19 classes, random weights: the speed does not depend on them)
with a 512x512 window (stride 341x341, no flip, one scale), unless ``--network standin`` is given for the
memory runs: a stand-in with HRNetV2's output (19 classes at a quarter of the resolution) and almost no
compute, so large rasters finish sooner on 2 cores while every buffer of the stream (reads, carry, bands,
writes) is the one the real network would use. ``tests/test_stream_memory.py`` runs the memory check at
small sizes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import RSS_SAMPLER, describe_machine, log, machine_info

WINDOW = 512
CLASSES = 19
NETWORKS = ("w18_small_v1", "standin")

# the child process: build the network, stream one raster, report peak and sampled memory as JSON
_CHILD = (
    RSS_SAMPLER
    + """
import json
from benchmarks.stream import build_segmenter
seg = build_segmenter(sys.argv[1], int(sys.argv[4]))
start = time.perf_counter()
seg.predict_raster(sys.argv[2], sys.argv[3], strip_width=int(sys.argv[5]), band_rows=int(sys.argv[6]))
seconds = time.perf_counter() - start
peak = peak_kb()
print("RESULT", json.dumps({"peak_kb": peak, "seconds": seconds, "samples_kb": samples}))
"""
)


def build_segmenter(network: str, window: int = WINDOW) -> Any:
    """A CPU ``Segmenter`` for ``network`` (see the module docstring) with a ``window`` sliding window."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    from hrseg.deploy import Segmenter
    from hrseg.metadata import LabelSet, ModelMeta
    from hrseg.models import build_model

    torch.manual_seed(0)
    protocol = {"mode": "slide", "window": (window, window)}
    if network == "w18_small_v1":
        model = build_model("hrnetv2_w18_small_v1", num_classes=CLASSES)
        return Segmenter(model, ModelMeta("hrnetv2_w18_small_v1", LabelSet.generic(CLASSES)), "cpu", protocol)

    class StandIn(nn.Module):
        """HRNetV2's output shape (classes at 1/4 resolution) from one pooled 1x1 convolution."""

        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Conv2d(3, CLASSES, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.proj(F.avg_pool2d(x, 4, ceil_mode=True))

    meta = ModelMeta("hrnetv2_w18_small_v1", LabelSet.generic(CLASSES))
    return Segmenter(StandIn(), meta, "cpu", protocol, fast=False)


def write_geotiff(path: Path, height: int, width: int, rows_per_write: int = 512) -> Path:
    """A generated 3-band uint8 GeoTIFF (tiled, deflate, UTM georeference), written band by band."""
    import rasterio
    from rasterio.transform import from_origin

    from hrseg.data.scenes import generate_scene

    if path.is_file():
        with rasterio.open(path) as src:
            if (src.height, src.width) == (height, width):
                return path
    scene, _ = generate_scene(0, size=(rows_per_write, 1024))
    profile = {
        "driver": "GTiff",
        "height": height,
        "width": width,
        "count": 3,
        "dtype": "uint8",
        "tiled": True,
        "blockxsize": 512,
        "blockysize": 512,
        "compress": "deflate",
        "BIGTIFF": "IF_SAFER",
        "crs": "EPSG:32633",
        "transform": from_origin(500000.0, 4000000.0, 0.3, 0.3),
    }
    reps = -(-width // scene.shape[1])
    with rasterio.open(path, "w", **profile) as dst:
        for y in range(0, height, rows_per_write):
            rows = np.roll(np.tile(scene, (1, reps, 1)), y // 7, axis=1)[
                : min(rows_per_write, height - y), :width
            ]
            window = rasterio.windows.Window(0, y, width, rows.shape[0])
            dst.write(rows.transpose(2, 0, 1), window=window)
    return path


def read_pixels(path: Path) -> np.ndarray:
    import rasterio

    with rasterio.open(path) as src:
        return np.ascontiguousarray(src.read().transpose(1, 2, 0))


def speed(work: Path, size: tuple[int, int], rounds: int) -> dict[str, Any]:
    """In-memory vs streamed megapixels per second on one raster, alternated in this process."""
    import rasterio

    raster = write_geotiff(work / f"speed_{size[0]}x{size[1]}.tif", *size)
    seg = build_segmenter("w18_small_v1")
    pixels = read_pixels(raster)
    mp = size[0] * size[1] / 1e6
    seg.predict(pixels[:WINDOW, : 2 * WINDOW])  # warm-up: oneDNN primitives of the window shapes
    times: dict[str, list[float]] = {"memory": [], "stream": []}
    same = True
    for _ in range(rounds):
        start = time.perf_counter()
        labels = seg.predict(pixels)
        times["memory"].append(time.perf_counter() - start)
        start = time.perf_counter()
        out = seg.predict_raster(raster, work / "speed_out.tif", resume=False)
        times["stream"].append(time.perf_counter() - start)
        with rasterio.open(out) as src:
            same = same and bool(np.array_equal(src.read(1), labels))
        log(f"speed: memory {times['memory'][-1]:.1f} s, stream {times['stream'][-1]:.1f} s")
    best = {k: min(v) for k, v in times.items()}
    return {
        "size": list(size),
        "megapixels": mp,
        "seconds": times,
        "mp_per_s": {k: mp / v for k, v in best.items()},
        "ratio": best["memory"] / best["stream"],
        "identical_labels": same,
    }


def memory_run(
    network: str, raster: Path, out: Path, cwd: Path, strip_width: int = 8192, band_rows: int = 1024
) -> dict[str, Any]:
    """Stream ``raster`` in a fresh process; its peak RSS (MB), sampled RSS and time."""
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), *sys.path])}
    argv = [network, str(raster), str(out), str(WINDOW), str(strip_width), str(band_rows)]
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=3600
    )
    if proc.returncode != 0:
        raise RuntimeError(f"streamed prediction failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    result = json.loads(next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT"))[7:])
    samples = result["samples_kb"] or [result["peak_kb"]]
    return {
        "peak_mb": result["peak_kb"] / 1024,
        "median_mb": float(np.median(samples)) / 1024,
        "seconds": result["seconds"],
    }


def square(gigapixels: float) -> tuple[int, int]:
    side = round((gigapixels * 1e9) ** 0.5)
    return side, side


def main(argv: list[str] | None = None) -> int:
    """Measure, print and write the record (``--out``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--speed-size", default="1536x2048", help="HxW of the speed comparison ('' to skip)")
    parser.add_argument("--rounds", type=int, default=2, help="alternated rounds of the speed comparison")
    parser.add_argument("--gigapixels", default="0.05,0.2,0.5", help="square raster sizes of the memory runs")
    parser.add_argument(
        "--network", choices=NETWORKS, default="w18_small_v1", help="network of the memory runs"
    )
    parser.add_argument("--real-gigapixels", type=float, default=0.0, help="also one real-network memory run")
    parser.add_argument("--work", type=Path, default=Path("/tmp/hrseg-stream-bench"), help="scratch folder")
    parser.add_argument("--out", type=Path, help="record folder (stream.md / stream.json)")
    args = parser.parse_args(argv)
    command = "python -m benchmarks.stream " + " ".join(argv if argv is not None else sys.argv[1:])
    info = machine_info()
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    args.work.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {"command": command, "created": started.isoformat(), "machine": info}
    lines = [
        "# Streamed prediction of large rasters: speed and peak memory",
        "",
        f"Command: `{command}`  ",
        f"Commit: {info.get('git')}; date {started:%Y-%m-%d %H:%M} UTC  ",
        f"Machine: {describe_machine(info)} (shared: other processes use the same 2 cores)  ",
        f"Protocol: slide {WINDOW}x{WINDOW}, stride 341x341, one scale, no flip; 19 classes; batch of 4 "
        "windows; strip width 8192, band rows 1024.",
        "",
    ]
    if args.speed_size:
        h, w = (int(v) for v in args.speed_size.split("x"))
        result = speed(args.work, (h, w), args.rounds)
        record["speed"] = result
        lines += [
            f"## Speed: hrnetv2_w18_small_v1, {h}x{w} ({result['megapixels']:.1f} MP), best of {args.rounds} "
            "alternated rounds",
            "",
            "| path | seconds (each round) | MP/s (best) |",
            "|---|---|---|",
        ]
        for key, name in (
            ("memory", "in memory (Segmenter.predict)"),
            ("stream", "streamed (predict_raster)"),
        ):
            secs = ", ".join(f"{s:.1f}" for s in result["seconds"][key])
            lines.append(f"| {name} | {secs} | {result['mp_per_s'][key]:.3f} |")
        lines += [
            "",
            f"Streamed / in-memory throughput: **{result['ratio']:.2f}x** (goal >= 0.95); label maps "
            f"identical: {result['identical_labels']}.",
            "",
        ]
    runs = [(args.network, g) for g in (float(v) for v in args.gigapixels.split(",") if v)]
    if args.real_gigapixels:
        runs.append(("w18_small_v1", args.real_gigapixels))
    rows = []
    for network, gp in runs:
        size = square(gp)
        raster = write_geotiff(args.work / f"mem_{size[0]}.tif", *size)
        use = memory_run(network, raster, args.work / f"mem_{size[0]}_labels.tif", args.work)
        row = {"network": network, "gigapixels": size[0] * size[1] / 1e9, "size": list(size), **use}
        rows.append(row)
        log(f"memory: {row}")
    record["memory"] = rows
    if rows:
        lines += [
            "## Peak memory of streamed prediction (one fresh process per raster)",
            "",
            "| network | raster | gigapixels | peak RSS MB | median RSS MB | vs the first MB | seconds |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in rows:
            first = next(r for r in rows if r["network"] == row["network"])
            growth = 100 * (row["peak_mb"] / first["peak_mb"] - 1)
            cells = [
                row["network"],
                f"{row['size'][0]}x{row['size'][1]}",
                f"{row['gigapixels']:.3f}",
                f"{row['peak_mb']:.0f}",
                f"{row['median_mb']:.0f}",
                f"{growth:+.1f} %",
                f"{row['seconds']:.0f}",
            ]
            lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Total time {(time.perf_counter() - t0) / 60:.1f} min."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "stream.md").write_text(text)
        (args.out / "stream.json").write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
