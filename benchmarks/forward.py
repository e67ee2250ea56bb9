"""Forward (inference) throughput and peak memory: hrseg eager, hrseg fast path, timm reference, ONNX Runtime.

One command: ``python -m benchmarks.run --only forward``. Every case runs in its own process (clean peak
memory) with the same seeded weights and input; each case saves its output so the suite can check that the
fast path, the reference and ONNX Runtime equal hrseg eager (max abs difference, logits are O(1)).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

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
from benchmarks.models import (
    build_hrseg,
    build_reference,
    export_onnx,
    has_reference,
    is_ocr,
    make_weights,
    plain_variant,
    seeded_input,
)

#: path -> what it is (README and table legend)
PATHS: dict[str, str] = {
    "eager": "hrseg, plain eager model (eval, no_grad, NCHW)",
    "fast": "hrseg fast path: prepare_for_inference() defaults (BN folded, channels_last, inference_mode)",
    "fast_nchw": "hrseg fast path without channels_last (BN folded, NCHW)",
    "compile": "fast path + torch.compile (inductor, as prepare_for_inference(compile=True))",
    "compile_frozen": "fast path + torch.compile with inductor freezing (weights constant-folded, prepacked)",
    "reference": "timm hrnet_* features_only + the same head, plain eager (NCHW, no_grad)",
    "ort": "ONNX Runtime (CPU EP, all graph optimizations) on hrseg.export ONNX (BN folded, dynamic shapes)",
}
DEFAULT_PATHS = ("eager", "fast", "fast_nchw", "reference", "ort")
HRSEG_PATHS = ("eager", "fast", "fast_nchw", "compile", "compile_frozen")
FAST_PATHS = ("fast", "fast_nchw", "compile", "compile_frozen")


# --------------------------------------------------------------------------------------------------
# One case (runs inside benchmarks.worker)
# --------------------------------------------------------------------------------------------------
def _prepare_hrseg(model: torch.nn.Module, path: str) -> torch.nn.Module:
    """Apply hrseg's own fast path (hrseg.inference.prepare_for_inference) for the fast/compile paths."""
    from hrseg.inference import prepare_for_inference

    if path == "eager":
        return model
    net = prepare_for_inference(
        model,
        fold_bn=True,
        channels_last=False if path == "fast_nchw" else None,
        compile=path == "compile",
        inplace=True,
    )
    if path == "compile_frozen":
        # inductor freezing on every device (weights as constants: prepacked oneDNN convolutions with fused
        # post-ops); on CPU prepare_for_inference(compile=True), i.e. `compile`, already does this
        net = torch.compile(net, dynamic=False, options={"freezing": True})
    return net


def _ort_session(spec: dict[str, Any], threads: int) -> tuple[Any, dict[str, Any]]:
    """Export hrseg's model (once per variant, cached) and open an ONNX Runtime session on it."""
    import onnxruntime as ort

    model = build_hrseg(spec["variant"], spec["weights"], spec["num_classes"], spec["fuse_mode"])
    onnx_path, meta = export_onnx(
        model,
        spec["variant"],
        spec["num_classes"],
        spec["fuse_mode"],
        Path(spec["cache_dir"]) / "onnx",
        tuple(spec["size"]),
    )
    del model
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    providers = ["CPUExecutionProvider"]
    if spec["device"].startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    t0 = time.perf_counter()
    sess = ort.InferenceSession(str(onnx_path), so, providers=providers)
    meta["session_s"] = time.perf_counter() - t0
    meta["providers"] = sess.get_providers()
    return sess, meta


def forward_case(spec: dict[str, Any]) -> dict[str, Any]:
    """Time one (variant, size, path); save its output for the parity check; report peak memory."""
    threads = setup_torch(spec.get("threads"), spec["device"])
    device = spec["device"]
    path = spec["path"]
    b, h, w = spec["batch"], spec["size"][0], spec["size"][1]
    x = seeded_input(b, h, w)
    info: dict[str, Any] = {}
    t0 = time.perf_counter()
    if path == "ort":
        sess, info = _ort_session(spec, threads)
        feed = {sess.get_inputs()[0].name: x.numpy()}

        def call() -> Any:
            return torch.from_numpy(sess.run(None, feed)[0])

    else:
        if path == "reference":
            model = build_reference(spec["variant"], spec["weights"], spec["num_classes"])
        else:
            model = build_hrseg(spec["variant"], spec["weights"], spec["num_classes"], spec["fuse_mode"])
        model = _prepare_hrseg(model.to(device), path) if path in HRSEG_PATHS else model.to(device)
        xd = x.to(device)
        amp = device.startswith("cuda") and spec.get("amp") == "bf16"
        grad_ctx = torch.inference_mode if path in FAST_PATHS else torch.no_grad

        def call() -> Any:
            with grad_ctx(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                return model(xd)

    info["setup_s"] = time.perf_counter() - t0
    last: list[Any] = []

    def fn() -> None:
        last[:] = [call()]

    timing, mem = time_case(fn, spec)
    if path.startswith("compile"):
        info["compile_s"] = timing.first_s  # first call = dynamo trace + inductor codegen + one run
    out = last[0].detach().float().cpu()
    if spec.get("output_path"):
        torch.save(out, spec["output_path"])
    return {
        **timing.as_dict(),
        "img_per_s": b / timing.median_s,
        "peak_mem_mb": mem.peak_mb,
        "memory_method": mem.method,
        "threads": threads,
        "output_shape": list(out.shape),
        **info,
    }


# --------------------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------------------
def _max_abs_diff(a_path: Path, b_path: Path) -> float | None:
    if not (a_path.is_file() and b_path.is_file()):
        return None
    a = torch.load(a_path, weights_only=True)
    b = torch.load(b_path, weights_only=True)
    if a.shape != b.shape:
        return float("inf")
    return float((a - b).abs().max())


def measure(cfg: Any, sizes: Any) -> list[dict[str, Any]]:
    """All (size, variant, path) cases for ``sizes``; each row gets its max abs difference to eager."""
    rows: list[dict[str, Any]] = []
    out_dir = Path(cfg.cache) / "outputs"
    out_dir.mkdir(parents=True, exist_ok=True)
    # size-major, smallest first: the 1024x2048 sweep (W48 last) is what a used-up time budget skips
    for h, w in sorted(sizes, key=lambda s: s[0] * s[1]):
        big = h * w >= 1024 * 2048
        for variant in cfg.variants:
            weights = make_weights(variant, Path(cfg.cache), cfg.num_classes, cfg.fuse_mode)
            for path in cfg.paths:
                if big and path in cfg.skip_big:
                    continue
                if path == "reference" and not has_reference(variant):
                    continue  # timm has no OCR head: HRNet-OCR is compared with its plain variant
                spec = case_spec(
                    cfg,
                    variant,
                    (h, w),
                    1,
                    path,
                    weights,
                    cfg.warmup,
                    cfg.iters_big if big else cfg.iters,
                    cache_dir=str(cfg.cache),
                    output_path=str(out_dir / f"{variant}-{h}x{w}-{path}.pt"),
                )
                log(f"forward {variant} {h}x{w} {path}")
                res = run_budgeted(forward_case, spec, cfg)
                row = {"variant": variant, "size": f"{h}x{w}", "path": path, **res}
                if "error" in res:
                    log(f"  error: {res['error']}")
                else:
                    log(f"  {res['median_s']:.3f} s/img, peak {res.get('peak_mem_mb') or 0:.0f} MiB")
                rows.append(row)
            eager_out = out_dir / f"{variant}-{h}x{w}-eager.pt"
            for row in rows:
                if row["variant"] == variant and row["size"] == f"{h}x{w}" and "error" not in row:
                    other = out_dir / f"{variant}-{h}x{w}-{row['path']}.pt"
                    row["max_abs_diff_vs_eager"] = _max_abs_diff(eager_out, other)
    return rows


def run(cfg: Any, rows: list[dict[str, Any]] | None = None) -> Report:
    """The forward report; measures every configured size unless ``rows`` were measured already."""
    if rows is None:
        rows = measure(cfg, cfg.sizes)
    ratios = forward_ratios(rows, cfg.tolerance)
    ocr = ocr_over_plain(rows, "median_s")
    table = markdown_table(
        rows,
        [
            Column("variant", "variant"),
            Column("size", "input"),
            Column("path", "path"),
            Column("median_s", "s / img"),
            Column("img_per_s", "img/s"),
            Column("peak_mem_mb", "peak MiB", "{:.0f}"),
            Column("max_abs_diff_vs_eager", "max abs diff vs eager", "{:.1e}"),
            Column("setup_s", "setup s", "{:.1f}"),
            Column("load_1m", "load", "{:.1f}"),
            Column("error", "error"),
        ],
    )
    ratio_table = markdown_table(
        ratios,
        [
            Column("variant", "variant"),
            Column("size", "input"),
            Column("fast_over_reference", "fast / reference"),
            Column("best_path", "hrseg best path"),
            Column("best_over_ort", "best / ONNX Runtime"),
            Column("eager_over_reference", "eager / reference"),
            Column("fast_equal_eager", "fast == eager (1e-4)"),
            Column("reference_equal_eager", "reference == eager (1e-4)"),
        ],
    )
    legend = "\n".join(f"- `{p}`: {PATHS[p]}" for p in cfg.paths)
    md = (
        f"Batch 1, threads {cfg.threads}, fuse mode `{cfg.fuse_mode}` (timm's), "
        "weights shared by all paths.\n\n"
        f"{legend}\n\n{table}\n\n### Ratios (throughput, higher is better for hrseg)\n\n{ratio_table}\n"
    )
    if ocr:
        md += ocr_table(ocr, "s / img")
    config = {
        "variants": list(cfg.variants),
        "sizes": [list(s) for s in cfg.sizes],
        "paths": list(cfg.paths),
        "warmup": cfg.warmup,
        "iters": cfg.iters,
        "iters_big": cfg.iters_big,
        "max_seconds": cfg.max_seconds,
        "fuse_mode": cfg.fuse_mode,
        "device": cfg.device,
        "isolate": cfg.isolate,
        "tolerance": cfg.tolerance,
    }
    extra = {"ratios": ratios, "paths": PATHS, "ocr_over_plain": ocr}
    return Report("forward", config, rows, cfg.machine, md, extra)


def ocr_over_plain(rows: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """Each HRNet-OCR row against its plain-head variant's row of the same case (``key``: time per call)."""
    plain = {
        (r["variant"], r.get("size"), r["path"]): r
        for r in rows
        if "error" not in r and not is_ocr(r["variant"])
    }
    out = []
    for r in rows:
        if "error" in r or not is_ocr(r["variant"]):
            continue
        base = plain.get((plain_variant(r["variant"]), r.get("size"), r["path"]))
        if base is None:
            continue
        out.append(
            {
                "variant": r["variant"],
                "plain": base["variant"],
                "size": r.get("size"),
                "path": r["path"],
                "ocr_s": r[key],
                "plain_s": base[key],
                "time_ratio": ratio(r[key], base[key]),
                "ocr_peak_mb": r.get("peak_mem_mb"),
                "plain_peak_mb": base.get("peak_mem_mb"),
            }
        )
    return out


def ocr_table(ocr: list[dict[str, Any]], unit: str) -> str:
    """Markdown section (heading and table) of :func:`ocr_over_plain` rows."""
    return (
        "\n### HRNet-OCR against the plain head (same backbone, same path)\n\n"
        + markdown_table(
            ocr,
            [
                Column("variant", "OCR variant"),
                Column("plain", "plain"),
                Column("size", "input"),
                Column("path", "path"),
                Column("ocr_s", f"OCR {unit}"),
                Column("plain_s", f"plain {unit}"),
                Column("time_ratio", "OCR / plain time"),
                Column("ocr_peak_mb", "OCR peak MiB", "{:.0f}"),
                Column("plain_peak_mb", "plain peak MiB", "{:.0f}"),
            ],
        )
        + "\n"
    )


def forward_ratios(rows: list[dict[str, Any]], tolerance: float = 1e-4) -> list[dict[str, Any]]:
    """Per (variant, size): fast/reference, best hrseg path/ORT, eager/reference and the parity verdicts."""
    out: list[dict[str, Any]] = []
    keys = dict.fromkeys((r["variant"], r["size"]) for r in rows)
    for variant, size in keys:
        by_path = {
            r["path"]: r for r in rows if r["variant"] == variant and r["size"] == size and "error" not in r
        }

        def tput(p: str, by_path: dict[str, dict[str, Any]] = by_path) -> float | None:
            return by_path[p]["img_per_s"] if p in by_path else None

        hrseg_fast = {p: tput(p) for p in FAST_PATHS if tput(p) is not None}
        best_path = max(hrseg_fast, key=lambda p: hrseg_fast[p]) if hrseg_fast else None

        def equal(p: str, by_path: dict[str, dict[str, Any]] = by_path) -> bool | None:
            d = by_path.get(p, {}).get("max_abs_diff_vs_eager")
            return None if d is None else bool(d <= tolerance)

        out.append(
            {
                "variant": variant,
                "size": size,
                "fast_over_reference": ratio(tput("fast"), tput("reference")),
                "fast_nchw_over_reference": ratio(tput("fast_nchw"), tput("reference")),
                "best_path": best_path,
                "best_over_reference": ratio(hrseg_fast.get(best_path or ""), tput("reference")),
                "best_over_ort": ratio(hrseg_fast.get(best_path or ""), tput("ort")),
                "eager_over_reference": ratio(tput("eager"), tput("reference")),
                "fast_equal_eager": equal("fast"),
                "reference_equal_eager": equal("reference"),
                "ort_equal_eager": equal("ort"),
            }
        )
    return out
