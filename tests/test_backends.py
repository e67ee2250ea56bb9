"""Runtime backends (hrseg.deploy.backends, hrseg.inference.runtime, hrseg.export): same label maps as torch,
the export cache, int8, OpenVINO IR.

Agreement thresholds: fp32 backends must give the torch label map exactly except at ties (pixels whose top-2
logits are within 1e-3 of each other). int8 is checked on ``trained_checkpoint`` (60 demo steps), whose int8
exports agreed with fp32 on 99.3 % (ONNX Runtime) and 99.4 % (OpenVINO) of the pixels here, against 33 % for a
model that always answers the majority class and 88-89 % on the two-step ``tiny_checkpoint`` (nearly flat
logits): the 95 % floor fails a broken quantization.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from hrseg.deploy import Segmenter
from hrseg.deploy import backends as B
from hrseg.export import accuracy_report, cache
from hrseg.inference import runtime
from hrseg.metadata import LabelSet

openvino_missing = pytest.mark.skipif(not B._installed("openvino"), reason="openvino not installed")

INT8_MIN_AGREEMENT = 0.95  # on trained_checkpoint, see the module docstring
# export example size for the CLI exports (default 256x256): the graphs stay dynamic, checked at another size
SMALL_EXAMPLE = ["--size", "64x96"]


@pytest.fixture(scope="module")
def backend_cache(shared_tmp_dir: Path) -> Path:
    """One export cache for the module (and all xdist workers): every backend test reuses its exports."""
    return shared_tmp_dir / "backend-cache"


def _scenes(n: int, size: tuple[int, int] = (96, 160), seed: int = 7) -> list[np.ndarray]:
    from hrseg.data.scenes import generate_scene

    rng = np.random.default_rng(seed)
    return [generate_scene(rng, size)[0] for _ in range(n)]


def _non_tie(seg: Segmenter, image: np.ndarray, margin: float = 1e-3) -> np.ndarray:
    """Pixels whose two largest torch logits differ by more than ``margin`` (an argmax that cannot flip)."""
    probs = seg._run(image, "logits")[0]
    top2 = probs.topk(2, dim=0).values
    return ((top2[0] - top2[1]) > margin).cpu().numpy()


# --- fast checks -----------------------------------------------------------------------------------------


def test_auto_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    """auto: torch on CUDA; OpenVINO on x86 CPUs when installed, else ONNX Runtime, else torch."""
    monkeypatch.setattr(B.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(B, "_installed", lambda m: True)
    assert B.resolve_backend("auto", "cpu") == "openvino"
    assert B.resolve_backend("auto", "cuda") == "torch"
    monkeypatch.setattr(B, "_installed", lambda m: m == "onnxruntime")
    assert B.resolve_backend("auto", "cpu") == "onnxruntime"
    with pytest.raises(ValueError, match="not installed"):
        B.resolve_backend("openvino", "cpu")
    monkeypatch.setattr(B, "_installed", lambda m: False)
    assert B.resolve_backend("auto", "cpu") == "torch"
    monkeypatch.setattr(B.platform, "machine", lambda: "aarch64")
    monkeypatch.setattr(B, "_installed", lambda m: True)
    assert B.resolve_backend("auto", "cpu") == "onnxruntime"
    with pytest.raises(ValueError, match="backend must be one of"):
        B.resolve_backend("tensorflow", "cpu")


def test_export_cache_is_reused_and_invalidated_when_the_weights_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One export per (weights, backend, precision); changed weights export again into a new folder."""
    import hrseg
    from hrseg.metadata import ModelMeta

    calls: list[Path] = []

    def fake_export(model: torch.nn.Module, format: str, out: Path, meta: ModelMeta) -> object:
        calls.append(Path(out))
        Path(out).write_bytes(b"onnx")
        return type("R", (), {"passed": True, "max_abs_diff": 0.0, "tolerance": 1.0})()

    monkeypatch.setattr(cache, "export", fake_export)
    model = hrseg.build_model("hrnetv2_w18_small_v1", num_classes=19).eval()
    meta = ModelMeta(model="hrnetv2_w18_small_v1", labels=LabelSet.generic(19))
    first = cache.export_cached(model, meta, "onnx", cache_dir=tmp_path)
    again = cache.export_cached(model, meta, "onnx", cache_dir=tmp_path)
    assert first == again and len(calls) == 1
    assert not list(first.parent.glob(".tmp-*")), "temporary export folder left behind"
    with torch.no_grad():
        model.last_layer[-1].bias.add_(0.5)
    changed = cache.export_cached(model, meta, "onnx", cache_dir=tmp_path)
    assert len(calls) == 2 and changed != first and changed.parent != first.parent
    monkeypatch.setenv("HRSEG_CACHE", str(tmp_path / "env"))
    assert cache.default_cache_dir() == tmp_path / "env"


def test_accuracy_report_counts_agreement_and_miou_drop() -> None:
    """Pixel agreement and the mIoU of each model against ground truth (or the reference's label maps)."""
    gt = np.array([[0, 0, 1, 1], [2, 2, 255, 1]])
    ref = np.array([[0, 0, 1, 1], [2, 2, 2, 1]])
    cand = np.array([[0, 1, 1, 1], [2, 2, 2, 1]])
    maps = {"ref": ref, "cand": cand}
    report = accuracy_report(lambda k: maps["ref"], lambda k: maps["cand"], ["x"], [gt], num_classes=3)
    assert report.agreement == pytest.approx(7 / 8)
    assert report.miou_reference == pytest.approx(1.0)
    assert 0 < report.miou < 1 and report.drop == pytest.approx(1.0 - report.miou)
    vs_ref = accuracy_report(lambda k: ref, lambda k: cand, ["x"], None, num_classes=3)
    assert vs_ref.against == "fp32 label maps" and vs_ref.miou_reference == 1.0


@openvino_missing
def test_reduced_float_precision_is_refused_where_the_cpu_lacks_it(tiny_checkpoint: Path) -> None:
    """bf16 / fp16 run only where OpenVINO reports the capability; torch needs CUDA for them."""
    with pytest.raises(ValueError, match="CUDA"):
        Segmenter.from_checkpoint(tiny_checkpoint, precision="bf16")
    missing = [p for p in ("bf16", "fp16") if p not in runtime.openvino_precisions()]
    if not missing:
        pytest.skip("this CPU runs bf16 and fp16 in OpenVINO")
    with pytest.raises(ValueError, match="does not run"):
        runtime.openvino_runner("unused.xml", missing[0])


# --- end to end (real exports) -------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["onnxruntime", pytest.param("openvino", marks=openvino_missing)])
def test_fp32_backends_give_the_torch_label_map(
    tiny_checkpoint: Path, backend_cache: Path, backend: str
) -> None:
    """Same argmax as the torch fast path except at ties, whole image and sliding window + flip."""
    for options in ({}, {"protocol": {"mode": "slide", "window": (64, 96), "flip": True}}):
        ref = Segmenter.from_checkpoint(tiny_checkpoint, **options)
        seg = Segmenter.from_checkpoint(tiny_checkpoint, backend=backend, cache_dir=backend_cache, **options)
        assert seg.backend == backend and seg.model.path.is_relative_to(backend_cache)
        for image in _scenes(3):
            want, got = ref.predict(image), seg.predict(image)
            keep = _non_tie(ref, image) if not options else np.ones_like(want, dtype=bool)
            assert (want == got)[keep].mean() >= (1.0 if not options else 0.999)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["onnxruntime", pytest.param("openvino", marks=openvino_missing)])
def test_int8_backends_agree_above_the_stated_threshold(
    trained_checkpoint: Path, backend_cache: Path, backend: str
) -> None:
    """int8 (static quantization, calibrated on generated scenes) keeps INT8_MIN_AGREEMENT of the pixels."""
    ref = Segmenter.from_checkpoint(trained_checkpoint)
    seg = Segmenter.from_checkpoint(
        trained_checkpoint,
        backend=backend,
        precision="int8",
        cache_dir=backend_cache,
        calib_images=_scenes(4),
    )
    assert seg.precision == "int8" and "int8" in seg.model.path.name
    report = accuracy_report(ref.predict, seg.predict, _scenes(4, seed=3), None, 19)
    assert report.agreement >= INT8_MIN_AGREEMENT, report.summary()


@pytest.mark.slow
@openvino_missing
def test_int8_export_calibrates_on_a_folder_and_reports_its_accuracy_delta(
    tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``hrseg export --precision int8 --calib-data DIR``: mIoU vs fp32 reported; refused above --max-drop."""
    from hrseg.commands import main

    calib = tmp_path / "calib"
    calib.mkdir()
    for i, img in enumerate(_scenes(2, size=(64, 96), seed=11)):
        Image.fromarray(img).save(calib / f"scene_{i}.png")
    out = tmp_path / "model-int8.xml"
    argv = [
        "export",
        "--ckpt_path",
        str(tiny_checkpoint),
        "--format",
        "openvino",
        "--precision",
        "int8",
        *SMALL_EXAMPLE,
    ]
    argv += ["--calib-data", str(calib), "--num-calib", "2", "--val-data", "demo", "--num-val", "2"]
    # a drop above -1 is always "too much": refused and removed, or kept loudly with --warn-only
    assert main([*argv, "--output", str(out), "--max-drop", "-1"]) == 1
    captured = capsys.readouterr()
    assert (
        "int8: mIoU" in captured.out
        and "pixel agreement" in captured.out
        and "against ground truth" in captured.out
    )
    assert "refused" in captured.err and not out.exists()
    assert main([*argv, "--output", str(out), "--max-drop", "-1", "--warn-only"]) == 0
    assert "WARNING" in capsys.readouterr().err and out.is_file() and out.with_suffix(".bin").is_file()
    seg = Segmenter.from_checkpoint(out)
    assert seg.predict(_scenes(1)[0]).shape == (96, 160)


@pytest.mark.slow
@openvino_missing
def test_openvino_ir_export_is_parity_checked_and_loads_as_a_checkpoint(
    tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``hrseg export --format openvino``: checked at another size; ``Segmenter.from_checkpoint("x.xml")``."""
    from hrseg.commands import main

    out = tmp_path / "model.xml"
    argv = [
        "export",
        "--ckpt_path",
        str(tiny_checkpoint),
        "--format",
        "openvino",
        "--output",
        str(out),
        *SMALL_EXAMPLE,
    ]
    assert main(argv) == 0
    assert "openvino:" in capsys.readouterr().out
    ref = Segmenter.from_checkpoint(tiny_checkpoint)
    seg = Segmenter.from_checkpoint(out)
    assert seg.meta == ref.meta and seg.backend == "openvino"
    image = _scenes(1)[0]
    keep = _non_tie(ref, image)
    assert (ref.predict(image) == seg.predict(image))[keep].all()


@pytest.mark.slow
@openvino_missing
def test_predict_backend_openvino_writes_the_same_files_as_torch(
    tiny_checkpoint: Path, demo_images_dir: Path, backend_cache: Path, tmp_path: Path
) -> None:
    """``hrseg predict --backend openvino`` writes the torch backend's files, with the same label maps."""
    from hrseg.commands import main

    common = [
        "predict",
        "--ckpt_path",
        str(tiny_checkpoint),
        "--input",
        str(demo_images_dir),
        "--no-progress",
    ]
    torch_out, ov_out = tmp_path / "torch", tmp_path / "openvino"
    assert main([*common, "--output", str(torch_out)]) == 0
    assert (
        main([*common, "--output", str(ov_out), "--backend", "openvino", "--cache-dir", str(backend_cache)])
        == 0
    )
    names = sorted(p.name for p in torch_out.iterdir())
    assert names == sorted(p.name for p in ov_out.iterdir()) and names
    for name in names:
        if name.endswith("_trainIds.png"):
            a, b = np.asarray(Image.open(torch_out / name)), np.asarray(Image.open(ov_out / name))
            assert a.shape == b.shape and (a == b).mean() >= 0.999, name


def test_benchmark_picks_the_best_path_per_precision_against_plain_ort() -> None:
    """benchmarks.backends: best fp32 / reduced path per case and its target check."""
    from benchmarks.backends import summarize

    case = {"variant": "w18", "input": "512x1024"}
    rows = [
        {**case, "path": "plain_ort", "precision": "fp32", "s_per_img": 1.0, "vs_baseline": 1.0},
        {**case, "path": "torch", "precision": "fp32", "s_per_img": 1.2, "vs_baseline": 1 / 1.2},
        {**case, "path": "openvino", "precision": "fp32", "s_per_img": 0.9, "vs_baseline": 1 / 0.9},
        {**case, "path": "openvino", "precision": "int8", "s_per_img": 0.5, "vs_baseline": 2.0},
        {**case, "path": "onnxruntime", "precision": "int8", "error": "boom"},
    ]
    best = {r["group"]: r for r in summarize(rows)}
    assert best["fp32"]["best"] == "openvino fp32" and best["fp32"]["met"]
    assert best["reduced"]["best"] == "openvino int8" and best["reduced"]["vs_baseline"] == 2.0


def test_onnx_files_use_the_gpu_providers_on_a_cuda_device(
    monkeypatch: pytest.MonkeyPatch, tiny_checkpoint: Path, backend_cache: Path
) -> None:
    """TensorRT > CUDA > CPU on a CUDA device (those installed; a warning when none is), else the CPU."""
    import onnxruntime as ort

    assert runtime.onnxruntime_providers("cpu") == ["CPUExecutionProvider"]
    with pytest.warns(UserWarning, match="no CUDA provider"):
        monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
        assert runtime.onnxruntime_providers("cuda") == ["CPUExecutionProvider"]
    monkeypatch.setattr(
        ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    assert runtime.onnxruntime_providers("cuda:1") == [
        ("CUDAExecutionProvider", {"device_id": 1}),
        "CPUExecutionProvider",
    ]
    # an exported .onnx opened for a CUDA device asks for them (the session itself is faked: no GPU here)
    seen: list[Any] = []

    class FakeSession:
        def __init__(self, path: str, opts: Any, providers: list[Any]) -> None:
            seen.append(providers)

        def get_inputs(self) -> list[Any]:
            return [type("Input", (), {"name": "image"})()]

    # the module's cached ONNX export of tiny_checkpoint (test_fp32_backends_give_the_torch_label_map's file)
    onnx = Segmenter.from_checkpoint(tiny_checkpoint, backend="onnxruntime", cache_dir=backend_cache)
    model, path = Segmenter.from_checkpoint(tiny_checkpoint).model, onnx.model.path
    assert path.suffix == ".onnx" and path.is_file()
    monkeypatch.setattr(ort, "InferenceSession", FakeSession)
    runtime.load_exported(path, model, device="cuda")
    assert seen == [[("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"]]


def test_runtimes_load_lazily_and_openvino_without_network_calls_or_forks(tmp_path: Path) -> None:
    """The runtimes are imported lazily: ``import hrseg.deploy`` (or ``hrseg.inference``) pulls in neither
    OpenVINO nor ORT. And ``import openvino`` sends usage telemetry from a forked process; hrseg imports it
    with that off.

    One fresh interpreter checks both (one start-up and torch import instead of two).
    """
    code = f"""
import sys
events = []
sys.addaudithook(lambda e, a: events.append(e) if e in ("os.fork", "socket.connect", "socket.getaddrinfo",
                                                          "urllib.Request") else None)
import hrseg.inference, hrseg.deploy, hrseg.inference.runtime, hrseg.export
print("RUNTIMES", [m for m in ('openvino', 'onnxruntime') if m in sys.modules])
if not hrseg.deploy.backends._installed("openvino"):
    sys.exit(0)
import torch, hrseg
from hrseg.metadata import LabelSet, ModelMeta
from hrseg.deploy.backends import build_backend
model = hrseg.build_model("hrnetv2_w18_small_v1", num_classes=3).eval()
meta = ModelMeta("hrnetv2_w18_small_v1", LabelSet.generic(3))
net = build_backend(model, meta, "openvino", cache_dir={str(tmp_path)!r})
net(torch.randn(1, 3, 32, 48))
assert "openvino" in sys.modules
print("EVENTS", sorted(set(events)))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "RUNTIMES []" in out.stdout, out.stdout
    if B._installed("openvino"):
        assert "EVENTS []" in out.stdout, out.stdout
