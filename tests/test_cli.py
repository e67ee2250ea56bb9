"""The real ``hrseg`` CLI on the demo config: fit, validate / test / predict from the checkpoint, resume."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch

from hrseg.commands import main
from hrseg.commands.configs import CONFIG_DIR, list_configs, resolve_config
from hrseg.task import poly_warmup_factor

# Tiny demo data: every CLI test overrides the shipped demo config with these.
SMALL_DATA = [
    "--data.init_args.num_train=16",
    "--data.init_args.num_val=4",
    "--data.init_args.num_test=4",
    "--data.init_args.image_size=[48, 96]",
    "--data.init_args.batch_size=4",
    "--data.init_args.eval_batch_size=4",
]
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def _args(root: Path, *extra: str) -> list[str]:
    """Demo config, tiny data, CSV logs under ``root``."""
    return [
        "--config",
        "demo",
        *SMALL_DATA,
        *QUIET,
        f"--trainer.default_root_dir={root}",
        "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
        f"--trainer.logger.init_args.save_dir={root}",
        "--trainer.logger.init_args.name=csv",
        "--trainer.log_every_n_steps=1",
        *extra,
    ]


def _rows(root: Path, version: int) -> list[dict[str, str]]:
    with open(root / "csv" / f"version_{version}" / "metrics.csv") as fh:
        return list(csv.DictReader(fh))


def _values(rows: list[dict[str, str]], key: str) -> list[tuple[int, float]]:
    return [(int(r["step"]), float(r[key])) for r in rows if r.get(key)]


def test_config_names_resolve_from_anywhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    demo = str(CONFIG_DIR / "demo.yaml")
    assert resolve_config("demo") == demo
    assert resolve_config("demo.yaml") == demo
    assert resolve_config("configs/demo.yaml") == demo
    assert resolve_config("cityscapes/hrnetv2_w48") == str(CONFIG_DIR / "cityscapes" / "hrnetv2_w48.yaml")
    assert resolve_config("no/such/config") == "no/such/config"
    assert {"demo", "cityscapes/hrnetv2_w48", "voc/hrnetv2_w18"} <= set(list_configs())


def test_print_config_shows_links_and_defaults(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["fit", "--config", "demo", "--print_config"])
    assert exc.value.code in (0, None)
    out = capsys.readouterr().out
    assert "model: hrnetv2_w18_small_v1" in out
    assert "class_path: hrseg.data.DemoDataModule" in out
    assert "monitor: val/mIoU" in out and "filename: last" in out


@pytest.mark.slow
def test_demo_fit_then_validate_test_predict(tmp_path, capsys):
    root = tmp_path / "run"
    fit = _args(root, "--trainer.max_epochs=6", "--model.warmup_iters=0", "--model.lr=0.005")
    assert main(["fit", *fit]) == 0
    rows = _rows(root, 0)
    miou = [v for _, v in _values(rows, "val/mIoU")]
    assert len(miou) == 6
    # chance: uniform guessing over 19 classes scores about 0.02; a constant prediction at most ~0.03
    assert miou[-1] > 0.10, miou
    assert miou[-1] > miou[0], miou
    ckpt_dir = root / "csv" / "version_0" / "checkpoints"
    last = ckpt_dir / "last.ckpt"
    assert last.is_file() and any(p.name.startswith("best-") for p in ckpt_dir.iterdir())
    hparams = torch.load(last, map_location="cpu", weights_only=True)["hyper_parameters"]
    assert hparams["num_classes"] == 19 and hparams["class_names"][0] == "road"  # linked from the data
    assert len(hparams["palette"]) == 19 and hparams["model"] == "hrnetv2_w18_small_v1"

    # validate the last checkpoint: the same numbers as the last validation during fit
    assert main(["validate", *_args(root, f"--ckpt_path={last}")]) == 0
    val = _rows(root, 1)
    assert float(val[-1]["val/mIoU"]) == pytest.approx(miou[-1], abs=1e-6)

    # test: per-class table on the console, confusion matrix and IoU bar chart next to the logs
    capsys.readouterr()
    assert main(["test", *_args(root, f"--ckpt_path={last}")]) == 0
    out = capsys.readouterr().out
    assert "per-class IoU" in out and "traffic light" in out
    test_dir = root / "csv" / "version_2"
    assert (test_dir / "test_confusion_matrix.png").stat().st_size > 0
    assert (test_dir / "test_per_class_iou.png").stat().st_size > 0
    assert 0.0 <= float(_rows(root, 2)[-1]["test/mIoU"]) <= 1.0

    # predict: label PNGs for every demo test scene (default writer under default_root_dir)
    assert main(["predict", *_args(root, f"--ckpt_path={last}")]) == 0
    written = sorted((root / "predictions").glob("*_trainIds.png"))
    assert len(written) == 4

    # the README figures of a run: validation panels and the learning curve
    from hrseg.commands.report import main as viz_main

    assert viz_main([str(root / "csv" / "version_0"), "--out", str(tmp_path / "figures")]) == 0
    for name in ("predictions.png", "learning_curve.png"):
        assert (tmp_path / "figures" / name).stat().st_size > 0


@pytest.mark.slow
def test_resume_from_last_continues_step_optimizer_and_schedule(tmp_path, capsys):
    root = tmp_path / "run"
    common = ["--trainer.max_steps=8", "--model.warmup_iters=0", "--model.lr=0.004"]
    # first run: interrupted after the first epoch (4 steps) by a callback that always stops
    stop = [
        "--trainer.callbacks+=lightning.pytorch.callbacks.EarlyStopping",
        "--trainer.callbacks.monitor=val/mIoU",
        "--trainer.callbacks.mode=max",
        "--trainer.callbacks.stopping_threshold=-1.0",
    ]
    assert main(["fit", *_args(root, *common, *stop)]) == 0
    first = torch.load(root / "csv" / "version_0" / "checkpoints" / "last.ckpt", weights_only=True)
    assert first["global_step"] == 4

    capsys.readouterr()
    assert main(["fit", *_args(root, *common, "--ckpt_path=last")]) == 0
    assert "version_0/checkpoints/last.ckpt" in capsys.readouterr().out  # found the earlier run's file
    second = torch.load(root / "csv" / "version_1" / "checkpoints" / "last.ckpt", weights_only=True)
    assert second["global_step"] == 8
    sched = second["lr_schedulers"][0]
    assert sched["last_epoch"] == 8
    adam_steps = {float(s["step"]) for s in second["optimizer_states"][0]["state"].values()}
    assert adam_steps == {8.0}, "optimizer state must continue from the checkpoint, not restart"
    lr_rows = _values(_rows(root, 1), "train/lr")
    # the resumed run trains global steps 4..7 only, starting with the schedule's step-4 learning rate
    # (Lightning labels the first resumed row one step later; the values show which step ran)
    assert len(lr_rows) == 4
    assert lr_rows[0][1] == pytest.approx(0.004 * poly_warmup_factor(4, 8, 0.9), rel=1e-5)
    assert lr_rows[-1][1] == pytest.approx(0.004 * poly_warmup_factor(7, 8, 0.9), rel=1e-5)
    assert all(math.isfinite(v) for _, v in lr_rows)


@pytest.mark.slow
def test_a_missing_data_root_fails_once_before_ddp_starts(tmp_path):
    """A 2-process recipe without its data: one message from the launching process, no worker started."""
    import subprocess
    import sys

    cmd = [
        sys.executable,
        "-m",
        "hrseg",
        "fit",
        "--config=cityscapes/hrnetv2_w18_small_v1",
        f"--data.init_args.root={tmp_path / 'no_cityscapes'}",
        "--model.weights=null",
        "--trainer.accelerator=cpu",
        "--trainer.devices=2",
        f"--trainer.default_root_dir={tmp_path}",
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert proc.stderr.count("hrseg fit: error:") == 1
    assert proc.stderr.count("Cityscapes root directory not found") == 1
    assert "Traceback" not in proc.stderr
    assert "Initializing distributed" not in proc.stderr + proc.stdout  # no process group was ever set up
