"""DDP on 2 CPU processes (gloo): training runs and validation metrics are synced across processes.

The confusion matrix is a sum over the split, so the metrics logged by a 2-process run must equal those of a
single process on the same checkpoint and data; an unsynced metric would only see half of the images.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hrseg.cli import main

SMALL = [
    "--config=demo",
    "--data.init_args.num_train=16",
    "--data.init_args.num_val=8",
    "--data.init_args.image_size=[48,96]",
    "--data.init_args.batch_size=4",
    "--data.init_args.eval_batch_size=1",  # same per-image numerics in both runs
    "--model.log_images=0",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--trainer.accelerator=cpu",
    "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
    "--trainer.logger.init_args.name=csv",
]


def _last_val(path: Path) -> dict[str, float]:
    with open(path) as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("val/mIoU")]
    return {k: float(v) for k, v in rows[-1].items() if k.startswith("val/") and k != "val/loss" and v}


@pytest.mark.slow
def test_two_process_ddp_fit_syncs_validation_metrics(tmp_path):
    ddp_root = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "hrseg",
        "fit",
        *SMALL,
        "--trainer.devices=2",
        "--trainer.strategy=ddp",
        "--trainer.max_epochs=1",
        f"--trainer.default_root_dir={ddp_root}",
        f"--trainer.logger.init_args.save_dir={ddp_root}",
    ]
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    version = ddp_root / "csv" / "version_0"
    ddp_metrics = _last_val(version / "metrics.csv")
    ckpt = torch.load(version / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 2  # 16 images / 2 processes / batch 4

    # the same checkpoint, one process, the whole val split (single thread: bitwise-equal convolutions)
    single_root = tmp_path / "single"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        args = [
            "validate",
            *SMALL,
            "--trainer.devices=1",
            f"--trainer.default_root_dir={single_root}",
            f"--trainer.logger.init_args.save_dir={single_root}",
            f"--ckpt_path={version / 'checkpoints' / 'last.ckpt'}",
        ]
        assert main(args) == 0
    finally:
        torch.set_num_threads(threads)
    single_metrics = _last_val(single_root / "csv" / "version_0" / "metrics.csv")
    assert "val/mIoU" in ddp_metrics and "val/iou_road" in ddp_metrics
    assert set(ddp_metrics) == set(single_metrics)
    for key, value in single_metrics.items():
        assert ddp_metrics[key] == pytest.approx(value, abs=1e-6), key
