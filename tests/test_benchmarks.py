"""Smoke test of the benchmark suite: ``--quick`` on tiny inputs, JSON schema, fast path == eager.

No timing assertions: timings on shared CI machines mean nothing; what must hold is that every benchmark runs,
writes well-formed results, and that hrseg's fast path (and the timm reference with equal weights) computes
the same logits as the plain model.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("timm")

from benchmarks import run as bench_run
from benchmarks.common import PAYLOAD_KEYS, markdown_table, time_callable

BENCHES = ("forward", "train", "data", "slide", "flops")


def _load(out: Path, name: str) -> dict:
    return json.loads((out / f"{name}.json").read_text())


def _run_suite(argv: list[str]) -> None:
    """``python -m benchmarks.run ARGV`` in a fresh process, as a user runs it.

    In-process, the suite would inherit whatever earlier tests loaded into this pytest worker (OpenVINO's and
    ONNX Runtime's thread pools), and its forked DataLoader workers crashed the xdist worker once in CI.
    """
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root)}
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", *argv], cwd=root, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_quick_suite(tmp_path: Path) -> None:
    """One quick run of every default benchmark (ONNX export left out: it alone takes ~10 s).

    A single test on purpose: under pytest-xdist a module-scoped fixture would run once per worker.
    """
    argv = ["--quick", "--out", str(tmp_path), "--only", ",".join(BENCHES), "--paths", "eager,fast,reference"]
    _run_suite(argv)

    for name in BENCHES:
        payload = _load(tmp_path, name)
        assert set(PAYLOAD_KEYS) <= set(payload), name
        assert payload["benchmark"] == name
        assert payload["machine"]["cores"] >= 1
        assert payload["results"], name
        assert not [r for r in payload["results"] if "error" in r], name
        assert (tmp_path / f"{name}.md").read_text().count("|") > 4
    assert (tmp_path / "forward.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # the ratio plot
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["quick"] is True
    assert {"target", "measured", "goal", "met"} <= set(summary["targets"][0])

    # forward: schema and parity. The fast path (BN folded, channels_last) and the timm reference (same
    # weights) must compute the plain model's logits.
    forward = _load(tmp_path, "forward")
    paths = {r["path"]: r for r in forward["results"]}
    assert set(paths) == {"eager", "fast", "reference"}
    for row in paths.values():
        for key in (
            "median_s",
            "img_per_s",
            "times_s",
            "peak_mem_mb",
            "max_abs_diff_vs_eager",
            "output_shape",
        ):
            assert key in row, key
        assert row["img_per_s"] > 0
    assert paths["fast"]["max_abs_diff_vs_eager"] <= 1e-4
    assert paths["reference"]["max_abs_diff_vs_eager"] <= 1e-4
    (ratios,) = forward["ratios"]
    assert ratios["fast_equal_eager"] is True and ratios["reference_equal_eager"] is True
    assert ratios["fast_over_reference"] > 0

    train = _load(tmp_path, "train")
    assert {r["path"] for r in train["results"]} == {"hrseg", "hrseg_cl", "reference"}
    assert all(r["samples_per_s"] > 0 for r in train["results"])
    data = _load(tmp_path, "data")
    assert data["results"][0]["loader_over_train"] > 0
    assert data["per_worker"]["samples_per_s"] > 0
    slide = _load(tmp_path, "slide")
    assert slide["results"][0]["protocol"] == "whole"
    flops = _load(tmp_path, "flops")
    assert flops["peak"]["peak_gflops"] > 0
    assert all(r["gflop"] > 0 for r in flops["results"])


def test_quick_ocr_variant_against_plain(tmp_path: Path) -> None:
    """HRNet-OCR follows the variant selection: no timm case, both outputs trained, OCR / plain rows."""
    variants = "w18_small_v1,w18_small_v1_ocr"
    argv = ["--quick", "--out", str(tmp_path), "--only", "forward,train,flops", "--paths", "eager,fast"]
    _run_suite([*argv, "--variants", variants, "--train-variants", variants])

    forward = _load(tmp_path, "forward")
    assert not [r for r in forward["results"] if "error" in r]
    ocr = {r["path"]: r for r in forward["results"] if r["variant"] == "w18_small_v1_ocr"}
    assert set(ocr) == {"eager", "fast"}
    assert ocr["fast"]["max_abs_diff_vs_eager"] <= 1e-4  # BN folding covers the OCR block
    assert {(r["plain"], r["path"]) for r in forward["ocr_over_plain"]} == {
        ("w18_small_v1", "eager"),
        ("w18_small_v1", "fast"),
    }
    train = _load(tmp_path, "train")
    assert not [r for r in train["results"] if "error" in r]
    ocr_train = {r["path"] for r in train["results"] if r["variant"] == "w18_small_v1_ocr"}
    assert ocr_train == {"hrseg", "hrseg_cl"}  # no timm reference for OCR
    assert len(train["ocr_over_plain"]) == 2
    gflop = {(r["variant"], r["path"]): r["gflop"] for r in _load(tmp_path, "flops")["results"]}
    assert gflop[("w18_small_v1_ocr", "eager")] > gflop[("w18_small_v1", "eager")]


def test_cases_run_in_their_own_process_by_function_name(tmp_path: Path) -> None:
    """``--isolate`` sends each case to ``python -m benchmarks.worker MODULE:FUNCTION``: the suite hands the
    case function over, so the plumbing in benchmarks.common needs no case module (no import circle)."""
    from benchmarks.common import case_name, resolve_case
    from benchmarks.forward import forward_case
    from benchmarks.train_step import train_case

    assert case_name(forward_case) == "benchmarks.forward:forward_case"
    assert resolve_case(case_name(train_case)) is train_case
    with pytest.raises(ValueError, match="module-level function"):
        case_name(lambda spec: spec)
    with pytest.raises(ValueError, match=r"benchmarks\.<module>:<function>"):
        resolve_case("os:system")

    _run_suite(["--quick", "--isolate", "--out", str(tmp_path), "--only", "forward", "--paths", "eager"])
    rows = _load(tmp_path, "forward")["results"]
    assert rows and not [r for r in rows if "error" in r]
    assert all(r["img_per_s"] > 0 for r in rows)


def test_ocr_flops_match_the_documented_count() -> None:
    """W48+OCR at 1024x2048: 1297.9 GMACs (docs/reference/ocr.md), counted on the meta device."""
    from benchmarks.flops import DOCUMENTED_GMAC, count_flops

    gmac = count_flops("w48_ocr", (1024, 2048), 19, "nearest") / 2e9
    assert abs(gmac - DOCUMENTED_GMAC[("w48_ocr", "1024x2048")]) < 0.05


def test_timing_and_table_helpers() -> None:
    calls = []
    t = time_callable(lambda: calls.append(1), warmup=2, iters=3)
    assert len(calls) == 5 and len(t.times_s) == 3 and t.min_s <= t.median_s
    table = markdown_table(
        [{"a": 1.23456, "b": None}], [bench_run.Column("a", "A"), bench_run.Column("b", "B")]
    )
    assert table.splitlines()[2] == "| 1.23 | - |"


def test_warmup_lasts_its_minimum_and_hook_runs_before_timing() -> None:
    calls: list[str] = []

    def call() -> None:
        time.sleep(0.005)
        calls.append("call")

    t = time_callable(
        call,
        warmup=1,
        iters=2,
        min_warmup_s=0.02,
        after_warmup=lambda: calls.append("hook"),
    )
    hook = calls.index("hook")
    assert hook >= 4 and t.warmup == hook  # 20 ms of 5 ms calls, all before the hook
    assert calls[hook + 1 :] == ["call", "call"] and len(t.times_s) == 2


def test_cuda_config_needs_no_gpu_to_build(tmp_path: Path) -> None:
    args = bench_run.parse_args(["--device", "cuda", "--train-batch", "4"])
    cfg = bench_run.build_config(args, tmp_path)
    assert cfg.amp == "bf16" and cfg.tolerance == bench_run.BF16_TOLERANCE
    assert cfg.train_batch == 4 and cfg.warmup >= 3 and cfg.iters >= 10
    fp32 = bench_run.build_config(bench_run.parse_args(["--device", "cuda", "--precision", "fp32"]), tmp_path)
    assert fp32.amp is None and fp32.tolerance == 1e-4


def _gpu_check_benchmark_commands() -> dict[str, list[str]]:
    """The ``benchmarks.run`` argument lists of ``benchmarks/gpu_check.sh``'s GPU branch, by step name."""
    script = (Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.sh").read_text()
    start = script.index("if [[ $DEVICE == cuda ]]; then\n    BENCH=")
    gpu_branch = script[start : script.index("\nelse\n", start)]
    text = gpu_branch.replace("\\\n", " ")
    bench = shlex.split(re.search(r"BENCH=\((.*?)\)", text).group(1))
    commands = {}
    for name, args in re.findall(r"^\s*run (\w+) \d+ \"\$PYTHON\" -m benchmarks\.run (.*)$", text, re.M):
        argv = shlex.split(args.replace('"${BENCH[@]}"', " ".join(bench)).replace("$RECORD", "/tmp/record"))
        commands[name] = argv
    return commands


def test_gpu_check_benchmark_commands_parse_to_the_promised_cases(tmp_path: Path) -> None:
    """The script's GPU steps cannot run here: their options must at least build the cases it promises."""
    commands = _gpu_check_benchmark_commands()
    assert set(commands) == {"inference", "train"}
    train = bench_run.build_config(bench_run.parse_args(commands["train"]), tmp_path)
    assert train.device == "cuda" and train.amp == "bf16" and not train.isolate
    assert train.train_variants == ("w48",) and train.train_batch == 8 and train.train_size == (512, 1024)
    assert train.train_paths == ("hrseg_cl", "compile_cl") and train.compile_backend == "inductor"
    inference = bench_run.build_config(bench_run.parse_args(commands["inference"]), tmp_path)
    assert inference.amp == "bf16" and inference.variants == ("w48", "w48_ocr")
    assert inference.sizes == ((1024, 2048),) and inference.paths == ("eager", "fast")


def test_compiled_over_eager_pairs_each_compiled_path_with_its_memory_format() -> None:
    from benchmarks.train_step import train_ratios

    rows = [
        {"variant": "w48", "path": "hrseg_cl", "samples_per_s": 20.0},
        {"variant": "w48", "path": "compile_cl", "samples_per_s": 30.0},
        {"variant": "w18", "path": "hrseg", "samples_per_s": 10.0},
        {"variant": "w18", "path": "compile", "error": "timed out"},
    ]
    by_variant = {r["variant"]: r for r in train_ratios(rows)}
    assert by_variant["w48"]["compiled_path"] == "compile_cl / hrseg_cl"
    assert by_variant["w48"]["compiled_over_eager"] == pytest.approx(1.5)
    assert by_variant["w18"]["compiled_over_eager"] is None  # a failed case gives no ratio


def test_unknown_benchmark_is_rejected(tmp_path: Path) -> None:
    assert bench_run.main(["--quick", "--only", "nope", "--out", str(tmp_path)]) == 2


def test_backends_benchmark_runs_in_the_suite_with_its_targets(tmp_path: Path) -> None:
    """``benchmarks.run --only backends``: every path timed in one run, the issue-14 targets listed.

    In its own process like every suite run here (the suite sets threads and forks loader workers).
    """
    _run_suite(["--quick", "--only", "backends", "--out", str(tmp_path)])
    report = _load(tmp_path, "backends")
    paths = {(r["path"], r["precision"]) for r in report["results"] if "s_per_img" in r}
    assert {
        ("plain_ort", "fp32"),
        ("torch", "fp32"),
        ("onnxruntime", "fp32"),
        ("onnxruntime", "int8"),
    } <= paths
    assert not [r for r in report["results"] if "error" in r]
    summary = json.loads((tmp_path / "summary.json").read_text())
    names = {t["target"] for t in summary["targets"]}
    assert {
        "hrseg best fp32 path / plain ONNX Runtime fp32",
        "hrseg best reduced path / plain ONNX Runtime fp32",
    } <= names
