"""Deployment backends (issue 14): plain ONNX Runtime against hrseg's best path per precision, plus demo mIoU.

``python -m benchmarks.backends [--variants w18_small_v2,w18,w48] [--sizes 512x1024] [--demo-ckpt CKPT]``

One run measures, per variant and input size (batch 1, random-init weights: speed does not depend on them):

- ``plain_ort``: ONNX Runtime fp32 on hrseg's ONNX export with default ``SessionOptions`` and the CPU
  provider: what a user sets up by hand (the baseline of every ratio);
- hrseg's paths through :func:`hrseg.inference.backends.build_backend`: ``torch`` (the fast path),
  ``onnxruntime`` and ``openvino`` in fp32, ``onnxruntime`` / ``openvino`` in int8 (static quantization
  calibrated on 8 generated scenes), and OpenVINO bf16 / fp16 where the CPU runs them;
- the best hrseg path per precision and its throughput over plain ONNX Runtime fp32 (targets: fp32 >= 1.0x,
  reduced precision >= 1.5x).

With ``--demo-ckpt`` (a trained ``hrseg fit --config demo`` checkpoint; default: the newest under
``runs/demo``) it also scores every backend and precision on the demo validation split (32 scenes, ground
truth): mIoU, the drop against torch fp32 (target: within 0.005) and pixel agreement. The chosen ``auto``
backend is the fastest fp32 path here: that is the rule ``hrseg.inference.backends.resolve_backend`` encodes.

Writes ``backends.json`` and ``backends.md`` into ``--out``; the machine line records load and CPU busyness,
so a run on a shared machine says so.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import Column, Report, log, machine_info, markdown_table, setup_torch

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

FP32_TARGET = 1.0
REDUCED_TARGET = 1.5
MIOU_TOLERANCE = 0.005


def _median_time(fn: Callable[[], Any], iters: int, cap_s: float) -> float:
    fn()  # warm-up (OpenVINO / ORT allocate on the first call)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < iters and (not times or time.perf_counter() - start < cap_s):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _paths() -> list[tuple[str, str]]:
    """(backend, precision) pairs hrseg can run here."""
    from hrseg.inference.backends import available_backends, openvino_precisions

    have = available_backends()
    pairs = [("torch", "fp32")]
    if "onnxruntime" in have:
        pairs += [("onnxruntime", "fp32"), ("onnxruntime", "int8")]
    if "openvino" in have:
        pairs += [("openvino", "fp32"), ("openvino", "int8")]
        pairs += [("openvino", p) for p in ("bf16", "fp16") if p in openvino_precisions()]
    return pairs


def speed(variant: str, size: tuple[int, int], iters: int, cap_s: float, cache: Path) -> list[dict[str, Any]]:
    """Seconds per image of plain ORT and each hrseg path for one variant and size."""
    import onnxruntime as ort

    import hrseg
    from hrseg.checkpoint import ModelMeta
    from hrseg.inference.backends import build_backend, export_cached

    name = f"hrnetv2_{variant}"
    torch.manual_seed(0)
    model = hrseg.build_model(name, num_classes=19).eval()
    meta = ModelMeta(model=name, num_classes=19)
    x = torch.randn(1, 3, *size)
    rows: list[dict[str, Any]] = []
    onnx_path = export_cached(model, meta, "onnx", "fp32", cache)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])  # defaults, by hand
    feed = {session.get_inputs()[0].name: x.numpy()}
    plain = _median_time(lambda: session.run(None, feed), iters, cap_s)
    rows.append(
        {"variant": variant, "input": f"{size[0]}x{size[1]}", "path": "plain_ort", "precision": "fp32"}
    )
    rows[-1].update(s_per_img=plain, vs_plain_ort=1.0)
    log(f"{variant} {size}: plain ORT {plain:.3f} s")
    for backend, precision in _paths():
        row: dict[str, Any] = {"variant": variant, "input": f"{size[0]}x{size[1]}", "path": backend}
        row["precision"] = precision
        try:
            t0 = time.perf_counter()
            net = build_backend(model, meta, backend, precision, cache_dir=cache)
            row["setup_s"] = time.perf_counter() - t0
            with torch.inference_mode():
                seconds = _median_time(lambda net=net: net(x), iters, cap_s)
            row.update(s_per_img=seconds, vs_plain_ort=plain / seconds)
            del net
        except Exception as err:  # one failing path must not end the run
            row["error"] = f"{type(err).__name__}: {err}"[:200]
        log(f"{variant} {size}: {backend} {precision} {row.get('s_per_img', row.get('error'))}")
        rows.append(row)
    return rows


def _newest_demo_checkpoint() -> Path | None:
    found = sorted(Path("runs/demo").rglob("*.ckpt"), key=lambda p: p.stat().st_mtime)
    best = [p for p in found if p.name != "last.ckpt"]
    return (best or found or [None])[-1]


def demo_accuracy(ckpt: Path, cache: Path, num_val: int) -> list[dict[str, Any]]:
    """mIoU on the demo validation split per backend and precision, against torch fp32."""
    from hrseg.data import DemoDataModule
    from hrseg.inference import Segmenter
    from hrseg.inference.backends import accuracy_report

    images, masks = DemoDataModule(num_val=num_val, image_size=(80, 160)).scenes("val")
    reference = Segmenter.from_checkpoint(ckpt)
    rows = []
    for backend, precision in _paths():
        row: dict[str, Any] = {"path": backend, "precision": precision}
        try:
            seg = Segmenter.from_checkpoint(
                ckpt, backend=backend, precision=precision, cache_dir=cache, calib_images=images[:8]
            )
            report = accuracy_report(reference.predict, seg.predict, images, masks, 19, 255)
            row.update(
                miou=report.miou,
                miou_fp32=report.miou_reference,
                drop=report.drop,
                agreement=report.agreement,
                within=abs(report.drop) <= MIOU_TOLERANCE,
            )
        except Exception as err:
            row["error"] = f"{type(err).__name__}: {err}"[:200]
        log(f"demo mIoU {backend} {precision}: {row.get('miou', row.get('error'))}")
        rows.append(row)
    return rows


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Best hrseg path per (variant, input, fp32 / reduced) and the target check."""
    out = []
    keys = sorted({(r["variant"], r["input"]) for r in rows}, key=lambda k: (k[1], k[0]))
    for variant, size in keys:
        mine = [r for r in rows if (r["variant"], r["input"]) == (variant, size) and "s_per_img" in r]
        for group, target in (("fp32", FP32_TARGET), ("reduced", REDUCED_TARGET)):
            cands = [
                r
                for r in mine
                if r["path"] != "plain_ort" and ((r["precision"] == "fp32") == (group == "fp32"))
            ]
            if not cands:
                continue
            best = min(cands, key=lambda r: r["s_per_img"])
            out.append(
                {
                    "variant": variant,
                    "input": size,
                    "group": group,
                    "best": f"{best['path']} {best['precision']}",
                    "vs_plain_ort": best["vs_plain_ort"],
                    "target": target,
                    "met": best["vs_plain_ort"] >= target,
                }
            )
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the backends benchmark; returns 0."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.backends", description=__doc__.split("\n")[0])
    p.add_argument("--variants", default="w18_small_v2,w18,w48")
    p.add_argument("--sizes", default="512x1024", help="comma separated HxW, e.g. 512x1024,1024x2048")
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--cap-s", type=float, default=30.0, help="time cap per timed loop")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--demo-ckpt", default=None, help="trained demo checkpoint (default: newest in runs/demo)")
    p.add_argument("--num-val", type=int, default=32)
    p.add_argument("--no-accuracy", action="store_true")
    p.add_argument("--out", default="benchmarks/out")
    p.add_argument("--cache", default=None, help="export cache (default: a folder under --out)")
    args = p.parse_args(argv)
    threads = setup_torch(args.threads)
    out = Path(args.out)
    cache = Path(args.cache) if args.cache else out / "backend-cache"
    machine = machine_info("cpu", threads)
    start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for size_text in args.sizes.split(","):
        h, w = (int(v) for v in size_text.lower().split("x"))
        for variant in [v for v in args.variants.split(",") if v]:  # --variants "": accuracy only
            rows += speed(variant, (h, w), args.iters, args.cap_s, cache)
    accuracy: list[dict[str, Any]] = []
    ckpt = Path(args.demo_ckpt) if args.demo_ckpt else _newest_demo_checkpoint()
    if not args.no_accuracy and ckpt is not None:
        accuracy = demo_accuracy(ckpt, cache, args.num_val)
    best = summarize(rows)
    machine["load_avg_end"] = os.getloadavg()
    md = [
        "Plain ONNX Runtime (fp32, default SessionOptions, CPU provider) against hrseg's paths, batch 1.\n",
        markdown_table(
            rows,
            [
                Column("variant", "variant", "{}"),
                Column("input", "input", "{}"),
                Column("path", "path", "{}"),
                Column("precision", "precision", "{}"),
                Column("s_per_img", "s / img"),
                Column("vs_plain_ort", "x plain ORT fp32"),
                Column("setup_s", "setup s"),
                Column("error", "error", "{}"),
            ],
        ),
        "\n### Best hrseg path per precision\n",
        markdown_table(
            best,
            [
                Column("variant", "variant", "{}"),
                Column("input", "input", "{}"),
                Column("group", "precision", "{}"),
                Column("best", "best path", "{}"),
                Column("vs_plain_ort", "x plain ORT fp32"),
                Column("target", "target"),
                Column("met", "met", "{}"),
            ],
        ),
    ]
    if accuracy:
        md += [
            f"\n### Demo validation split ({args.num_val} scenes, 80x160), `{ckpt}`\n",
            markdown_table(
                accuracy,
                [
                    Column("path", "path", "{}"),
                    Column("precision", "precision", "{}"),
                    Column("miou", "val mIoU", "{:.4f}"),
                    Column("miou_fp32", "torch fp32 mIoU", "{:.4f}"),
                    Column("drop", "drop", "{:+.4f}"),
                    Column("agreement", "pixel agreement", "{:.4f}"),
                    Column("within", f"within {MIOU_TOLERANCE}", "{}"),
                    Column("error", "error", "{}"),
                ],
            ),
        ]
    elif not args.no_accuracy:
        md.append("\nNo demo checkpoint found (train one: `hrseg fit --config demo`); mIoU not measured.\n")
    md.append(
        f"\nTotal time {(time.perf_counter() - start) / 60:.1f} min; "
        f"load average at the end {machine['load_avg_end']}."
    )
    report = Report(
        benchmark="backends",
        config=vars(args) | {"threads": threads},
        results=rows,
        machine=machine,
        markdown="\n".join(md),
        extra={"best": best, "accuracy": accuracy},
    )
    _, md_path = report.write(out)
    print(md_path.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
