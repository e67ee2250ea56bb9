"""Run the hrseg benchmark suite: ``python -m benchmarks.run [--quick] [--only forward,...] [--out DIR]``.

Each selected benchmark writes ``<name>.json`` and ``<name>.md`` into the output folder; ``summary.md`` /
``summary.json`` hold the issue-6 target ratios, all measured in this one run on this machine. The full run
is bounded by a soft 13-minute budget (``--budget-min``; each timed loop also has a time cap); ``--quick``
runs tiny inputs in-process in seconds (smoke test, numbers meaningless).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import (
    Column,
    Report,
    cpu_busy_fraction,
    describe_machine,
    load_average,
    log,
    machine_info,
    markdown_table,
    num_cores,
    parse_sizes,
    setup_torch,
)
from benchmarks.forward import FAST_PATHS
from benchmarks.models import has_reference
from benchmarks.plots import plot_forward
from benchmarks.targets import (
    BEST_OVER_ORT_TARGET,
    DATA_OVER_TRAIN_TARGET,
    FAST_OVER_REFERENCE_TARGET,
    TRAIN_OVER_REFERENCE_TARGET,
    W48_PEAK_FRACTION_TARGET,
)
from benchmarks.train_step import DEFAULT_TRAIN_PATHS
from benchmarks.train_step import PATHS as TRAIN_PATHS
from hrseg.files import atomic_write_text

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

BENCHMARKS = ("forward", "train", "data", "slide", "flops", "investigate", "backends")
DEFAULT_ONLY = ("forward", "train", "data", "slide", "flops")
README = Path(__file__).resolve().parent / "README.md"
README_BEGIN = "<!-- bench:latest:begin -->"
README_END = "<!-- bench:latest:end -->"

#: share of the CPU that other processes may keep busy (sampled before and after the run) before a warning
BUSY_WARNING = 0.2
#: output parity under CUDA bf16 autocast (fp32 runs keep the 1e-4 of SuiteConfig.tolerance)
BF16_TOLERANCE = 0.1


@dataclass
class SuiteConfig:
    """Every knob of the suite; ``--quick`` swaps in tiny values."""

    out: Path
    cache: Path
    device: str = "cpu"
    threads: int = field(default_factory=num_cores)
    quick: bool = False
    isolate: bool = True
    variants: tuple[str, ...] = ("w18_small_v2", "w18", "w48")
    sizes: tuple[tuple[int, int], ...] = ((512, 1024), (1024, 2048))
    paths: tuple[str, ...] = ("eager", "fast", "fast_nchw", "reference", "ort")
    #: paths skipped at >= 1024x2048 (whether channels_last pays is settled at the smaller size)
    skip_big: tuple[str, ...] = ("fast_nchw",)
    fuse_mode: str = "nearest"
    num_classes: int = 19
    warmup: int = 1
    iters: int = 3
    iters_big: int = 2
    max_seconds: float = 20.0
    case_timeout: float = 300.0
    budget_s: float | None = 17 * 60.0  # soft: no new case starts after it (one case may run over)
    started: float = field(default_factory=time.monotonic)
    tolerance: float = 1e-4
    amp: str | None = None
    train_variants: tuple[str, ...] = ("w18_small_v2", "w18")
    train_paths: tuple[str, ...] = DEFAULT_TRAIN_PATHS
    #: backend of the compiled training paths (aot_eager: the graph without code generation, for dry runs)
    compile_backend: str = "inductor"
    train_size: tuple[int, int] = (512, 1024)
    train_batch: int = 2
    train_warmup: int = 1
    train_iters: int = 3
    data_source_size: tuple[int, int] = (1024, 2048)
    data_images: int = 2
    data_samples: int = 8
    data_batches: int = 4
    data_workers: tuple[int, ...] = ()
    tta_variant: str = "w18_small_v2"
    tta_size: tuple[int, int] = (512, 1024)
    tta_iters: int = 1
    tta_batch_windows: int = 4
    tta_scales: tuple[float, ...] = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)  # official multi-scale test
    matmul_sizes: tuple[int, ...] = (1024, 2048, 4096)
    matmul_iters: int = 3
    probe_scale: float = 1.0
    investigate_variant: str = "w18"
    investigate_size: tuple[int, int] = (512, 1024)
    compile: bool = False
    machine: dict[str, Any] = field(default_factory=dict)

    def time_left(self) -> float | None:
        """Seconds left of the suite budget (None: unlimited)."""
        if self.budget_s is None:
            return None
        return self.budget_s - (time.monotonic() - self.started)

    def apply_quick(self) -> None:
        """Tiny inputs, one iteration, in-process: seconds, for smoke tests; the numbers mean nothing."""
        self.quick = True
        self.isolate = False
        self.budget_s = None
        # one thread: on a busy machine every OpenMP region of a tiny op waits a scheduler slice for the
        # second thread (measured: 30 ms per 3x3 conv at 16x32 under load 8), so 2 threads is 20x slower
        self.threads = 1
        self.variants = ("w18_small_v1",)  # the smallest variant: the smoke test must stay in seconds
        self.sizes = ((64, 128),)
        self.iters = self.iters_big = 1
        self.max_seconds = 5.0
        self.train_variants = ("w18_small_v1",)
        self.train_size = (64, 128)
        self.train_iters = 1
        self.data_source_size = (128, 256)
        self.data_images = 2
        self.data_samples = 2
        self.data_batches = 1
        self.data_workers = ()
        self.tta_variant = "w18_small_v1"
        self.tta_size = (64, 128)
        self.tta_scales = (0.5, 1.0, 1.5)
        self.matmul_sizes = (256,)
        self.matmul_iters = 2
        self.probe_scale = 1 / 16
        self.investigate_variant = "w18_small_v1"
        self.investigate_size = (64, 128)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options (all optional: the default is the full suite on this machine's CPU)."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    p.add_argument("--quick", action="store_true", help="tiny inputs, 1 iteration, in-process (smoke test)")
    p.add_argument(
        "--only",
        default=",".join(DEFAULT_ONLY),
        help=f"comma-separated subset of {','.join(BENCHMARKS)} (default: all but investigate and backends)",
    )
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"), help="output folder")
    p.add_argument("--device", default="cpu", help="cpu or cuda (cuda: bf16 autocast, channels_last)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: cores)")
    p.add_argument("--variants", default=None, help="forward variants, e.g. w18_small_v2,w18,w48")
    p.add_argument("--sizes", default=None, help="forward input sizes HxW, e.g. 512x1024,1024x2048")
    p.add_argument(
        "--paths", default=None, help="forward paths, e.g. eager,fast,fast_nchw,reference,ort,compile"
    )
    p.add_argument("--train-variants", default=None, help="training variants, e.g. w18_small_v2,w18")
    p.add_argument("--train-batch", type=int, default=None, help="training batch size (default 2)")
    p.add_argument("--train-size", default=None, help="training crop HxW (default 512x1024)")
    p.add_argument(
        "--train-paths",
        default=None,
        help=f"training paths, e.g. hrseg_cl,compile_cl (of {', '.join(TRAIN_PATHS)}; "
        f"default {','.join(DEFAULT_TRAIN_PATHS)})",
    )
    p.add_argument(
        "--compile-backend", default="inductor", help="torch.compile backend of the compiled training paths"
    )
    p.add_argument(
        "--precision",
        choices=("bf16", "fp32"),
        default="bf16",
        help="CUDA only: bf16 autocast (default) or fp32 (TF32 convolutions, cuDNN's default)",
    )
    p.add_argument("--iters", type=int, default=None, help="timed iterations per forward case")
    p.add_argument(
        "--compile",
        action="store_true",
        help="add the compile_frozen path (torch.compile + inductor freezing; minutes of compile per case)",
    )
    p.add_argument(
        "--budget-min",
        type=float,
        default=None,
        help="soft time budget in minutes: no new case starts after it (default 17; 0 = unlimited)",
    )
    p.add_argument(
        "--fuse-mode",
        choices=("nearest", "bilinear"),
        default="nearest",
        help="hrseg fusion upsampling; nearest = timm's, required for the parity check",
    )
    iso = p.add_mutually_exclusive_group()
    iso.add_argument(
        "--isolate",
        dest="isolate",
        action="store_true",
        default=None,
        help="one process per case (default for the full suite)",
    )
    iso.add_argument("--no-isolate", dest="isolate", action="store_false", help="run cases in-process")
    p.add_argument("--cache", type=Path, default=None, help="keep weights / ONNX files here (default: temp)")
    p.add_argument("--update-readme", action="store_true", help="copy summary.md into benchmarks/README.md")
    return p.parse_args(argv)


def _run_backends(cfg: SuiteConfig) -> Report:
    """The deployment backends benchmark (``benchmarks.backends``) on the suite's variants and sizes."""
    from benchmarks import backends

    return backends.run(
        backends.BackendsConfig(
            out=cfg.out,
            cache=cfg.cache / "backends",
            variants=cfg.variants,
            sizes=cfg.sizes,
            device=cfg.device,
            iters=cfg.iters,
            cap_s=cfg.max_seconds,
            threads=cfg.threads,
            accuracy=not cfg.quick,  # the demo checkpoint's 32 scenes on every path: not a smoke test's job
        )
    )


def build_config(args: argparse.Namespace, cache: Path) -> SuiteConfig:
    """Defaults, then ``--quick``, then explicit options."""
    cfg = SuiteConfig(out=args.out, cache=cache, device=args.device)
    if args.quick:
        cfg.apply_quick()
    if args.threads:
        cfg.threads = args.threads
    if args.variants:
        cfg.variants = tuple(v.strip() for v in args.variants.split(",") if v.strip())
    if args.sizes:
        cfg.sizes = parse_sizes(args.sizes)
    if args.paths:
        cfg.paths = tuple(s.strip() for s in args.paths.split(",") if s.strip())
        cfg.skip_big = ()
    if args.compile and "compile_frozen" not in cfg.paths:
        cfg.paths = (*cfg.paths, "compile_frozen")
    if args.budget_min is not None:
        cfg.budget_s = args.budget_min * 60 if args.budget_min > 0 else None
    elif args.compile or "investigate" in args.only:
        cfg.budget_s = None  # opted into long runs
    if args.train_variants:
        cfg.train_variants = tuple(v.strip() for v in args.train_variants.split(",") if v.strip())
    if args.train_batch:
        cfg.train_batch = args.train_batch
    if args.train_size:
        cfg.train_size = parse_sizes(args.train_size)[0]
    if args.train_paths:
        cfg.train_paths = tuple(s.strip() for s in args.train_paths.split(",") if s.strip())
        unknown = sorted(set(cfg.train_paths) - set(TRAIN_PATHS))
        if unknown:
            choices = ", ".join(TRAIN_PATHS)
            raise SystemExit(f"benchmarks.run: unknown --train-paths {unknown}; choose from {choices}")
    cfg.compile_backend = args.compile_backend
    if args.iters:
        cfg.iters = args.iters
        cfg.iters_big = min(cfg.iters_big, args.iters)
    if args.isolate is not None:
        cfg.isolate = args.isolate
    cfg.fuse_mode = args.fuse_mode
    cfg.compile = args.compile
    if cfg.device.startswith("cuda"):
        cfg.amp = "bf16" if args.precision == "bf16" else None
        if not cfg.quick:  # GPU calls take milliseconds: more warm-up (cuDNN autotuning) and timed calls
            cfg.warmup = cfg.train_warmup = 3
            cfg.train_iters = 10
            cfg.iters = args.iters or 20
            cfg.iters_big = args.iters or 10
            cfg.tta_iters = 5
        if cfg.amp:
            # bf16 keeps 8 mantissa bits: through ~300 convolutions the logits of two op orders differ by
            # 0.01-0.1 (H200), so the parity check can only catch real mismatches (wrong weights: O(1))
            cfg.tolerance = BF16_TOLERANCE
        cfg.data_workers = (*cfg.data_workers, min(8, num_cores()))
    elif not cfg.quick:
        cfg.data_workers = (num_cores(),)
    return cfg


# --------------------------------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------------------------------
def _target(name: str, measured: float | None, target: float, where: str, note: str = "") -> dict[str, Any]:
    return {
        "target": name,
        "where": where,
        "measured": measured,
        "goal": target,
        "met": None if measured is None else measured >= target,
        "note": note,
    }


def targets(reports: dict[str, Report]) -> list[dict[str, Any]]:
    """The issue-6 targets as rows (measured ratio, goal, met) from this run's reports."""
    rows: list[dict[str, Any]] = []
    fwd = reports.get("forward")
    if fwd is not None:
        for r in fwd.extra.get("ratios", []):
            where = f"{r['variant']} {r['size']}"
            goal = FAST_OVER_REFERENCE_TARGET.get(r["variant"], 1.5)
            if has_reference(r["variant"]):  # HRNet-OCR has no timm reference (compared with W48 plain)
                rows.append(_target("hrseg fast / timm reference", r["fast_over_reference"], goal, where))
            rows.append(
                _target(
                    "hrseg best / ONNX Runtime",
                    r["best_over_ort"],
                    BEST_OVER_ORT_TARGET,
                    where,
                    f"best = {r['best_path']}",
                )
            )
            for key, label in (
                ("fast_equal_eager", "fast == eager"),
                ("reference_equal_eager", "reference == eager"),
            ):
                if r.get(key) is not None:
                    rows.append(
                        {
                            "target": f"{label} (max abs diff <= 1e-4)",
                            "where": where,
                            "measured": r[key],
                            "goal": True,
                            "met": r[key],
                            "note": "",
                        }
                    )
    fl = reports.get("flops")
    if fl is not None:
        for size in dict.fromkeys(r["size"] for r in fl.results if r["variant"] == "w48"):
            fast = [
                r
                for r in fl.results
                if r["variant"] == "w48" and r["size"] == size and r["path"] in FAST_PATHS
            ]
            if fast:
                best = max(fast, key=lambda r: r["fraction_of_peak"] or 0)
                rows.append(
                    _target(
                        "W48 fast path fraction of matmul peak",
                        best["fraction_of_peak"],
                        W48_PEAK_FRACTION_TARGET,
                        f"w48 {size}",
                        f"path {best['path']}",
                    )
                )
    tr = reports.get("train")
    if tr is not None:
        for r in tr.extra.get("ratios", []):
            if not has_reference(r["variant"]):
                continue
            rows.append(
                _target(
                    "training step hrseg best / reference",
                    r["best_over_reference"],
                    TRAIN_OVER_REFERENCE_TARGET,
                    r["variant"],
                    f"best = {r['best_path']}",
                )
            )
    da = reports.get("data")
    if da is not None:
        for r in da.results:
            rows.append(
                _target(
                    "data loader / training throughput",
                    r["loader_over_train"],
                    DATA_OVER_TRAIN_TARGET,
                    r["variant"],
                    f"num_workers={r['default_workers']} (default)",
                )
            )
    rows += _backend_targets(reports.get("backends"))
    return rows


def _backend_targets(report: Report | None) -> list[dict[str, Any]]:
    """Issue 14: best hrseg path per precision over plain ONNX Runtime fp32 (CPU), demo mIoU within 0.005."""
    if report is None:
        return []
    rows = [
        _target(
            f"hrseg best {b['group']} path / plain ONNX Runtime fp32",
            b["vs_baseline"],
            b["target"],
            f"{b['variant']} {b['input']}",
            f"best = {b['best']}",
        )
        for b in report.extra.get("best", [])
        if b.get("target") is not None
    ]
    for a in report.extra.get("accuracy", []):
        if a.get("precision") != "fp32" and "within" in a:
            where = f"{a['path']} {a['precision']}, demo val"
            note = f"drop {a['drop']:+.4f}"
            rows.append({"target": "mIoU within 0.005 of fp32", "where": where, "measured": a["within"]})
            rows[-1].update(goal=True, met=a["within"], note=note)
    return rows


def write_summary(cfg: SuiteConfig, reports: dict[str, Report], argv: list[str], elapsed: float) -> str:
    """summary.json + summary.md (targets, then each benchmark's table); returns the markdown."""
    rows = targets(reports)
    command = "python -m benchmarks.run " + " ".join(argv)
    busy_end = None if cfg.quick else cpu_busy_fraction()
    samples = [b for b in (cfg.machine.get("cpu_busy"), busy_end) if b is not None]
    busy = max(samples, default=0.0) > BUSY_WARNING and not cfg.quick
    md = [
        f"Command: `{command.strip()}`  ",
        f"Machine: {describe_machine(cfg.machine)}, after it "
        f"{'?' if busy_end is None else f'{busy_end:.0%}'}  ",
        f"Commit: {cfg.machine.get('git')}; total time {elapsed / 60:.1f} min"
        + (" (**--quick: tiny inputs, numbers meaningless**)" if cfg.quick else ""),
        *(
            [
                "",
                f"**Warning: other processes kept {max(samples):.0%} of the CPU busy around this run: they "
                "competed for the cores and the timings (and ratios) are unreliable.**",
            ]
            if busy
            else []
        ),
        "",
        "### Targets (issue 6), measured in this run",
        "",
        markdown_table(
            rows,
            [
                Column("target", "target"),
                Column("where", "case"),
                Column("measured", "measured", "{:.2f}"),
                Column("goal", "goal", "{:.2f}"),
                Column("met", "met"),
                Column("note", "note"),
            ],
        ),
    ]
    for name, rep in reports.items():
        md += ["", f"### {name}", "", rep.markdown.strip()]
    text = "\n".join(md) + "\n"
    cfg.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(cfg.out / "summary.md", "# hrseg benchmarks\n\n" + text)
    payload = {
        "schema": 1,
        "benchmark": "summary",
        "command": command.strip(),
        "machine": cfg.machine,
        "load_avg_end": load_average(),
        "cpu_busy_end": busy_end,
        "elapsed_s": elapsed,
        "quick": cfg.quick,
        "targets": rows,
        "benchmarks": sorted(reports),
        "budget_s": cfg.budget_s,
    }
    atomic_write_text(cfg.out / "summary.json", json.dumps(payload, indent=2, default=str) + "\n")
    return text


def update_readme(summary_md: str, readme: Path = README) -> bool:
    """Replace the README's latest-results block (between the bench:latest markers) with this run."""
    if not readme.is_file():
        return False
    text = readme.read_text(encoding="utf-8")
    if README_BEGIN not in text or README_END not in text:
        return False
    head, rest = text.split(README_BEGIN, 1)
    _, tail = rest.split(README_END, 1)
    atomic_write_text(readme, f"{head}{README_BEGIN}\n{summary_md.strip()}\n{README_END}{tail}")
    return True


# --------------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    """Run the selected benchmarks; missed targets are reported, not enforced (exit code 0)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    only = [b.strip() for b in args.only.split(",") if b.strip()]
    unknown = set(only) - set(BENCHMARKS)
    if unknown:
        print(f"unknown benchmark(s) {sorted(unknown)}; choose from {','.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("--device cuda: no CUDA device available", file=sys.stderr)
        return 2
    own_cache = args.cache is None
    cache = Path(tempfile.mkdtemp(prefix="hrseg-bench-")) if own_cache else args.cache
    cache.mkdir(parents=True, exist_ok=True)
    cfg = build_config(args, cache)
    threads_before = torch.get_num_threads()
    setup_torch(cfg.threads, cfg.device)
    cfg.machine = machine_info(cfg.device, cfg.threads)
    busy = cfg.machine.get("cpu_busy")
    if busy is not None and busy > BUSY_WARNING and not cfg.quick:
        log(
            f"WARNING: other processes keep {busy:.0%} of the CPU busy: timings will be noisy; with more "
            "busy threads than cores, OpenMP barriers stall (export OMP_WAIT_POLICY=PASSIVE to limit it)"
        )
    start = time.perf_counter()
    cfg.started = time.monotonic()
    reports: dict[str, Report] = {}
    try:
        from benchmarks import data_pipeline, flops, forward, train_step, tta

        peak = None
        if "flops" in only:  # the machine's peak first, before anything else warms it up
            log("matmul peak")
            peak = flops.matmul_peak(cfg.matmul_sizes, cfg.matmul_iters, cfg.device, flops.peak_dtype(cfg))
        # forward at the smaller sizes first (the headline ratios), then the cheaper benchmarks, then the
        # slow >= 1024x2048 forward cases: if the soft time budget runs out, only those are skipped
        small = [s for s in cfg.sizes if s[0] * s[1] < 1024 * 2048]
        big = [s for s in cfg.sizes if s[0] * s[1] >= 1024 * 2048]
        forward_rows = forward.measure(cfg, small) if "forward" in only else []
        if "train" in only:
            reports["train"] = train_step.run(cfg)
        if "data" in only:
            reports["data"] = data_pipeline.run(cfg, reports.get("train"))
        if "slide" in only:
            reports["slide"] = tta.run(cfg)
        if "forward" in only:
            reports["forward"] = forward.run(cfg, forward_rows + forward.measure(cfg, big))
        if "flops" in only:
            reports["flops"] = flops.run(cfg, reports.get("forward"), peak)
        if "investigate" in only:
            from benchmarks import investigate

            reports["investigate"] = investigate.run(cfg)
        if "backends" in only:
            reports["backends"] = _run_backends(cfg)
        for rep in reports.values():
            json_path, _ = rep.write(cfg.out)
            log(f"wrote {json_path}")
        if "forward" in reports:
            title = f"forward, batch 1: {describe_machine(cfg.machine).split(';')[0]}"
            png = plot_forward(
                reports["forward"].results, cfg.out / "forward.png", title, FAST_OVER_REFERENCE_TARGET
            )
            if png is not None:
                log(f"wrote {png}")
        summary = write_summary(cfg, reports, argv, time.perf_counter() - start)
        log(f"wrote {cfg.out / 'summary.md'} ({(time.perf_counter() - start) / 60:.1f} min)")
        if args.update_readme:
            log("README updated" if update_readme(summary) else "README markers not found; not updated")
    finally:
        torch.set_num_threads(threads_before)  # callers in the same process (tests) keep their setting
        if own_cache:
            shutil.rmtree(cache, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
