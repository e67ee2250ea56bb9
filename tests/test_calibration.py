"""int8 calibration fits the model: ``--calib-data``, else the dataset recorded with the checkpoint, generated
street scenes only for a model trained on them, otherwise one line saying what to pass.

A "run folder" here is the tiny demo checkpoint copied beside a ``config.yaml`` whose ``data:`` section is a
FolderDataModule, as ``hrseg fit`` leaves it: the checkpoint then records that dataset, not the scenes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml

SMALL = ["--size", "64x96", "--exporter", "torchscript", "--num-calib", "2", "--num-val", "2"]


def hrseg(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "hrseg", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=600
    )


def run_folder(tiny_checkpoint: Path, root: Path, data: dict[str, object]) -> Path:
    """``root/checkpoints/last.ckpt`` beside ``root/config.yaml`` recording ``data`` (FolderDataModule)."""
    (root / "checkpoints").mkdir(parents=True)
    ckpt = root / "checkpoints" / "last.ckpt"
    shutil.copy(tiny_checkpoint, ckpt)
    config = {"data": {"class_path": "hrseg.data.FolderDataModule", "init_args": data}}
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    return ckpt


def test_int8_without_data_of_the_model_domain_fails_in_one_line(
    tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No recorded dataset (released weights), or one that is gone: one line, no file written."""
    from safetensors.torch import save_file

    from hrseg.inference import load_checkpoint

    model, meta = load_checkpoint(tiny_checkpoint)
    weights = tmp_path / "released.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    out = tmp_path / "released_int8.onnx"
    args = ["export", "--ckpt_path", str(weights), "--model", meta.model, "--precision", "int8"]
    result = hrseg(*args, "--output", str(out), *SMALL, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "hrseg export: error: int8 needs calibration images of the model's own domain: pass --calib-data (an "
        f"image folder, a glob or a config); {weights} records no training data, and generated street scenes "
        "fit only a model trained on them"
    ]
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["released.safetensors"]

    gone = {"images_dir": str(tmp_path / "gone" / "images"), "masks_dir": str(tmp_path / "gone" / "masks")}
    ckpt = run_folder(tiny_checkpoint, tmp_path / "run", {**gone, "num_classes": 19})
    from hrseg.commands import main  # the same command in-process: a second start costs seconds

    capsys.readouterr()
    assert main(["export", "--ckpt_path", str(ckpt), "--precision", "int8", *SMALL]) == 1
    [line] = capsys.readouterr().err.splitlines()
    config = tmp_path / "run" / "config.yaml"
    assert line.startswith(f"hrseg export: error: int8 calibration: the training data recorded in {config} ")
    assert str(tmp_path / "gone" / "images") in line and line.endswith(
        "pass --calib-data with images of the model's domain"
    )
    assert not ckpt.with_suffix(".onnx").exists()


@pytest.mark.slow  # an ONNX export, its quantization and the accuracy check in a fresh process
def test_int8_calibrates_on_the_dataset_recorded_with_the_model(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    from hrseg.data.folder import write_folder

    data = write_folder(tmp_path / "data", num_train=3, num_val=2, size=(64, 96), progress=False)
    ckpt = run_folder(tiny_checkpoint, tmp_path / "run", {**data, "num_classes": 19})
    config = tmp_path / "run" / "config.yaml"
    out = tmp_path / "model_int8.onnx"
    args = ["export", "--ckpt_path", str(ckpt), "--precision", "int8", "--max-drop", "1"]
    result = hrseg(*args, "--output", str(out), *SMALL, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert (
        f"hrseg export: int8 calibration on 2 images of the train split of {config} (recorded with the model)"
        in lines
    )
    assert f"over 2 images of the val split of {config}, allowed drop 1.0 OK" in lines[-1]
    assert "against ground truth" in lines[-1]
    assert out.is_file()
    import onnx

    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert props["hrseg_precision"] == "int8"


def test_generated_scenes_only_for_a_model_trained_on_them(tiny_checkpoint: Path) -> None:
    """The demo checkpoint records DemoDataModule; the library's unasked default warns."""
    import argparse

    from hrseg.commands.export import GENERATED_DATAMODULE, calibration_set, recorded_data
    from hrseg.export import GeneratedCalibrationWarning
    from hrseg.export.quantize import calibration_batches
    from hrseg.inference import load_checkpoint

    args = argparse.Namespace(ckpt=str(tiny_checkpoint), model=None, calib_data=None, num_calib=2)
    datamodule, config = recorded_data(args)
    assert datamodule == GENERATED_DATAMODULE and config is not None
    images, source = calibration_set(args, datamodule, config)
    assert source == "generated street scenes (the model was trained on them)"
    assert len(images) == 2 and images[0].dtype == np.uint8

    _, meta = load_checkpoint(tiny_checkpoint)
    with pytest.warns(GeneratedCalibrationWarning, match="right only for a model trained on them"):
        calibration_batches(None, meta)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(calibration_batches(images, meta)) == 2
