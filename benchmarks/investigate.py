"""Why is HRNetV2 eager on CPU far from the matmul peak, and what closes the gap? Ablations + op breakdown.

One command: ``python -m benchmarks.run --only investigate,flops`` (W18 at 512x1024 by default; add
``--compile`` for the inductor rows). Each configuration runs in its own process; after timing, one profiled
forward splits the time into op categories (convolution, BatchNorm, ReLU, residual/fusion adds,
interpolation, layout copies), which shows where the non-matmul time goes.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import (
    Column,
    PeakMemory,
    Report,
    log,
    markdown_table,
    ratio,
    run_budgeted,
    setup_torch,
    time_callable,
)
from benchmarks.models import build_hrseg, make_weights, seeded_input

#: name -> fold BN, channels_last, optional threads / fuse mode overrides, compile (with inductor freezing)
CONFIGS: dict[str, dict[str, Any]] = {
    "eager": {"fold": False, "cl": False},
    "eager_cl": {"fold": False, "cl": True},
    "folded": {"fold": True, "cl": False},
    "folded_cl": {"fold": True, "cl": True},
    "folded_cl_1thread": {"fold": True, "cl": True, "threads": 1},
    "eager_1thread": {"fold": False, "cl": False, "threads": 1},
    "eager_bilinear": {"fold": False, "cl": False, "fuse_mode": "bilinear"},
    "folded_cl_bilinear": {"fold": True, "cl": True, "fuse_mode": "bilinear"},
}
COMPILE_CONFIGS: dict[str, dict[str, Any]] = {
    "folded_cl_compile_frozen": {"fold": True, "cl": True, "compile": True},
}
CATEGORIES = ("conv", "batchnorm", "relu", "add", "interpolate", "cat", "layout copy", "other")


def categorize(op: str) -> str:
    """Map an aten op name to a coarse category."""
    name = op.removeprefix("aten::")
    if "conv" in name:
        return "conv"
    if "batch_norm" in name:
        return "batchnorm"
    if name.startswith(("relu", "clamp_min", "threshold")):
        return "relu"
    if name.startswith("add"):
        return "add"
    if name.startswith("upsample") or "interpolate" in name:
        return "interpolate"
    if name == "cat":
        return "cat"
    if name in ("copy_", "contiguous", "clone", "to_dense", "_to_copy", "to_mkldnn"):
        return "layout copy"
    return "other"


def _breakdown(fn: Any) -> dict[str, float]:
    """Share of self CPU time per category in one profiled call."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    totals: dict[str, float] = defaultdict(float)
    for evt in prof.key_averages():
        if evt.key.startswith("aten::"):
            totals[categorize(evt.key)] += float(evt.self_cpu_time_total)
    whole = sum(totals.values()) or 1.0
    return {c: totals.get(c, 0.0) / whole for c in CATEGORIES}


def investigate_case(spec: dict[str, Any]) -> dict[str, Any]:
    """One ablation: build, transform, time, then a profiled call for the op breakdown."""
    conf = spec["config"]
    threads = setup_torch(conf.get("threads") or spec.get("threads"))
    h, w = spec["size"]
    fuse = conf.get("fuse_mode", spec["fuse_mode"])
    model = build_hrseg(spec["variant"], spec["weights"], spec["num_classes"], fuse)
    x = seeded_input(1, h, w)
    if conf["fold"]:
        from hrseg.inference import fold_batchnorm

        fold_batchnorm(model)
    if conf["cl"]:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    if conf.get("compile"):
        model = torch.compile(model, dynamic=False, options={"freezing": True})

    def fn() -> None:
        with torch.inference_mode():
            model(x)

    with PeakMemory("cpu") as mem:
        timing = time_callable(fn, spec["warmup"], spec["iters"], spec.get("max_seconds"))
    result: dict[str, Any] = {
        **timing.as_dict(),
        "threads": threads,
        "fuse_mode": fuse,
        "peak_mem_mb": mem.peak_mb,
    }
    if not conf.get("compile"):
        result["breakdown"] = _breakdown(fn)
    return result


def run(cfg: Any) -> Report:
    """All ablations for one variant/size; speed-ups relative to plain eager."""
    from benchmarks.flops import count_flops

    variant, size = cfg.investigate_variant, tuple(cfg.investigate_size)
    weights = make_weights(variant, Path(cfg.cache), cfg.num_classes, cfg.fuse_mode)
    configs = dict(CONFIGS)
    if cfg.compile:
        configs.update(COMPILE_CONFIGS)
    rows: list[dict[str, Any]] = []
    for name, conf in configs.items():
        spec = {
            "variant": variant,
            "size": list(size),
            "config": conf,
            "threads": cfg.threads,
            "weights": str(weights),
            "num_classes": cfg.num_classes,
            "fuse_mode": cfg.fuse_mode,
            "warmup": cfg.warmup,
            "iters": cfg.iters,
            "max_seconds": cfg.max_seconds,
        }
        log(f"investigate {variant} {size[0]}x{size[1]} {name}")
        res = run_budgeted(investigate_case, spec, cfg)
        row = {"config": name, **res}
        for cat, share in (res.get("breakdown") or {}).items():
            row[f"share_{cat}"] = share
        rows.append(row)
    base = next((r["median_s"] for r in rows if r["config"] == "eager" and "median_s" in r), None)
    flops = count_flops(variant, size, cfg.num_classes, cfg.fuse_mode)
    for r in rows:
        if "median_s" in r:
            r["speedup_vs_eager"] = ratio(base, r["median_s"])
            r["achieved_gflops"] = flops / r["median_s"] / 1e9
    cols = [
        Column("config", "config"),
        Column("threads", "threads"),
        Column("fuse_mode", "fusion"),
        Column("median_s", "s / img"),
        Column("speedup_vs_eager", "speed-up", "{:.2f}x"),
        Column("achieved_gflops", "GFLOP/s", "{:.1f}"),
    ] + [Column(f"share_{c}", c, "{:.0%}") for c in CATEGORIES]
    md = (
        f"{variant} at {size[0]}x{size[1]}, batch 1 ({flops / 1e9:.1f} GFLOP). Shares: self CPU time per op "
        "category in one profiled forward.\n\n" + markdown_table(rows, cols) + "\n"
    )
    config = {"variant": variant, "size": list(size), "configs": configs, "iters": cfg.iters}
    return Report("investigate", config, rows, cfg.machine, md, {"gflop": flops / 1e9})
