"""``hrseg export``: every format is loaded back and matches eager at a new input size."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from hrseg.commands.export import main
from hrseg.data.scenes import generate_scene
from hrseg.deploy import Segmenter
from hrseg.export import ExportResult, ExportWrapper, default_check_size, export
from hrseg.inference import load_checkpoint

EXPORT_SIZE = (64, 96)


class _Exports(dict):
    """Exports made on first use, once per test session and format, shared between xdist workers.

    Exporting takes a while on 2 cores; one lock per format lets two workers export two formats at once.
    """

    def __init__(self, checkpoint: Path, root: Path) -> None:
        super().__init__()
        self.checkpoint = checkpoint
        self.root = root

    def __missing__(self, fmt: str) -> ExportResult:
        from filelock import FileLock

        record = self.root / f"{fmt}.pkl"
        with FileLock(str(self.root / f"{fmt}.lock")):
            if not record.is_file():
                target = self.root / {"onnx": "m.onnx", "pt2": "m.pt2", "safetensors": "bundle"}[fmt]
                result = export(self.checkpoint, fmt, target, height=EXPORT_SIZE[0], width=EXPORT_SIZE[1])  # type: ignore[arg-type]
                record.write_bytes(pickle.dumps(result))
        self[fmt] = pickle.loads(record.read_bytes())
        return self[fmt]


@pytest.fixture(scope="session")
def exports(tiny_checkpoint: Path, shared_tmp_dir: Path) -> dict[str, ExportResult]:
    """Each format exported at 64x96 (batch 2) and checked at another size (batch 1), on first use."""
    root = shared_tmp_dir / "exports"
    root.mkdir(parents=True, exist_ok=True)
    return _Exports(tiny_checkpoint, root)


@pytest.mark.parametrize("fmt", ["onnx", "pt2", "safetensors"])
def test_round_trip_within_tolerance(exports: dict[str, ExportResult], fmt: str) -> None:
    result = exports[fmt]
    assert result.passed, result.summary()
    assert result.check_shape[0] == 1 and result.check_shape[2:] != EXPORT_SIZE  # not the export example
    assert result.max_abs_diff <= 1e-4 * max(1.0, result.logit_range)
    assert all(f.is_file() for f in result.files)
    print(result.summary())


def test_safetensors_is_exact(exports: dict[str, ExportResult]) -> None:
    assert exports["safetensors"].max_abs_diff == 0.0


def test_onnx_runtime_runs_other_sizes_and_batches(
    exports: dict[str, ExportResult], tiny_checkpoint: Path
) -> None:
    import onnx
    import onnxruntime as ort

    path = exports["onnx"].path
    model = onnx.load(str(path))
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]
    assert any(p.key == "hrseg_config" for p in model.metadata_props)
    eager, _ = load_checkpoint(tiny_checkpoint)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for shape in [(3, 3, 37, 41), (1, 3, 130, 70), (2, 3, 64, 96)]:
        x = torch.randn(shape, generator=torch.Generator().manual_seed(sum(shape)))
        got = session.run(None, {"image": x.numpy()})[0]
        with torch.inference_mode():
            ref = eager(x).numpy()
        assert got.shape == ref.shape == (shape[0], 19, -(-shape[2] // 4), -(-shape[3] // 4))
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-4 * max(1.0, float(np.abs(ref).max())))


@pytest.mark.parametrize(
    "fmt",
    # torch.export.load parses every symbolic shape with sympy (~10 s here); export() already loads the .pt2
    # back and checks it, so the Segmenter-on-.pt2 variant runs with the slow tests.
    ["onnx", pytest.param("pt2", marks=pytest.mark.slow), "safetensors"],
)
def test_segmenter_loads_every_export(
    exports: dict[str, ExportResult], tiny_checkpoint: Path, fmt: str
) -> None:
    rgb, _ = generate_scene(3, size=(70, 110))
    ref_mask, ref_probs = Segmenter.from_checkpoint(tiny_checkpoint).predict(rgb, return_probs=True)
    seg = Segmenter.from_checkpoint(exports[fmt].path)
    assert seg.class_names[0] == "road" and seg.num_classes == 19
    mask, probs = seg.predict(rgb, return_probs=True)
    assert mask.shape == (70, 110)
    np.testing.assert_allclose(probs, ref_probs, atol=1e-4)
    assert (mask == ref_mask).mean() > 0.999  # argmax ties aside
    with torch.inference_mode():
        out = seg.model(torch.randn(3, 3, 45, 101))  # dynamic batch, height and width
    assert out.shape == (3, 19, 12, 26)


def test_bundle_also_loads_as_single_file(exports: dict[str, ExportResult], tmp_path: Path) -> None:
    """The config is embedded in the safetensors header, so the weights file alone is self-describing."""
    weights = next(f for f in exports["safetensors"].files if f.suffix == ".safetensors")
    lone = tmp_path / "alone.safetensors"
    lone.write_bytes(weights.read_bytes())
    model, meta = load_checkpoint(lone)
    assert meta.model == "hrnetv2_w18_small_v1" and model.num_classes == 19


def test_cli_exports_and_reports(
    tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cli_bundle"
    code = main(
        [
            "--ckpt_path",
            str(tiny_checkpoint),
            "--format",
            "safetensors",
            "--output",
            str(out),
            "--size",
            "40x256",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "max |safetensors - eager|" in printed and "OK" in printed
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()


def test_cli_fails_above_tolerance(
    tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import hrseg.export.formats as ex

    real = ex.load_checkpoint

    def perturbed(path: str | Path, trusted: bool = False) -> tuple[torch.nn.Module, object]:
        model, meta = real(path, trusted)
        if str(path).endswith(".safetensors"):  # the re-loaded export, not the source checkpoint
            with torch.no_grad():
                model.last_layer[3].bias.add_(0.5)
        return model, meta

    monkeypatch.setattr(ex, "load_checkpoint", perturbed)
    code = main(
        ["--ckpt_path", str(tiny_checkpoint), "--format", "safetensors", "--output", str(tmp_path / "b")]
    )
    assert code == 1
    captured = capsys.readouterr()
    assert "FAILED" in captured.out and "differs from eager" in captured.err


def test_cli_reports_a_missing_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--ckpt_path", str(tmp_path / "none.ckpt"), "--format", "onnx"]) == 1
    assert "none.ckpt" in capsys.readouterr().err


def test_export_wrapper_matches_model_forward(tiny_checkpoint: Path) -> None:
    model, _ = load_checkpoint(tiny_checkpoint)
    wrapper = ExportWrapper(model).eval()
    x = torch.randn(2, 3, 51, 67)
    with torch.inference_mode():
        assert torch.equal(wrapper(x), model(x))
        up = ExportWrapper(model, upsample=True).eval()(x)
    assert up.shape == (2, 19, 51, 67)


def test_export_rejects_too_small_example(tiny_checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=">= 33"):
        export(tiny_checkpoint, "pt2", tmp_path / "m.pt2", height=16, width=64)
    h, w = default_check_size(64, 96)
    assert (h, w) != (64, 96) and h % 4 and w % 4


@pytest.mark.slow
def test_torchscript_onnx_exporter(tiny_checkpoint: Path, tmp_path: Path) -> None:
    result = export(
        tiny_checkpoint, "onnx", tmp_path / "ts.onnx", exporter="torchscript", height=64, width=96
    )
    assert result.passed, result.summary()


@pytest.mark.slow
def test_onnx_with_upsampled_output(tiny_checkpoint: Path, tmp_path: Path) -> None:
    result = export(tiny_checkpoint, "onnx", tmp_path / "up.onnx", upsample=True, height=64, width=96)
    assert result.passed, result.summary()
    assert result.check_shape[2:] == default_check_size(64, 96)
