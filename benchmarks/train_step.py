"""Training step (forward + backward + SGD step) throughput: hrseg NCHW / channels_last vs the timm reference.

One command: ``python -m benchmarks.run --only train``; ``--train-paths hrseg,compile`` (or
``hrseg_cl,compile_cl``) compares the eager step with the compiled one, compiled as ``--model.compile true``
compiles it (:func:`hrseg.task.compile_graph`: forward and loss in one graph, ``fullgraph=True``, static
shapes; the backward through AOTAutograd); its first step, compilation included, is reported as
``compile_s``. The step is the official recipe's inner loop: logits
upsampled to the label size, cross-entropy with ignore index 255, SGD(lr 0.01, momentum 0.9, wd 5e-4).
HRNet-OCR variants (``w48_ocr``) train both outputs as the official criterion does (0.4 x aux + 1.0 x main)
and are compared with their plain-head variant (timm has no OCR head, so no reference case).
bf16 autocast is used on CUDA (``--device cuda``); on this CPU (AVX2, no native bf16) training stays fp32.
"""

from __future__ import annotations

import time
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
    time_case,
)
from benchmarks.forward import ocr_over_plain, ocr_table
from benchmarks.models import build_hrseg, build_reference, has_reference, make_weights, seeded_input

PATHS: dict[str, str] = {
    "hrseg": "hrseg HRNetV2, NCHW",
    "hrseg_cl": "hrseg HRNetV2, channels_last model and input",
    "reference": "timm hrnet_* features_only + the same head, NCHW",
    "compile": "hrseg NCHW, forward + loss compiled as --model.compile does (backend: --compile-backend)",
    "compile_cl": "the same compiled step, channels_last model and input",
}
#: the paths of a plain ``--only train`` run (compiling takes minutes: opt in with --train-paths)
DEFAULT_TRAIN_PATHS = ("hrseg", "hrseg_cl", "reference")
#: each compiled path and the eager path it is compared with
COMPILED_OVER_EAGER = {"compile": "hrseg", "compile_cl": "hrseg_cl"}
IGNORE_INDEX = 255
#: loss weights of a two-output model (HRNet-OCR: auxiliary, main), as in the official criterion
OCR_LOSS_WEIGHTS = (0.4, 1.0)


def train_case(spec: dict[str, Any]) -> dict[str, Any]:
    """Time one training configuration; report samples/s and the peak memory of the steps."""
    threads = setup_torch(spec.get("threads"), spec["device"])
    device = spec["device"]
    path = spec["path"]
    b, h, w = spec["batch"], spec["size"][0], spec["size"][1]
    t0 = time.perf_counter()
    if path == "reference":
        model = build_reference(spec["variant"], spec["weights"], spec["num_classes"])
    else:
        model = build_hrseg(spec["variant"], spec["weights"], spec["num_classes"], spec["fuse_mode"])
    from hrseg.models import upsample_logits
    from hrseg.task import compile_graph

    model = model.to(device).train()
    x = seeded_input(b, h, w).to(device)
    gen = torch.Generator().manual_seed(1)
    y = torch.randint(0, spec["num_classes"], (b, h, w), generator=gen)
    y[:, :8] = IGNORE_INDEX  # some ignored pixels, as in real masks
    y = y.to(device)
    if path in ("hrseg_cl", "compile_cl"):
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    amp = device.startswith("cuda") and spec.get("amp") == "bf16"
    align = bool(getattr(model, "align_corners", False))
    losses: list[float] = []

    def forward_loss(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        out = model(image)
        outs = list(out) if isinstance(out, (list, tuple)) else [out]
        weights = OCR_LOSS_WEIGHTS if len(outs) == 2 else (1.0,) * len(outs)
        total = torch.zeros((), device=image.device)
        for wt, o in zip(weights, outs, strict=True):
            logits = upsample_logits(o, (h, w), align).float()
            total = total + wt * F.cross_entropy(logits, mask, ignore_index=IGNORE_INDEX)
        return total

    compiled = path in COMPILED_OVER_EAGER
    backend = str(spec.get("compile_backend") or "inductor")
    if compiled:
        _cold_compile()
    run_step = forward_loss
    if compiled:
        run_step = compile_graph(forward_loss, backend=backend, what="the benchmark step")

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            loss = run_step(x, y)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))

    setup_s = time.perf_counter() - t0
    compile_s = None
    if compiled:  # the first step compiles forward + loss, then (at its backward) the backward graph
        t1 = time.perf_counter()
        step()
        compile_s = time.perf_counter() - t1
    timing, mem = time_case(step, spec)
    return {
        **timing.as_dict(),
        "samples_per_s": b / timing.median_s,
        "peak_mem_mb": mem.peak_mb,
        "memory_method": mem.method,
        "threads": threads,
        "setup_s": setup_s,
        "compile_s": compile_s,
        "compile_backend": backend if compiled else None,
        "first_loss": losses[0] if losses else None,
        "amp": "bf16" if amp else "fp32",
    }


def _cold_compile() -> None:
    """No on-disk compile cache in this (worker) process: ``compile_s`` is the first compile a user waits for.

    Inductor's FX graph cache and AOTAutograd's cache would otherwise serve a second run from disk (5 s
    instead of a minute on the CPU), and the time would depend on what ran before.
    """
    import torch._functorch.config as functorch_config
    import torch._inductor.config as inductor_config

    inductor_config.fx_graph_cache = False
    if hasattr(functorch_config, "enable_autograd_cache"):
        functorch_config.enable_autograd_cache = False


def run(cfg: Any) -> Report:
    """hrseg (NCHW, channels_last) and the reference for each training variant; best hrseg / reference."""
    rows: list[dict[str, Any]] = []
    for variant in cfg.train_variants:
        weights = make_weights(variant, Path(cfg.cache), cfg.num_classes, cfg.fuse_mode)
        for path in cfg.train_paths:
            if path == "reference" and not has_reference(variant):
                continue
            spec = case_spec(
                cfg,
                variant,
                cfg.train_size,
                cfg.train_batch,
                path,
                weights,
                cfg.train_warmup,
                cfg.train_iters,
                compile_backend=cfg.compile_backend,
            )
            log(f"train {variant} {path}")
            res = run_budgeted(train_case, spec, cfg)
            if "error" in res:
                log(f"  error: {res['error']}")
            else:
                log(f"  {res['median_s']:.3f} s/step")
            rows.append({"variant": variant, "path": path, **res})
    ratios = train_ratios(rows)
    ocr = ocr_over_plain(rows, "median_s")
    size = f"{cfg.train_size[0]}x{cfg.train_size[1]}"
    md = (
        f"Batch {cfg.train_batch}, crop {size}, SGD step, fuse mode `{cfg.fuse_mode}`.\n\n"
        + "\n".join(f"- `{k}`: {v}" for k, v in PATHS.items() if k in cfg.train_paths)
        + "\n\n"
        + markdown_table(
            rows,
            [
                Column("variant", "variant"),
                Column("path", "path"),
                Column("median_s", "s / step"),
                Column("samples_per_s", "samples/s"),
                Column("peak_mem_mb", "peak MiB", "{:.0f}"),
                Column("amp", "precision"),
                Column("compile_s", "first step (compile) s", "{:.1f}"),
                Column("first_loss", "first loss", "{:.4f}"),
                Column("load_1m", "load", "{:.1f}"),
                Column("error", "error"),
            ],
        )
        + "\n\n### Ratios\n\n"
        + markdown_table(
            ratios,
            [
                Column("variant", "variant"),
                Column("channels_last_wins", "channels_last wins"),
                Column("cl_over_nchw", "channels_last / NCHW"),
                Column("best_path", "hrseg best"),
                Column("best_over_reference", "hrseg best / reference"),
                Column("compiled_path", "compiled path"),
                Column("compiled_over_eager", "compiled / eager (samples/s)"),
            ],
        )
        + "\n"
    )
    if ocr:
        md += ocr_table(ocr, "s / step")
    config = {
        "variants": list(cfg.train_variants),
        "size": list(cfg.train_size),
        "batch": cfg.train_batch,
        "warmup": cfg.train_warmup,
        "iters": cfg.train_iters,
        "device": cfg.device,
        "amp": cfg.amp,
        "fuse_mode": cfg.fuse_mode,
        "paths": list(cfg.train_paths),
        "compile_backend": cfg.compile_backend,
    }
    extra = {"ratios": ratios, "paths": PATHS, "ocr_over_plain": ocr}
    return Report("train", config, rows, cfg.machine, md, extra)


def train_ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per variant: does channels_last win, hrseg's best eager path over the reference, compiled over eager.

    The compiled ratio divides a compiled path's samples/s by those of the eager path in the same memory
    format (the last such pair measured).
    """
    out = []
    for variant in dict.fromkeys(r["variant"] for r in rows):
        tp = {r["path"]: r["samples_per_s"] for r in rows if r["variant"] == variant and "error" not in r}
        hrseg = {p: tp[p] for p in ("hrseg", "hrseg_cl") if p in tp}
        best = max(hrseg, key=lambda p: hrseg[p]) if hrseg else None
        cl = ratio(tp.get("hrseg_cl"), tp.get("hrseg"))
        pairs = [(c, e) for c, e in COMPILED_OVER_EAGER.items() if c in tp and e in tp]
        compiled_path, eager_path = pairs[-1] if pairs else (None, None)
        out.append(
            {
                "variant": variant,
                "cl_over_nchw": cl,
                "channels_last_wins": None if cl is None else cl > 1.0,
                "best_path": best,
                "best_samples_per_s": hrseg.get(best or ""),
                "best_over_reference": ratio(hrseg.get(best or ""), tp.get("reference")),
                "compiled_path": None if compiled_path is None else f"{compiled_path} / {eager_path}",
                "compiled_over_eager": ratio(tp.get(compiled_path or ""), tp.get(eager_path or "")),
            }
        )
    return out
