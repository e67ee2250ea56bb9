"""``hrseg predict``: the resumable folder tool and the Lightning ``PredictionWriter``."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from hrseg.callbacks import PredictionWriter
from hrseg.colors import colorize
from hrseg.commands.predict import main
from hrseg.deploy import Segmenter, output_paths, predict_folder, write_prediction
from hrseg.metadata import LabelSet


@pytest.fixture(scope="module")
def segmenter(tiny_checkpoint: Path) -> Segmenter:
    return Segmenter.from_checkpoint(tiny_checkpoint)


def _check_outputs(images: Path, out: Path, palette: list[list[int]], overlay: bool) -> None:
    for src in sorted(images.iterdir()):
        paths = output_paths(out, src.stem, write_color=True, write_overlay=overlay)
        size = Image.open(src).size
        labels = Image.open(paths["trainIds"])
        assert labels.mode == "L" and labels.size == size
        ids = np.asarray(labels)
        assert ids.max() < 19
        color = np.asarray(Image.open(paths["color"]).convert("RGB"))
        np.testing.assert_array_equal(color, colorize(ids, palette))
        if overlay:
            assert Image.open(paths["overlay"]).size == size
        else:
            assert not (out / f"{src.stem}_overlay.png").exists()


def test_predict_folder_writes_and_resumes(
    segmenter: Segmenter, demo_images_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "pred"
    first = predict_folder(segmenter, demo_images_dir, out, write_overlay=True, progress=False)
    assert sorted(first.written) == sorted(p.stem for p in demo_images_dir.iterdir())
    assert not first.skipped
    _check_outputs(demo_images_dir, out, segmenter.palette, overlay=True)
    assert not list(out.glob(".*tmp"))  # no temporary files left behind

    stamps = {p: p.stat().st_mtime_ns for p in out.iterdir()}
    second = predict_folder(segmenter, demo_images_dir, out, write_overlay=True, progress=False)
    assert not second.written and len(second.skipped) == len(first.written)
    assert {p: p.stat().st_mtime_ns for p in out.iterdir()} == stamps

    (out / "grey_color.png").unlink()
    third = predict_folder(segmenter, demo_images_dir, out, write_overlay=True, progress=False)
    assert third.written == ["grey"]
    assert (out / "grey_color.png").is_file()

    again = predict_folder(segmenter, demo_images_dir, out, skip_existing=False, progress=False)
    assert len(again.written) == len(first.written)


def test_predict_folder_glob_list_and_checkpoint(
    tiny_checkpoint: Path, demo_images_dir: Path, tmp_path: Path
) -> None:
    summary = predict_folder(
        tiny_checkpoint, str(demo_images_dir / "*.png"), tmp_path / "g", write_color=False, progress=False
    )
    assert sorted(summary.written) == ["grey", "palette", "rgb_odd", "rgba"]
    assert not list((tmp_path / "g").glob("*_color.png"))
    one = predict_folder(tiny_checkpoint, [demo_images_dir / "photo.jpg"], tmp_path / "l", progress=False)
    assert one.written == ["photo"]


def test_predict_folder_rejects_name_clashes(
    segmenter: Segmenter, demo_images_dir: Path, tmp_path: Path
) -> None:
    sub = demo_images_dir / "sub"
    sub.mkdir()
    (sub / "grey.png").write_bytes((demo_images_dir / "grey.png").read_bytes())
    with pytest.raises(ValueError, match="grey"):
        predict_folder(segmenter, str(demo_images_dir / "**" / "*.png"), tmp_path / "x", progress=False)


def test_cli_main(
    tiny_checkpoint: Path, demo_images_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cli"
    argv = [
        "--ckpt_path",
        str(tiny_checkpoint),
        "--input",
        str(demo_images_dir),
        "--output",
        str(out),
        "--no-progress",
    ]
    assert main(argv) == 0
    assert "5 images predicted" in capsys.readouterr().out
    assert main(argv) == 0
    assert "0 images predicted, 5 skipped" in capsys.readouterr().out
    assert main([*argv[:3], str(tmp_path / "nothing"), *argv[4:]]) == 1


def test_write_prediction_16bit_and_subfolders(tmp_path: Path) -> None:
    mask = np.array([[0, 300], [255, 2]], dtype=np.int64)
    paths = write_prediction(tmp_path, "a/b", mask, [(1, 2, 3)] * 301)
    back = np.asarray(Image.open(paths["trainIds"]))
    np.testing.assert_array_equal(back, mask)
    assert paths["trainIds"].parent.name == "a"


def test_prediction_writer_writes_batches_and_skips_existing(tmp_path: Path, demo_images_dir: Path) -> None:
    writer = PredictionWriter(str(tmp_path / "w"), write_overlay=True)
    module = SimpleNamespace(
        labels=LabelSet(tuple("abcdefghijklmnopqrs"), palette=[(i, i, i) for i in range(19)])
    )
    trainer = SimpleNamespace(datamodule=None)
    src = demo_images_dir / "rgba.png"
    pred = {"pred": torch.zeros((1, 64, 64), dtype=torch.int64), "name": ["rgba"], "path": [str(src)]}
    writer.write_on_batch_end(trainer, module, pred, None, None, 0, 0)  # type: ignore[arg-type]
    assert writer.written == 1
    assert all(p.is_file() for p in output_paths(tmp_path / "w", "rgba", True, True).values())
    writer.write_on_batch_end(trainer, module, pred, None, None, 0, 0)  # type: ignore[arg-type]
    assert writer.written == 1 and writer.skipped == 1


def test_prediction_writer_drops_finished_samples_in_setup(tmp_path: Path) -> None:
    out = tmp_path / "w"
    write_prediction(out, "done", np.zeros((4, 4), np.int64), [(0, 0, 0)])
    samples = [SimpleNamespace(name="done"), SimpleNamespace(name="todo")]
    dataset = SimpleNamespace(samples=samples)
    printed: list[str] = []
    trainer = SimpleNamespace(datamodule=SimpleNamespace(predict_dataset=dataset), print=printed.append)
    PredictionWriter(str(out)).setup(trainer, None, "predict")  # type: ignore[arg-type]
    assert [s.name for s in dataset.samples] == ["todo"]
    assert printed and "1 of 2" in printed[0]


def test_one_predict_command_with_and_without_config(
    tiny_checkpoint: Path,
    demo_images_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``hrseg predict`` takes one syntax; ``--config`` switches to the DataModule + Trainer engine."""
    from hrseg.commands import main as hrseg_main

    common = ["predict", "--ckpt_path", str(tiny_checkpoint), "--input", str(demo_images_dir), "--overlay"]
    bare, configured = tmp_path / "bare", tmp_path / "config"
    assert hrseg_main([*common, "--output", str(bare), "--no-progress"]) == 0
    argv = [
        *common,
        "--output",
        str(configured),
        "--config",
        "demo",
        "--trainer.logger=false",
        "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={tmp_path}",
    ]
    assert hrseg_main(argv) == 0
    seg = Segmenter.from_checkpoint(tiny_checkpoint)
    for out in (bare, configured):
        _check_outputs(demo_images_dir, out, seg.palette, overlay=True)
    for src in sorted(demo_images_dir.iterdir()):
        a = np.asarray(Image.open(bare / f"{src.stem}_trainIds.png"))
        b = np.asarray(Image.open(configured / f"{src.stem}_trainIds.png"))
        assert (a == b).mean() > 0.999, src.name  # BN folding in the bare form: ties may flip
    stamps = {p: p.stat().st_mtime_ns for p in configured.iterdir()}
    assert hrseg_main(argv) == 0  # resumed: nothing left to do
    assert {p: p.stat().st_mtime_ns for p in configured.iterdir()} == stamps

    capsys.readouterr()
    with pytest.raises(SystemExit):
        hrseg_main(["predict", "--help"])
    help_text = capsys.readouterr().out
    assert "--ckpt_path" in help_text and "--config" in help_text and "--trainer.devices" in help_text
    with pytest.raises(SystemExit):  # LightningCLI options need --config
        hrseg_main([*common, "--output", str(bare), "--trainer.devices=2"])


@pytest.mark.parametrize("with_config", [False, True])
def test_unreadable_inputs_are_named_at_the_end_and_the_rest_written(
    tiny_checkpoint: Path,
    demo_images_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    with_config: bool,
) -> None:
    from hrseg.commands import main as hrseg_main

    (demo_images_dir / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    out = tmp_path / "out"
    argv = [
        "predict",
        "--ckpt_path",
        str(tiny_checkpoint),
        "--input",
        str(demo_images_dir),
        "--output",
        str(out),
    ]
    if with_config:
        argv += ["--config", "demo", "--trainer.logger=false", f"--trainer.default_root_dir={tmp_path}"]
    else:
        argv.append("--no-progress")
    assert hrseg_main(argv) == 1
    printed = capsys.readouterr().out
    assert "broken.png" in printed and "corrupt" in printed
    good = sorted(p.stem for p in demo_images_dir.iterdir() if p.name != "broken.png")
    assert sorted(p.name.removesuffix("_trainIds.png") for p in out.glob("*_trainIds.png")) == good


@pytest.mark.parametrize("with_config", [False, True])
def test_a_bad_checkpoint_gets_the_checkpoint_readers_message(
    tmp_path: Path, demo_images_dir: Path, capsys: pytest.CaptureFixture[str], with_config: bool
) -> None:
    from hrseg.commands import main as hrseg_main

    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(b"PK\x03\x04 truncated")
    argv = [
        "predict",
        "--ckpt_path",
        str(broken),
        "--input",
        str(demo_images_dir),
        "--output",
        str(tmp_path / "o"),
    ]
    assert hrseg_main([*argv, *(["--config", "demo"] if with_config else [])]) == 1
    err = capsys.readouterr().err
    assert str(broken) in err and "corrupt or truncated" in err
