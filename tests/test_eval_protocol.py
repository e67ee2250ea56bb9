"""The evaluation protocol is one value that travels with the model: task, checkpoint, Segmenter, predict."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hrseg.eval_protocol import EvalProtocol
from hrseg.metadata import ModelMeta

SLIDE = ["--model.eval_protocol.mode", "slide", "--model.eval_protocol.window", "[32, 48]"]


def test_defaults_validation_and_round_trip() -> None:
    assert EvalProtocol().single_pass and EvalProtocol().passes == 1
    p = EvalProtocol("slide", window=[64, 96], scales=[0.5, 1], flip=True)  # type: ignore[arg-type]
    assert p.window == (64, 96) and p.scales == (0.5, 1.0) and p.passes == 4 and not p.single_pass
    assert p.effective_stride() == (42, 64)
    assert EvalProtocol.from_dict(json.loads(json.dumps(p.to_dict()))) == p
    assert p.describe() == "slide 64x96 (stride 42x64), scales 0.5,1, flip"
    assert p.replace(flip=False, window=None) == EvalProtocol("slide", (64, 96), None, (0.5, 1.0), False)
    with pytest.raises(ValueError, match="needs a window"):
        EvalProtocol("slide")
    with pytest.raises(ValueError, match="must be one of whole, slide, tile, official"):
        EvalProtocol("multiscale")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mode 'tile' needs a window"):
        EvalProtocol("tile")
    tile = EvalProtocol("tile", (64, 96), scales=(0.5, 1.0))
    assert tile.describe() == "tile 64x96 (stride 42x64), scales 0.5,1" and not tile.single_pass
    with pytest.raises(ValueError, match="scales"):
        EvalProtocol(scales=())
    with pytest.raises(ValueError, match="window"):
        EvalProtocol("slide", window=(0, 32))
    with pytest.raises(ValueError, match="unknown eval protocol keys"):
        EvalProtocol.from_dict({"mode": "whole", "flips": True})


def test_model_meta_carries_the_protocol() -> None:
    stored = EvalProtocol("slide", (32, 48), None, (0.75, 1.0), True)
    meta = ModelMeta.from_dict(
        {"model": "hrnetv2_w18_small_v1", "labels": "cityscapes", "eval_protocol": stored.to_dict()}
    )
    assert meta.eval_protocol == stored
    assert ModelMeta.from_dict(json.loads(meta.to_json())) == meta
    # metadata without a protocol predicts whole images
    assert ModelMeta.from_dict(
        {"model": "hrnetv2_w18_small_v1", "labels": "cityscapes"}
    ).eval_protocol.single_pass


@pytest.fixture(scope="module")
def slide_checkpoint(tmp_path_factory: pytest.TempPathFactory, tiny_fit: Callable[..., Path]) -> Path:
    """Trained (two CLI steps) and validated with sliding windows of 32x48."""
    return tiny_fit(tmp_path_factory.mktemp("slide_fit"), *SLIDE)


def _input_shapes(seg: object, image: np.ndarray) -> list[tuple[int, ...]]:
    shapes: list[tuple[int, ...]] = []
    model = seg.model  # type: ignore[attr-defined]
    handle = model.register_forward_pre_hook(lambda _m, args: shapes.append(tuple(args[0].shape)))
    try:
        seg.predict(image)  # type: ignore[attr-defined]
    finally:
        handle.remove()
    return shapes


def test_checkpoint_predicts_with_its_protocol_unless_overridden(slide_checkpoint: Path) -> None:
    from hrseg.data.scenes import generate_scene
    from hrseg.deploy import Segmenter

    ckpt = torch.load(slide_checkpoint, map_location="cpu", weights_only=True)
    assert ckpt["hyper_parameters"]["eval_protocol"]["mode"] == "slide"
    image, _ = generate_scene(3, size=(64, 96))
    seg = Segmenter.from_checkpoint(slide_checkpoint, device="cpu", fast=False)
    assert seg.protocol == EvalProtocol("slide", window=(32, 48))
    shapes = _input_shapes(seg, image)
    assert len(shapes) > 1 and all(s[-2:] == (32, 48) for s in shapes)
    whole = Segmenter.from_checkpoint(slide_checkpoint, device="cpu", fast=False, protocol={"mode": "whole"})
    assert whole.protocol == EvalProtocol("whole", window=(32, 48))
    assert _input_shapes(whole, image) == [(1, 3, 64, 96)]


def test_hrseg_predict_uses_the_stored_protocol(
    slide_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from hrseg.commands import main
    from hrseg.data.scenes import generate_scene
    from hrseg.deploy import Segmenter

    image, _ = generate_scene(5, size=(64, 96))
    Image.fromarray(image).save(tmp_path / "scene.png")
    runs = {"stored": [], "override": ["--mode", "whole"]}
    for name, extra in runs.items():
        args = ["predict", "--ckpt_path", str(slide_checkpoint), "--input", str(tmp_path / "scene.png")]
        assert main([*args, "--output", str(tmp_path / name), "--device", "cpu", *extra]) == 0
    err = capsys.readouterr().err
    assert "protocol slide 32x48 (stride 21x32)" in err and "protocol whole\n" in err
    for name, protocol in (("stored", None), ("override", {"mode": "whole"})):
        expected = Segmenter.from_checkpoint(slide_checkpoint, device="cpu", protocol=protocol).predict(image)
        written = np.asarray(Image.open(tmp_path / name / "scene_trainIds.png"))
        np.testing.assert_array_equal(written, expected)


def test_config_runs_use_the_checkpoints_protocol_and_the_command_line_wins(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    """LightningCLI applies a --ckpt_path checkpoint's hyper-parameters over the config: its stored protocol
    is the one that runs, and a protocol given on the command line wins."""
    from hrseg.commands.lightning import run_lightning_cli

    ckpt = torch.load(tiny_checkpoint, map_location="cpu", weights_only=True)
    hparams = ckpt["hyper_parameters"]
    hparams["eval_protocol"] = EvalProtocol("slide", (32, 48), flip=True).to_dict()
    slide = tmp_path / "slide.ckpt"
    torch.save(ckpt, slide)

    def protocol_run_with(*extra: str) -> EvalProtocol:
        small = ["--data.init_args.num_val=2", "--data.init_args.image_size=[64, 96]"]
        run = [
            "--trainer.limit_predict_batches=1",
            "--trainer.logger=false",
            "--trainer.enable_progress_bar=false",
        ]
        args = ["predict", "--config", "demo", "--ckpt_path", str(slide), *small, *run, *extra]
        return run_lightning_cli([*args, f"--trainer.default_root_dir={tmp_path}"]).model.eval_protocol

    assert protocol_run_with() == EvalProtocol("slide", (32, 48), flip=True)
    assert protocol_run_with("--model.eval_protocol.mode=whole").mode == "whole"
