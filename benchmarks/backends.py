"""Deployment backends (issue 14): plain ONNX Runtime against hrseg's best path per precision, plus demo mIoU.

``python -m benchmarks.backends [--variants w18_small_v2,w18,w48,w48_ocr] [--sizes 512x1024,1024x2048]
[--demo-ckpt CKPT] [--predict-folder N] [--device cuda]``

One run measures, per variant and input size (batch 1, random-init weights: speed does not depend on them):

- the baseline, what a user sets up by hand: on the CPU ``plain_ort``, ONNX Runtime fp32 on hrseg's ONNX
  export with default ``SessionOptions`` and the CPU provider; on CUDA ``plain_ort`` with the CUDA provider
  when ONNX Runtime has one, else ``eager``, the PyTorch model in ``eval()`` / ``no_grad`` (fp32; cuDNN's
  default TF32 convolutions);
- hrseg's paths through :func:`hrseg.deploy.backends.build_backend`: on the CPU ``torch`` (the fast path),
  ``onnxruntime`` and ``openvino`` in fp32, both in int8 (static quantization calibrated on 8 generated
  scenes), OpenVINO bf16 / fp16 where the CPU runs them; on CUDA ``torch`` and ``compile`` in fp32, bf16 and
  fp16 autocast, and ``onnxruntime`` with its CUDA / TensorRT providers when installed;
- the best hrseg path per precision and its throughput over the baseline (targets on the CPU: fp32 >= 1.0x,
  reduced precision >= 1.5x).

With ``--demo-ckpt`` (a trained ``hrseg fit --config demo`` checkpoint; default: the newest under
``runs/demo``) it also scores every backend and precision on the demo validation split (32 scenes, ground
truth): mIoU, the drop against torch fp32 (target: within 0.005) and pixel agreement. The chosen ``auto``
backend is the fastest fp32 path here: that is the rule ``hrseg.deploy.backends.resolve_backend`` encodes.

With ``--predict-folder N`` it checks the user's view of ``auto``: ``hrseg predict --backend auto`` over a
folder of N generated street scenes (``--predict-size``, default 1024x2048) with the demo checkpoint, with an
empty export cache and with a warm one (fp32 and int8), against a stand-alone ONNX Runtime script written the
way a user would (``benchmarks/hand_ort.py``: PIL, numpy, default session, argmax, PNG; no hrseg import) on
the checkpoint's ``hrseg export --format onnx --upsample`` file (logits at the input size). Both are timed as
whole processes, startup included, and their label maps are compared.

Writes ``backends.json`` and ``backends.md`` into ``--out``; the machine line records load and CPU busyness,
so a run on a shared machine says so.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.common import (
    Column,
    Report,
    log,
    machine_info,
    markdown_table,
    parse_size,
    parse_sizes,
    setup_torch,
    synchronizer,
    time_callable,
    warmup_seconds,
)
from hrseg.metadata import LabelSet

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

FP32_TARGET = 1.0
REDUCED_TARGET = 1.5
MIOU_TOLERANCE = 0.005


def _cuda_ort_providers() -> list[str]:
    """ONNX Runtime's GPU providers installed here (none with the CPU-only ``onnxruntime`` package)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return []
    wanted = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
    return [p for p in wanted if p in ort.get_available_providers()]


def _paths(device: str, selected: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """(backend, precision) pairs hrseg can run on ``device`` here; only the ``selected`` ones when given.

    ``selected``: ``--paths``, ``"backend:precision"`` items (empty: all).
    """
    from hrseg.deploy.backends import available_backends
    from hrseg.inference.runtime import openvino_precisions

    have = available_backends()
    if device.startswith("cuda"):
        pairs = [(b, p) for p in ("fp32", "bf16", "fp16") for b in ("torch", "compile")]
        if "onnxruntime" in have and _cuda_ort_providers():
            pairs.append(("onnxruntime", "fp32"))
    else:
        pairs = [("torch", "fp32")]
        if "onnxruntime" in have:
            pairs += [("onnxruntime", "fp32"), ("onnxruntime", "int8")]
        if "openvino" in have:
            pairs += [("openvino", "fp32"), ("openvino", "int8")]
            pairs += [("openvino", p) for p in ("bf16", "fp16") if p in openvino_precisions()]
    return [pair for pair in pairs if not selected or ":".join(pair) in selected]


def _timed(fn: Any, device: str, iters: int, cap_s: float) -> float:
    """Median seconds per call after warm-up (GPU: synchronized, at least 2 s of warm-up)."""
    timing = time_callable(
        fn,
        warmup=1,
        iters=iters,
        max_seconds=cap_s,
        sync=synchronizer(device),
        min_warmup_s=warmup_seconds(device),
    )
    return timing.median_s


def _baseline(model: torch.nn.Module, onnx_file: Any, x: torch.Tensor, device: str) -> tuple[str, Any]:
    """What a user sets up by hand on ``device``: (name, zero-argument callable).

    ``onnx_file()`` gives hrseg's fp32 ONNX export (made only when ONNX Runtime is the baseline).
    """
    if device.startswith("cuda") and not _cuda_ort_providers():

        def eager() -> Any:
            with torch.no_grad():
                return model(x)

        return "eager", eager
    import onnxruntime as ort

    providers = [*_cuda_ort_providers(), "CPUExecutionProvider"] if device.startswith("cuda") else None
    session = ort.InferenceSession(str(onnx_file()), providers=providers or ["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: x.cpu().numpy()}
    return "plain_ort", lambda: session.run(None, feed)


def speed(
    variant: str,
    size: tuple[int, int],
    iters: int,
    cap_s: float,
    cache: Path,
    device: str = "cpu",
    paths: tuple[str, ...] = (),
) -> list[dict[str, Any]]:
    """Seconds per image of the baseline and each hrseg path for one variant and size."""
    import hrseg
    from hrseg.deploy.backends import build_backend
    from hrseg.export import export_cached
    from hrseg.metadata import ModelMeta

    name = f"hrnetv2_{variant}"
    torch.manual_seed(0)
    model = hrseg.build_model(name, num_classes=19).eval()
    meta = ModelMeta(model=name, labels=LabelSet.generic(19))
    cpu_model = model
    x = torch.randn(1, 3, *size)
    model, x = model.to(device) if device != "cpu" else model, x.to(device)
    common = {"variant": variant, "input": f"{size[0]}x{size[1]}"}
    base_name, base_fn = _baseline(
        model, lambda: export_cached(cpu_model, meta, "onnx", "fp32", cache), x, device
    )
    base = _timed(base_fn, device, iters, cap_s)
    rows: list[dict[str, Any]] = [{**common, "path": base_name, "precision": "fp32", "s_per_img": base}]
    rows[-1]["vs_baseline"] = 1.0
    log(f"{variant} {size}: {base_name} {base:.4f} s")
    for backend, precision in _paths(device, paths):
        row: dict[str, Any] = {**common, "path": backend, "precision": precision}
        try:
            t0 = time.perf_counter()
            net = build_backend(model, meta, backend, precision, device=device, cache_dir=cache)
            with torch.inference_mode():
                net(x)  # compile / first-shape set-up counts as set-up, not as the first timed call
            synchronizer(device)()
            row["setup_s"] = time.perf_counter() - t0
            with torch.inference_mode():
                seconds = _timed(lambda net=net: net(x), device, iters, cap_s)
            row.update(s_per_img=seconds, vs_baseline=base / seconds)
            del net
        except Exception as err:  # one failing path must not end the run
            row["error"] = f"{type(err).__name__}: {err}"[:200]
        log(f"{variant} {size}: {backend} {precision} {row.get('s_per_img', row.get('error'))}")
        rows.append(row)
    if device.startswith("cuda"):
        torch._dynamo.reset()  # compiled graphs of this variant are not needed again
        torch.cuda.empty_cache()
    return rows


def _newest_demo_checkpoint() -> Path | None:
    found = sorted(Path("runs/demo").rglob("*.ckpt"), key=lambda p: p.stat().st_mtime)
    best = [p for p in found if p.name != "last.ckpt"]
    return (best or found or [None])[-1]


def demo_accuracy(
    ckpt: Path, cache: Path, num_val: int, device: str = "cpu", paths: tuple[str, ...] = ()
) -> list[dict[str, Any]]:
    """mIoU on the demo validation split per backend and precision, against torch fp32 on ``device``."""
    from hrseg.data import DemoDataModule
    from hrseg.deploy import Segmenter
    from hrseg.export import accuracy_report

    images, masks = DemoDataModule(num_val=num_val, image_size=(80, 160)).scenes("val")
    reference = Segmenter.from_checkpoint(ckpt, device=device)
    rows = []
    for backend, precision in _paths(device, paths):
        row: dict[str, Any] = {"path": backend, "precision": precision}
        try:
            seg = Segmenter.from_checkpoint(
                ckpt,
                device=device,
                backend=backend,
                precision=precision,
                cache_dir=cache,
                calib_images=images[:8],
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


def _run_timed(cmd: list[str]) -> tuple[float, str]:
    """Wall seconds of a whole process (startup included) and its output; raises when it fails."""
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... exited {done.returncode}: {done.stderr[-600:]}")
    return seconds, done.stdout + done.stderr


def _label_maps(folder: Path) -> dict[str, np.ndarray]:
    from PIL import Image

    return {p.name: np.asarray(Image.open(p)) for p in sorted(folder.glob("*_trainIds.png"))}


def predict_folder_check(ckpt: Path, count: int, size: tuple[int, int], out: Path) -> list[dict[str, Any]]:
    """``hrseg predict --backend auto`` (cold and warm export cache) against ONNX Runtime set up by hand."""
    import shutil

    from PIL import Image

    from hrseg.data.scenes import generate_scene
    from hrseg.deploy.backends import resolve_backend

    work = out / "predict-folder"
    shutil.rmtree(work, ignore_errors=True)
    images = work / "images"
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(generate_scene(rng, size)[0]).save(images / f"scene_{i:04d}.png")
    hrseg_cmd = [sys.executable, "-m", "hrseg"]
    onnx_path = work / "model.onnx"
    export_cmd = [*hrseg_cmd, "export", "--ckpt_path", str(ckpt), "--format", "onnx", "--upsample"]
    _run_timed([*export_cmd, "--output", str(onnx_path)])
    label = f"{count} scenes {size[0]}x{size[1]}, `{ckpt.name}`"
    rows: list[dict[str, Any]] = []
    seconds, text = _run_timed(
        [
            sys.executable,
            str(Path(__file__).with_name("hand_ort.py")),
            str(onnx_path),
            str(images),
            str(work / "hand"),
        ]
    )
    images_s = float(text.strip().splitlines()[-1])
    rows.append({"run": "ONNX Runtime by hand (hand_ort.py)", "wall_s": seconds, "images_s": images_s})
    hand = _label_maps(work / "hand")
    chosen = resolve_backend("auto", "cpu")
    cache = work / "cache"
    runs = [("fp32", "cold cache (exports)"), ("fp32", "warm cache"), ("int8", "cold cache (quantizes)")]
    runs.append(("int8", "warm cache"))
    for precision, when in runs:
        target = work / f"hrseg-{precision}"
        cmd = [*hrseg_cmd, "predict", "--ckpt_path", str(ckpt), "--input", str(images)]
        cmd += ["--output", str(target)]
        cmd += ["--backend", "auto", "--precision", precision, "--cache-dir", str(cache)]
        cmd += ["--no-color", "--no-progress", "--overwrite"]
        seconds, _ = _run_timed(cmd)
        got = _label_maps(target)
        if sorted(got) != sorted(hand):
            raise RuntimeError(
                f"hrseg predict wrote {len(got)} label maps, the hand-written loop {len(hand)}"
            )
        agree = sum(int((got[k] == hand[k]).sum()) for k in hand) / sum(v.size for v in hand.values())
        rows.append(
            {
                "run": f"hrseg predict --backend auto ({chosen}) --precision {precision}, {when}",
                "wall_s": seconds,
                "agreement": agree,
            }
        )
    for row in rows:
        row["images"] = label
        row["vs_hand"] = rows[0]["wall_s"] / row["wall_s"]
        log(f"predict folder: {row['run']}: {row['wall_s']:.1f} s")
    return rows


def summarize(rows: list[dict[str, Any]], device: str = "cpu") -> list[dict[str, Any]]:
    """Best hrseg path per (variant, input, fp32 / reduced) and the target check (targets: CPU only)."""
    out = []
    keys = sorted({(r["variant"], r["input"]) for r in rows}, key=lambda k: (k[1], k[0]))
    baselines = ("plain_ort", "eager")
    for variant, size in keys:
        mine = [r for r in rows if (r["variant"], r["input"]) == (variant, size) and "s_per_img" in r]
        for group, target in (("fp32", FP32_TARGET), ("reduced", REDUCED_TARGET)):
            cands = [
                r
                for r in mine
                if r["path"] not in baselines and ((r["precision"] == "fp32") == (group == "fp32"))
            ]
            if not cands:
                continue
            best = min(cands, key=lambda r: r["s_per_img"])
            on_cpu = not device.startswith("cuda")
            out.append(
                {
                    "variant": variant,
                    "input": size,
                    "group": group,
                    "best": f"{best['path']} {best['precision']}",
                    "vs_baseline": best["vs_baseline"],
                    "target": target if on_cpu else None,
                    "met": best["vs_baseline"] >= target if on_cpu else None,
                }
            )
    return out


@dataclass
class BackendsConfig:
    """What one run measures: ``python -m benchmarks.backends`` options (``benchmarks.run`` fills it)."""

    out: Path
    cache: Path
    variants: tuple[str, ...] = ("w18_small_v2", "w18", "w48")
    sizes: tuple[tuple[int, int], ...] = ((512, 1024),)
    device: str = "cpu"
    paths: tuple[str, ...] = ()
    iters: int = 5
    cap_s: float = 30.0
    threads: int | None = None
    demo_ckpt: Path | None = None
    num_val: int = 32
    accuracy: bool = True
    predict_folder: int = 0
    predict_size: tuple[int, int] = (1024, 2048)


def run(cfg: BackendsConfig) -> Report:
    """Speed per variant / size / path, demo accuracy per path and the predict-folder check, as one report."""
    device = cfg.device
    threads = setup_torch(cfg.threads, device)
    machine = machine_info(device, threads)
    start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for size in cfg.sizes:
        for variant in cfg.variants:
            rows += speed(variant, size, cfg.iters, cfg.cap_s, cfg.cache, device, cfg.paths)
    accuracy: list[dict[str, Any]] = []
    ckpt = cfg.demo_ckpt or _newest_demo_checkpoint()
    if cfg.accuracy and ckpt is not None:
        accuracy = demo_accuracy(ckpt, cfg.cache, cfg.num_val, device, cfg.paths)
    folder: list[dict[str, Any]] = []
    if cfg.predict_folder and ckpt is not None:
        folder = predict_folder_check(ckpt, cfg.predict_folder, cfg.predict_size, cfg.out)
    best = summarize(rows, device)
    machine["load_avg_end"] = os.getloadavg()
    baseline = (
        "plain ONNX Runtime (fp32, default SessionOptions, CPU provider)"
        if not device.startswith("cuda")
        else "plain ONNX Runtime with its CUDA provider"
        if _cuda_ort_providers()
        else "eager PyTorch fp32 (ONNX Runtime has no CUDA provider here; cuDNN's default TF32 convolutions)"
    )
    md = [
        f"Baseline: {baseline}; hrseg's paths through `build_backend`, batch 1, device `{device}`.\n",
        markdown_table(
            rows,
            [
                Column("variant", "variant", "{}"),
                Column("input", "input", "{}"),
                Column("path", "path", "{}"),
                Column("precision", "precision", "{}"),
                Column("s_per_img", "s / img"),
                Column("vs_baseline", "x baseline"),
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
                Column("vs_baseline", "x baseline"),
                Column("target", "target"),
                Column("met", "met", "{}"),
            ],
        ),
    ]
    if accuracy:
        md += [
            f"\n### Demo validation split ({cfg.num_val} scenes, 80x160), `{ckpt}`\n",
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
    elif cfg.accuracy:
        md.append("\nNo demo checkpoint found (train one: `hrseg fit --config demo`); mIoU not measured.\n")
    if folder:
        md += [
            f"\n### `hrseg predict --backend auto` over a folder ({folder[0]['images']}), whole processes\n",
            markdown_table(
                folder,
                [
                    Column("run", "run", "{}"),
                    Column("wall_s", "wall s"),
                    Column("images_s", "s on images"),
                    Column("vs_hand", "x hand-written ORT"),
                    Column("agreement", "pixel agreement with it", "{:.4f}"),
                ],
            ),
        ]
    md.append(
        f"\nTotal time {(time.perf_counter() - start) / 60:.1f} min; "
        f"load average at the end {machine['load_avg_end']}."
    )
    return Report(
        benchmark="backends",
        config={k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()}
        | {"threads": threads},
        results=rows,
        machine=machine,
        markdown="\n".join(md),
        extra={"best": best, "accuracy": accuracy, "predict_folder": folder},
    )


def main(argv: list[str] | None = None) -> int:
    """Run the backends benchmark, write backends.json / backends.md into ``--out``; returns 0."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.backends", description=__doc__.split("\n")[0])
    p.add_argument("--variants", default="w18_small_v2,w18,w48", help="add w48_ocr for HRNet-OCR")
    p.add_argument("--sizes", default="512x1024", help="comma separated HxW, e.g. 512x1024,1024x2048")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument(
        "--paths", default="", help="only these backend:precision pairs, e.g. torch:fp32,compile:bf16"
    )
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--cap-s", type=float, default=30.0, help="time cap per timed loop")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--demo-ckpt", default=None, help="trained demo checkpoint (default: newest in runs/demo)")
    p.add_argument("--num-val", type=int, default=32)
    p.add_argument("--no-accuracy", action="store_true")
    p.add_argument(
        "--predict-folder", type=int, default=0, metavar="N", help="CPU: time hrseg predict over N scenes"
    )
    p.add_argument("--predict-size", default="1024x2048", help="HxW of the --predict-folder scenes")
    p.add_argument("--out", default="benchmarks/out")
    p.add_argument("--cache", default=None, help="export cache (default: a folder under --out)")
    args = p.parse_args(argv)
    out = Path(args.out)
    cfg = BackendsConfig(
        out=out,
        cache=Path(args.cache) if args.cache else out / "backend-cache",
        variants=tuple(v.strip() for v in args.variants.split(",") if v.strip()),  # "": accuracy only
        sizes=parse_sizes(args.sizes),
        device=args.device,
        paths=tuple(v.strip() for v in args.paths.split(",") if v.strip()),
        iters=args.iters,
        cap_s=args.cap_s,
        threads=args.threads,
        demo_ckpt=Path(args.demo_ckpt) if args.demo_ckpt else None,
        num_val=args.num_val,
        accuracy=not args.no_accuracy,
        predict_folder=args.predict_folder,
        predict_size=parse_size(args.predict_size),
    )
    _, md_path = run(cfg).write(out)
    print(md_path.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
