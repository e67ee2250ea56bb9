"""Where ONNX Runtime's lead over hrseg's fast path comes from: single convolutions and per-op profiles.

One command: ``python -m benchmarks.ort_gap`` (2-3 minutes on 2 cores). Two markdown tables:

- *probes*: one HRNet-shaped convolution with bias, batch 1, exported alone to ONNX and timed in ONNX Runtime
  (CPU EP, all graph optimizations, intra-op threads = cores) next to the same module in PyTorch eager under
  ``inference_mode`` (GFLOP/s, median of N calls after two warm-up calls);
- *profile*: one forward of W18-Small-v2 and W18 at 512x1024 (the suite's shared weights and ONNX export),
  split by operator: ONNX Runtime's session profiler against ``torch.profiler`` on the fast path.
"""

from __future__ import annotations

import argparse
import copy
import io
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from benchmarks.common import num_cores, setup_torch, time_callable
from benchmarks.models import build_hrseg, export_onnx, make_weights, seeded_input

#: (kernel, in, out channels, height, width): W18 branch convs, W48 widths, the head's and fusion 1x1s
PROBES: tuple[tuple[int, int, int, int, int], ...] = (
    (3, 18, 18, 128, 256),
    (3, 36, 36, 64, 128),
    (3, 48, 48, 128, 256),
    (3, 144, 144, 16, 32),
    (1, 270, 270, 128, 256),
    (1, 256, 64, 128, 256),
    (1, 720, 720, 128, 256),
)


def _median_s(fn: Callable[[], object], iters: int) -> float:
    return time_callable(fn, warmup=2, iters=iters).median_s


def probe(kernel: int, cin: int, cout: int, h: int, w: int, threads: int, iters: int) -> dict[str, float]:
    """GFLOP/s of one convolution: torch NCHW, torch channels_last, ONNX Runtime."""
    import onnxruntime as ort

    conv = nn.Conv2d(cin, cout, kernel, padding=kernel // 2).eval()
    x = torch.randn(1, cin, h, w)
    conv_cl = copy.deepcopy(conv).to(memory_format=torch.channels_last)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    buf = io.BytesIO()
    torch.onnx.export(conv, (x,), buf, dynamo=False, opset_version=17)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(buf.getvalue(), opts, providers=["CPUExecutionProvider"])
    feed = {sess.get_inputs()[0].name: x.numpy()}
    gflop = 2 * cin * cout * kernel * kernel * h * w / 1e9
    with torch.inference_mode():
        nchw = _median_s(lambda: conv(x), iters)
        cl = _median_s(lambda: conv_cl(x_cl), iters)
    onnx = _median_s(lambda: sess.run(None, feed), iters)
    return {"torch_nchw": gflop / nchw, "torch_channels_last": gflop / cl, "onnxruntime": gflop / onnx}


#: torch.profiler op names grouped like ONNX Runtime's node types
TORCH_GROUPS = {
    "aten::mkldnn_convolution": "convolution",
    "aten::upsample_bilinear2d": "resize",
    "aten::upsample_nearest2d": "resize",
    "aten::add_": "add",
    "aten::add": "add",
    "aten::clamp_min_": "relu",
    "aten::relu_": "relu",
    "aten::cat": "concat",
    "aten::copy_": "layout / copy",
}
ORT_GROUPS = {
    "Conv": "convolution",
    "FusedConv": "convolution",
    "Resize": "resize",
    "Add": "add",
    "Sum": "add",
    "Relu": "relu",
    "Concat": "concat",
    "ReorderInput": "layout / copy",
    "ReorderOutput": "layout / copy",
}


def profile(variant: str, size: tuple[int, int], threads: int, cache: Path) -> dict[str, dict[str, float]]:
    """Seconds per operator group of one warm forward: ONNX Runtime vs hrseg's fast path."""
    import json

    import onnxruntime as ort

    from hrseg.inference import prepare_for_inference

    weights = make_weights(variant, cache)
    model = build_hrseg(variant, weights)
    onnx_path, _ = export_onnx(model, variant, 19, "nearest", cache / "onnx", size)
    x = seeded_input(1, *size)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.enable_profiling = True
    opts.profile_file_prefix = str(cache / f"ort-profile-{variant}")
    sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    feed = {sess.get_inputs()[0].name: x.numpy()}
    for _ in range(3):
        sess.run(None, feed)
    events = json.loads(Path(sess.end_profiling()).read_text())
    last = [e for e in events if e.get("name") == "model_run"][-1]
    ort_s: dict[str, float] = {"total": last["dur"] / 1e6}
    in_last_run = [
        e
        for e in events
        if e.get("cat") == "Node"
        and e["name"].endswith("_kernel_time")
        and last["ts"] <= e["ts"] <= last["ts"] + last["dur"]
    ]
    for e in in_last_run:
        group = ORT_GROUPS.get(e["args"].get("op_name", ""), "other")
        ort_s[group] = ort_s.get(group, 0.0) + e["dur"] / 1e6
    fast = prepare_for_inference(model)
    torch_s: dict[str, float] = {}
    with torch.inference_mode():
        fast(x)
        fast(x)
        t0 = time.perf_counter()
        with torch.profiler.profile() as prof:
            fast(x)
        torch_s["total"] = time.perf_counter() - t0
    for avg in prof.key_averages():
        group = TORCH_GROUPS.get(avg.key, "other")
        torch_s[group] = torch_s.get(group, 0.0) + avg.self_cpu_time_total / 1e6
    return {"onnxruntime": ort_s, "torch_fast": torch_s}


def main(argv: Sequence[str] | None = None) -> int:
    """Print the probe and profile tables."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ort_gap", description=__doc__)
    parser.add_argument("--threads", type=int, default=None, help="threads for both (default: cores)")
    parser.add_argument("--iters", type=int, default=30, help="timed calls per probe")
    parser.add_argument("--cache", type=Path, default=None, help="weights / ONNX folder (default: temp)")
    args = parser.parse_args(argv)
    threads = setup_torch(args.threads or num_cores())
    cache = args.cache or Path(tempfile.mkdtemp(prefix="hrseg-ort-gap-"))
    cache.mkdir(parents=True, exist_ok=True)
    print(f"GFLOP/s, batch 1, {threads} threads, torch {torch.__version__}\n")
    print("| conv | torch NCHW | torch channels_last | ONNX Runtime |")
    print("|---|---|---|---|")
    for kernel, cin, cout, h, w in PROBES:
        r = probe(kernel, cin, cout, h, w, threads, args.iters)
        print(
            f"| {kernel}x{kernel} {cin}->{cout} @ {h}x{w} | {r['torch_nchw']:.0f} | "
            f"{r['torch_channels_last']:.0f} | {r['onnxruntime']:.0f} |",
            flush=True,
        )
    groups = ("convolution", "resize", "add", "relu", "concat", "layout / copy", "other", "total")
    print("\nSeconds per operator group, one warm forward at 512x1024 (profilers add some overhead)\n")
    print("| variant | runtime | " + " | ".join(groups) + " |")
    print("|---|---|" + "---|" * len(groups))
    for variant in ("w18_small_v2", "w18"):
        for runtime, secs in profile(variant, (512, 1024), threads, cache).items():
            cells = " | ".join(f"{secs.get(g, 0.0):.3f}" for g in groups)
            print(f"| {variant} | {runtime} | {cells} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
