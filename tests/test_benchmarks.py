"""Smoke test of the benchmark suite: ``--quick`` on tiny inputs, JSON schema, fast path == eager.

No timing assertions: timings on shared CI machines mean nothing; what must hold is that every benchmark runs,
writes well-formed results, and that hrseg's fast path (and the timm reference with equal weights) computes
the same logits as the plain model.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("timm")

from benchmarks import run as bench_run
from benchmarks.common import PAYLOAD_KEYS, markdown_table, time_callable

BENCHES = ("forward", "train", "data", "slide", "flops")


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One quick run of every default benchmark (ONNX export left out: it alone takes ~10 s)."""
    out = tmp_path_factory.mktemp("bench")
    argv = ["--quick", "--out", str(out), "--only", ",".join(BENCHES), "--paths", "eager,fast,reference"]
    assert bench_run.main(argv) == 0
    return out


def _load(out: Path, name: str) -> dict:
    return json.loads((out / f"{name}.json").read_text())


def test_every_benchmark_writes_json_and_markdown(quick_results: Path) -> None:
    for name in BENCHES:
        payload = _load(quick_results, name)
        assert set(PAYLOAD_KEYS) <= set(payload), name
        assert payload["benchmark"] == name
        assert payload["machine"]["cores"] >= 1
        assert payload["results"], name
        assert not [r for r in payload["results"] if "error" in r], name
        assert (quick_results / f"{name}.md").read_text().count("|") > 4
    summary = json.loads((quick_results / "summary.json").read_text())
    assert summary["quick"] is True
    assert {"target", "measured", "goal", "met"} <= set(summary["targets"][0])


def test_forward_schema_and_parity(quick_results: Path) -> None:
    payload = _load(quick_results, "forward")
    paths = {r["path"]: r for r in payload["results"]}
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
    # the fast path (BN folded, channels_last) and the timm reference (same weights) equal plain eager
    assert paths["fast"]["max_abs_diff_vs_eager"] <= 1e-4
    assert paths["reference"]["max_abs_diff_vs_eager"] <= 1e-4
    (ratios,) = payload["ratios"]
    assert ratios["fast_equal_eager"] is True and ratios["reference_equal_eager"] is True
    assert ratios["fast_over_reference"] > 0


def test_other_benchmarks_schema(quick_results: Path) -> None:
    train = _load(quick_results, "train")
    assert {r["path"] for r in train["results"]} == {"hrseg", "hrseg_cl", "reference"}
    assert all(r["samples_per_s"] > 0 for r in train["results"])
    data = _load(quick_results, "data")
    assert data["results"][0]["loader_over_train"] > 0
    assert data["per_worker"]["samples_per_s"] > 0
    slide = _load(quick_results, "slide")
    assert slide["results"][0]["protocol"] == "whole"
    flops = _load(quick_results, "flops")
    assert flops["peak"]["peak_gflops"] > 0
    assert all(r["gflop"] > 0 for r in flops["results"])


def test_timing_and_table_helpers() -> None:
    calls = []
    t = time_callable(lambda: calls.append(1), warmup=2, iters=3)
    assert len(calls) == 5 and len(t.times_s) == 3 and t.min_s <= t.median_s
    table = markdown_table(
        [{"a": 1.23456, "b": None}], [bench_run.Column("a", "A"), bench_run.Column("b", "B")]
    )
    assert table.splitlines()[2] == "| 1.23 | - |"


def test_unknown_benchmark_is_rejected(tmp_path: Path) -> None:
    assert bench_run.main(["--quick", "--only", "nope", "--out", str(tmp_path)]) == 2
