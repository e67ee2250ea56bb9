"""Achieved GFLOP/s of each forward path against this machine's measured fp32 matmul peak.

One command: ``python -m benchmarks.run --only flops`` (uses the forward results of the same run when
``forward`` is also selected, else times hrseg eager and fast itself). FLOPs are counted with
``torch.utils.flop_counter.FlopCounterMode`` on the meta device (convolutions and matmuls, 2 FLOPs per MAC;
BN, ReLU, additions and interpolation are not counted). The conv probes show why thin HRNet branches fall
short of the matmul peak: a 3x3 conv with 18 channels does too little work per byte moved.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from benchmarks.common import (
    Column,
    Report,
    case_spec,
    log,
    markdown_table,
    ratio,
    run_budgeted,
    setup_torch,
    synchronizer,
    time_callable,
)
from benchmarks.forward import forward_case
from benchmarks.models import make_weights

#: documented GMACs at 1x3x1024x2048, K = 19 (docs/reference/models.md, docs/reference/ocr.md): the counter's
#: numbers are shown beside them, so a row's GFLOP/s is checked against the published cost (2 FLOPs per MAC)
DOCUMENTED_GMAC: dict[tuple[str, str], float] = {
    ("w18_small_v1", "1024x2048"): 33.4,
    ("w18_small_v2", "1024x2048"): 76.9,
    ("w18", "1024x2048"): 147.4,
    ("w48", "1024x2048"): 747.5,
    ("w48_ocr", "1024x2048"): 1297.9,
}


def count_flops(variant: str, size: tuple[int, int], num_classes: int, fuse_mode: str) -> int:
    """Forward FLOPs of hrseg HRNetV2 at batch 1 (meta tensors: no compute, no memory)."""
    from torch.utils.flop_counter import FlopCounterMode

    from hrseg.models import build_model

    with torch.device("meta"):
        model = build_model(f"hrnetv2_{variant}", num_classes=num_classes, fuse_mode=fuse_mode).eval()
        x = torch.empty(1, 3, *size)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return int(counter.get_total_flops())


def matmul_peak(
    sizes: tuple[int, ...], iters: int, device: str = "cpu", dtype: torch.dtype = torch.float32
) -> dict[str, Any]:
    """``torch.mm`` GFLOP/s at a few square sizes; the best median is the machine's practical peak.

    fp32 on CPU; on CUDA the dtype the forward runs in (bf16 under autocast).
    """
    sync = synchronizer(device)
    results = []
    for n in sizes:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        t = time_callable(lambda a=a, b=b: torch.mm(a, b), warmup=2, iters=iters, sync=sync)
        results.append({"n": n, "median_s": t.median_s, "gflops": 2 * n**3 / t.median_s / 1e9})
    best = max(results, key=lambda r: r["gflops"])
    return {"peak_gflops": best["gflops"], "by_size": results, "device": device, "dtype": str(dtype)}


def peak_dtype(cfg: Any) -> torch.dtype:
    """The dtype the forward paths compute in: fp32 on CPU, bf16 under CUDA autocast."""
    return torch.bfloat16 if cfg.device.startswith("cuda") and cfg.amp == "bf16" else torch.float32


def conv_probes(scale: float, iters: int, device: str = "cpu") -> list[dict[str, Any]]:
    """HRNet-like convs, NCHW vs channels_last: achieved GFLOP/s shows the thin-channel penalty."""
    shapes = [(18, 128, 256), (48, 128, 256), (144, 16, 32), (384, 16, 32), (270, 128, 256)]
    rows = []
    for c, h, w in shapes:
        h, w = max(8, int(h * scale)), max(8, int(w * scale))
        k = 1 if c == 270 else 3  # 270 = W18's head input: the 1x1 conv of last_layer
        x = torch.randn(1, c, h, w, device=device)
        wt = torch.randn(c, c, k, k, device=device) * 0.01
        flops = 2 * c * c * k * k * h * w
        for fmt in ("nchw", "channels_last"):
            xi, wi = x, wt
            if fmt == "channels_last":
                xi = x.contiguous(memory_format=torch.channels_last)
                wi = wt.contiguous(memory_format=torch.channels_last)
            sync = synchronizer(device)
            with torch.no_grad():
                t = time_callable(
                    lambda xi=xi, wi=wi, p=k // 2: F.conv2d(xi, wi, padding=p),
                    warmup=2,
                    iters=iters,
                    sync=sync,
                )
            rows.append(
                {
                    "conv": f"{k}x{k} {c}->{c} @ {h}x{w}",
                    "format": fmt,
                    "median_s": t.median_s,
                    "gflops": flops / t.median_s / 1e9,
                }
            )
    return rows


def _forward_rows(cfg: Any, forward_report: Report | None) -> list[dict[str, Any]]:
    """Forward timings of this run, or eager + fast of the first variant / size measured now."""
    if forward_report is not None:
        return [r for r in forward_report.results if "error" not in r]
    variant, (h, w) = cfg.variants[0], cfg.sizes[0]
    weights = make_weights(variant, Path(cfg.cache), cfg.num_classes, cfg.fuse_mode)
    rows = []
    for path in ("eager", "fast"):
        spec = case_spec(
            cfg, variant, (h, w), 1, path, weights, cfg.warmup, cfg.iters, cache_dir=str(cfg.cache)
        )
        log(f"flops: timing {variant} {h}x{w} {path} (forward benchmark not in this run)")
        res = run_budgeted(forward_case, spec, cfg)
        if "error" not in res:
            rows.append({"variant": variant, "size": f"{h}x{w}", "path": path, **res})
    return rows


def run(cfg: Any, forward_report: Report | None = None, peak: dict[str, Any] | None = None) -> Report:
    """FLOPs per (variant, size), the matmul peak, and each forward path's GFLOP/s as a fraction of it."""
    setup_torch(cfg.threads, cfg.device)
    log("flops: matmul peak")
    end = matmul_peak(cfg.matmul_sizes, cfg.matmul_iters, cfg.device, peak_dtype(cfg))
    if peak is not None:
        # measured at the start and at the end of the run: the higher one (a busier moment only lowers it)
        start_gflops = peak["peak_gflops"]
        peak = dict(max(peak, end, key=lambda p: p["peak_gflops"]))
        peak["start_gflops"], peak["end_gflops"] = start_gflops, end["peak_gflops"]
    else:
        peak = end
    log("flops: conv probes")
    probes = conv_probes(cfg.probe_scale, cfg.matmul_iters, cfg.device)
    fwd = _forward_rows(cfg, forward_report)
    flops: dict[tuple[str, str], int] = {}
    for r in fwd:
        key = (r["variant"], r["size"])
        if key not in flops:
            h, w = (int(v) for v in r["size"].split("x"))
            flops[key] = count_flops(r["variant"], (h, w), cfg.num_classes, cfg.fuse_mode)
    rows = []
    for r in fwd:
        f = flops[(r["variant"], r["size"])]
        achieved = f / r["median_s"] / 1e9
        rows.append(
            {
                "variant": r["variant"],
                "size": r["size"],
                "path": r["path"],
                "gflop": f / 1e9,
                "gmac": f / 2e9,
                "documented_gmac": DOCUMENTED_GMAC.get((r["variant"], r["size"])),
                "median_s": r["median_s"],
                "achieved_gflops": achieved,
                "fraction_of_peak": ratio(achieved, peak["peak_gflops"]),
            }
        )
    for p in probes:
        p["fraction_of_peak"] = ratio(p["gflops"], peak["peak_gflops"])
    dtype = str(peak.get("dtype", "torch.float32")).removeprefix("torch.")
    md = (
        f"{dtype} matmul peak on {peak.get('device', 'cpu')}: "
        f"**{peak['peak_gflops']:.1f} GFLOP/s** (best median of torch.mm at "
        f"{', '.join(str(r['n']) for r in peak['by_size'])}"
        + (
            f"; start of run {peak['start_gflops']:.1f}, end {peak['end_gflops']:.1f}"
            if "start_gflops" in peak
            else ""
        )
        + ").\n\n"
        + markdown_table(
            rows,
            [
                Column("variant", "variant"),
                Column("size", "input"),
                Column("path", "path"),
                Column("gmac", "GMAC", "{:.1f}"),
                Column("documented_gmac", "documented GMAC", "{:.1f}"),
                Column("median_s", "s / img"),
                Column("achieved_gflops", "GFLOP/s"),
                Column("fraction_of_peak", "of matmul peak", "{:.0%}"),
            ],
        )
        + "\n\n### Convolution probes (one conv, batch 1)\n\n"
        + markdown_table(
            probes,
            [
                Column("conv", "conv"),
                Column("format", "layout"),
                Column("gflops", "GFLOP/s"),
                Column("fraction_of_peak", "of matmul peak", "{:.0%}"),
            ],
        )
        + "\n"
    )
    config = {"matmul_sizes": list(cfg.matmul_sizes), "probe_scale": cfg.probe_scale, "device": cfg.device}
    extra = {"peak": peak, "conv_probes": probes}
    return Report("flops", config, rows, cfg.machine, md, extra)
