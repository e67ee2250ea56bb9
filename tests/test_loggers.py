"""Image panels and evaluation plots reach every Lightning logger through its own image call.

A real validate + test run with TensorBoard and CSV, Weights & Biases (offline), MLflow (local files); W&B and
MLflow are test extras and their tests are skipped (pytest.importorskip) when they are not installed. The
adapter is also checked against a fake logger with a TensorBoard-like ``add_image``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from matplotlib.figure import Figure

from hrseg.data import DemoDataModule
from hrseg.loggers import image_file_name, log_image
from hrseg.task import SegmentationTask


def _run(loggers: list[Any], root: Path) -> None:
    dm = DemoDataModule(num_train=1, num_val=2, num_test=1, image_size=(48, 64), batch_size=2)
    task = SegmentationTask(
        model="hrnetv2_w18_small_v1",
        labels=dm.labels,
        log_images=2,
    )
    trainer = L.Trainer(
        logger=loggers,
        default_root_dir=root,
        accelerator="cpu",
        devices=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    trainer.validate(task, datamodule=dm)
    trainer.test(task, datamodule=dm)


def test_panels_and_plots_reach_tensorboard_and_csv(tmp_path: Path) -> None:
    csv = CSVLogger(tmp_path, name="csv")
    tensorboard = TensorBoardLogger(tmp_path, name="tb")
    _run([csv, tensorboard], tmp_path)

    # CSV: PNG files in the run folder (the test plots are saved there by the task itself)
    run = Path(csv.log_dir)
    assert (run / "images" / "val_predictions_step000000.png").is_file()
    assert (run / "test_confusion_matrix.png").is_file() and (run / "test_per_class_iou.png").is_file()
    assert not (run / "images" / "test_confusion_matrix_step000000.png").exists()  # not twice

    # TensorBoard: unchanged add_image of the panels, plus the test plots
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tensorboard.log_dir), size_guidance={"images": 0})
    events.Reload()
    assert {"val/predictions", "test/confusion_matrix", "test/per_class_iou"} <= set(events.Tags()["images"])


def test_panels_and_plots_reach_wandb_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wandb = pytest.importorskip("wandb")  # a test extra: skipped, not passed, without it
    from lightning.pytorch.loggers import WandbLogger

    monkeypatch.setenv("WANDB_SILENT", "true")
    _run([WandbLogger(offline=True, save_dir=str(tmp_path), project="hrseg-test")], tmp_path)
    wandb.finish()
    media = {
        p.relative_to(p.parents[1]).as_posix()
        for p in tmp_path.glob("wandb/offline-run-*/files/media/images/*/*.png")
    }
    assert any(m.startswith("val/predictions") for m in media), media
    assert any(m.startswith("test/confusion_matrix") for m in media), media


def test_panels_and_plots_reach_mlflow_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("mlflow")  # a test extra: skipped, not passed, without it
    from lightning.pytorch.loggers import MLFlowLogger

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # local files (mlflow-skinny has no SQL store)
    _run([MLFlowLogger(experiment_name="hrseg-test", tracking_uri=f"file:{tmp_path / 'mlruns'}")], tmp_path)
    artifacts = {p.name for p in (tmp_path / "mlruns").glob("*/*/artifacts/images/*.png")}
    assert image_file_name("val/predictions", 0) in artifacts
    assert image_file_name("test/per_class_iou", 0) in artifacts


def test_log_image_uses_each_loggers_own_call(tmp_path: Path) -> None:
    calls: list[tuple[str, tuple[int, ...], int, str]] = []

    class Experiment:
        def add_image(self, tag: str, array: np.ndarray, global_step: int, dataformats: str) -> None:
            calls.append((tag, array.shape, global_step, dataformats))

    class TensorBoardLike(L.pytorch.loggers.Logger):
        name, version = "fake", 0

        @property
        def experiment(self) -> Experiment:
            return Experiment()

        def log_metrics(self, metrics: Any, step: Any = None) -> None: ...

        def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None: ...

    class NoImages(TensorBoardLike):
        @property
        def experiment(self) -> object:
            return object()

    fig = Figure(figsize=(2, 1))
    fig.add_subplot().plot([0, 1])
    csv = CSVLogger(tmp_path)
    reached = log_image([TensorBoardLike(), NoImages(), csv], "val/predictions", fig, step=7)
    assert reached == ["TensorBoardLike", "CSVLogger"]
    assert calls == [("val/predictions", (100, 200, 3), 7, "HWC")]
    assert (Path(csv.log_dir) / "images" / "val_predictions_step000007.png").is_file()
