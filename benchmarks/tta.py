"""Cost of sliding-window and multi-scale + flip inference against one forward (``hrseg.inference.infer``).

One command: ``python -m benchmarks.run --only slide``. The model runs through hrseg's fast path, as the
``Segmenter`` uses it. By default the image is 512x1024 and the window 512x1024: the official Cityscapes
protocol (1024x2048 image, 1024x2048 window, scales 0.5-1.75, flip) at half resolution, which keeps the
ratios and costs a quarter of the time. ``slide`` uses a half-width window with the default 2/3 stride.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.common import (
    Column,
    Report,
    log,
    markdown_table,
    ratio,
    setup_torch,
    synchronizer,
    time_callable,
    warmup_seconds,
)
from benchmarks.models import build_hrseg, make_weights, seeded_input

OFFICIAL_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)


def modes(h: int, w: int, scales: tuple[float, ...] = OFFICIAL_SCALES) -> dict[str, dict[str, Any]]:
    """The compared protocols as :class:`hrseg.EvalProtocol` fields."""
    full = (h, w)
    return {
        "whole": {"mode": "whole"},
        "flip": {"mode": "whole", "flip": True},
        "slide": {"mode": "slide", "window": (h, w // 2)},
        "multiscale": {"mode": "slide", "scales": scales, "window": full},
        "multiscale_flip": {"mode": "slide", "scales": scales, "window": full, "flip": True},
    }


def run(cfg: Any) -> Report:
    """Time each protocol (fast path model) and divide by the whole-image forward."""
    from hrseg.inference import EvalProtocol, infer, prepare_for_inference

    threads = setup_torch(cfg.threads, cfg.device)
    h, w = cfg.tta_size
    weights = make_weights(cfg.tta_variant, Path(cfg.cache), cfg.num_classes, cfg.fuse_mode)
    model = build_hrseg(cfg.tta_variant, weights, cfg.num_classes, cfg.fuse_mode).to(cfg.device)
    model = prepare_for_inference(model, inplace=True)
    x = seeded_input(1, h, w).to(cfg.device)
    sync = synchronizer(cfg.device)
    rows: list[dict[str, Any]] = []
    for name, kwargs in modes(h, w, tuple(cfg.tta_scales)).items():
        shown = {k: (list(v) if isinstance(v, tuple) else v) for k, v in kwargs.items()}
        left = cfg.time_left()
        if left is not None and left <= 0:
            rows.append({"protocol": name, "infer_kwargs": shown, "error": "skipped: time budget used up"})
            continue
        log(f"slide: {cfg.tta_variant} {h}x{w} {name}")

        protocol = EvalProtocol(**kwargs)

        def fn(protocol: EvalProtocol = protocol) -> None:
            infer(model, x, protocol, batch_windows=cfg.tta_batch_windows)

        timing = time_callable(
            fn, cfg.warmup, cfg.tta_iters, cfg.max_seconds * 2, sync, min_warmup_s=warmup_seconds(cfg.device)
        )
        rows.append({"protocol": name, "infer_kwargs": shown, **timing.as_dict()})
    whole = rows[0].get("median_s")
    for row in rows:
        row["cost_vs_whole"] = ratio(row.get("median_s"), whole)
    md = (
        f"{cfg.tta_variant}, image {h}x{w}, hrseg fast path, threads {threads}, "
        f"scales {list(cfg.tta_scales)}, batch_windows {cfg.tta_batch_windows}.\n\n"
        + markdown_table(
            rows,
            [
                Column("protocol", "protocol"),
                Column("infer_kwargs", "infer(...)"),
                Column("median_s", "s / img"),
                Column("cost_vs_whole", "cost vs whole", "{:.2f}x"),
                Column("error", "error"),
            ],
        )
        + "\n"
    )
    config = {
        "variant": cfg.tta_variant,
        "size": [h, w],
        "scales": list(cfg.tta_scales),
        "batch_windows": cfg.tta_batch_windows,
        "iters": cfg.tta_iters,
        "device": cfg.device,
    }
    return Report("slide", config, rows, cfg.machine, md)
