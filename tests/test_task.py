"""SegmentationTask without the CLI: schedule, parameter groups, steps, logging, panels, weights."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from hrseg.data import DemoDataModule
from hrseg.eval_protocol import EvalProtocol
from hrseg.losses import LossConfig
from hrseg.metadata import LabelSet
from hrseg.optim import OptimizerConfig, poly_warmup_factor
from hrseg.task import SegmentationTask

SMALL = {"num_train": 4, "num_val": 2, "image_size": (48, 96), "batch_size": 2, "eval_batch_size": 2}


def _task(**kwargs) -> SegmentationTask:
    dm = DemoDataModule(**SMALL)
    defaults = dict(
        labels=dm.labels,
        loss=LossConfig([{"name": "ohem", "min_kept": 100}]),
    )
    defaults.update(kwargs)
    return SegmentationTask(**defaults)


def _trainer(tmp_path: Path, **kwargs) -> L.Trainer:
    opts = dict(
        accelerator="cpu",
        devices=1,
        max_steps=2,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        logger=TensorBoardLogger(tmp_path, name="tb"),
        default_root_dir=tmp_path,
        log_every_n_steps=1,
    )
    opts.update(kwargs)
    return L.Trainer(**opts)


def test_poly_schedule_with_warmup():
    assert poly_warmup_factor(0, 100) == 1.0
    assert poly_warmup_factor(50, 100, power=0.9) == pytest.approx(0.5**0.9)
    assert poly_warmup_factor(100, 100) == 0.0
    assert poly_warmup_factor(0, 100, warmup_iters=10) == pytest.approx(0.1)
    assert poly_warmup_factor(9, 100, warmup_iters=10) == pytest.approx(1.0 * (1 - 9 / 100) ** 0.9)
    assert poly_warmup_factor(150, 100) == 0.0  # never negative past the end


def test_head_lr_multiplier_groups():
    task = _task(optimizer=OptimizerConfig(head_lr_mult=10.0, lr=0.01))
    groups = task.parameter_groups()
    assert [g["lr"] for g in groups] == [0.01, 0.1]
    head_ids = {id(p) for p in task.model.last_layer.parameters()}
    assert {id(p) for p in groups[1]["params"]} == head_ids
    n_params = sum(1 for _ in task.model.parameters())
    assert sum(len(g["params"]) for g in groups) == n_params
    assert len(_task(optimizer=OptimizerConfig(head_lr_mult=1.0)).parameter_groups()) == 1


def test_invalid_metadata_fails_early():
    with pytest.raises(ValueError, match="collides with a class id"):
        SegmentationTask(labels=LabelSet(("a", "b"), ignore_index=1))
    with pytest.raises(ValueError, match="needs labels"):
        SegmentationTask()
    with pytest.raises(ValueError, match="unknown loss"):
        SegmentationTask(labels=LabelSet.generic(3), loss=LossConfig("nope"))


@pytest.mark.parametrize(
    ("optimizer", "loss"),
    [("sgd", "ce"), ("adamw", [{"name": "ohem", "weight": 1.0}, {"name": "dice", "weight": 0.5}])],
)
def test_fit_logs_loss_lr_metrics_and_panels(tmp_path, optimizer, loss):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    task = _task(
        optimizer=OptimizerConfig(optimizer, warmup_iters=1),
        loss=LossConfig(loss, class_weights="cityscapes"),
        log_images=2,
    )
    trainer = _trainer(tmp_path)
    trainer.fit(task, datamodule=DemoDataModule(**SMALL))
    metrics = trainer.callback_metrics
    for key in ("train/loss", "train/lr", "val/loss", "val/mIoU", "val/pixel_acc", "val/mean_acc"):
        assert key in metrics, key
    assert "val/iou_road" in metrics and "val/iou_traffic_light" in metrics
    assert math.isfinite(float(metrics["train/loss"]))
    # the scheduler stepped per iteration: after 2 of 2 steps the poly factor is 0
    assert trainer.lr_scheduler_configs[0].interval == "step"
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.0)
    # image / ground truth / prediction panels went to TensorBoard
    events = list(Path(trainer.logger.log_dir).glob("events.out.tfevents.*"))
    acc = EventAccumulator(str(events[0]))
    acc.Reload()
    assert "val/predictions" in acc.Tags()["images"]


@pytest.mark.parametrize("channels_last", [None, True])
def test_channels_last_option_sets_weight_and_input_layout(tmp_path, channels_last):
    task = _task(channels_last=channels_last)
    layouts: list[bool] = []
    task.model.conv1.register_forward_pre_hook(
        lambda mod, args: layouts.append(args[0].is_contiguous(memory_format=torch.channels_last))
    )
    trainer = _trainer(tmp_path, max_steps=1, limit_val_batches=0)
    trainer.fit(task, datamodule=DemoDataModule(**SMALL))
    expected = bool(channels_last)  # auto (None) means off on CPU
    assert task.model.conv1.weight.is_contiguous(memory_format=torch.channels_last) is expected
    assert layouts == [expected]
    assert math.isfinite(float(trainer.callback_metrics["train/loss"]))


def test_predict_step_returns_label_maps():
    task = _task().eval()
    image = torch.randn(2, 3, 40, 72)
    with torch.no_grad():
        out = task.predict_step({"image": image, "name": ["a", "b"], "path": ["a.png", "b.png"]}, 0)
    assert out["pred"].dtype == torch.int64 and out["pred"].shape == (2, 40, 72)
    assert out["name"] == ["a", "b"] and out["path"] == ["a.png", "b.png"]
    assert int(out["pred"].max()) < 19


def test_flip_eval_goes_through_inference_module():
    task = _task(eval_protocol=EvalProtocol(flip=True)).eval()
    image = torch.randn(1, 3, 32, 64)
    with torch.no_grad():
        flipped = task.evaluate_logits(image)
        plain = task.model(image)
        manual = plain + torch.flip(task.model(torch.flip(image, dims=[3])), dims=[3])
    from hrseg.models import upsample_logits

    ref = upsample_logits(manual / 2, (32, 64))
    assert flipped.shape == (1, 19, 32, 64)
    torch.testing.assert_close(flipped, ref, atol=1e-5, rtol=1e-4)


def test_eval_scales_in_whole_mode_are_honoured_as_in_predict():
    """``eval_protocol`` mode whole with scales and no flip averages the scales, like ``hrseg predict``."""
    from hrseg.deploy import Segmenter
    from hrseg.metadata import ModelMeta

    task = _task(eval_protocol=EvalProtocol(scales=(0.5, 1.0))).eval()
    image = torch.rand(1, 3, 40, 72)
    seg = Segmenter(
        task.model,
        ModelMeta("hrnetv2_w18_small_v1", LabelSet.generic(19)),
        protocol=EvalProtocol(mode="whole", scales=(0.5, 1.0)),
        fast=False,
    )
    with torch.no_grad():
        multi = task.evaluate_logits(seg.normalize(image))
        plain = task.model(seg.normalize(image))
    from hrseg.models import upsample_logits

    assert not torch.allclose(multi, upsample_logits(plain, (40, 72)), atol=1e-3)
    torch.testing.assert_close(multi, seg._run(image, "logits"), atol=1e-6, rtol=1e-5)


def test_pretrained_weights_load_at_setup_and_missing_file_fails(tmp_path):
    source = _task()
    path = tmp_path / "weights.pth"
    torch.save(source.model.state_dict(), path)
    task = _task(weights=str(path))
    assert not torch.equal(task.model.last_layer[3].weight, source.model.last_layer[3].weight)
    task.setup("fit")  # no trainer: no Lightning checkpoint will overwrite, so the weights load
    assert torch.equal(task.model.last_layer[3].weight, source.model.last_layer[3].weight)
    with pytest.raises(FileNotFoundError):
        _task(weights=str(tmp_path / "missing.pth")).setup("fit")


def test_viz_helpers_colour_overlay_and_figures():
    from hrseg.colors import colorize, overlay
    from hrseg.viz import figure_to_array, plot_confusion_matrix, plot_per_class_iou

    palette = [(10, 20, 30), (200, 100, 0)]
    mask = np.array([[0, 1], [255, 7]])
    rgb = colorize(mask, palette)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 2, 3)
    assert tuple(rgb[0, 0]) == (10, 20, 30) and tuple(rgb[0, 1]) == (200, 100, 0)
    assert tuple(rgb[1, 0]) == (0, 0, 0) and tuple(rgb[1, 1]) == (0, 0, 0)  # ignore and out of range
    image = np.full((2, 2, 3), 100, dtype=np.uint8)
    blended = overlay(image, mask, palette, alpha=0.5)
    assert tuple(blended[0, 1]) == (150, 100, 50) and tuple(blended[1, 0]) == (100, 100, 100)
    cm = torch.tensor([[3, 1], [0, 4]])
    for fig in (
        plot_confusion_matrix(cm, ["a", "b"]),
        plot_per_class_iou(torch.tensor([0.75, 0.8]), ["a", "b"]),
    ):
        arr = figure_to_array(fig)
        assert arr.ndim == 3 and arr.shape[-1] == 3


def test_smp_baseline_head_group_and_full_size_logits():
    task = _task(model="smp:FPN:resnet18", optimizer=OptimizerConfig(head_lr_mult=10.0)).eval()
    head_ids = {id(p) for p in task.model.segmentation_head.parameters()}
    assert {id(p) for p in task.parameter_groups()[1]["params"]} == head_ids
    with torch.no_grad():
        out = task.predict_step({"image": torch.randn(1, 3, 64, 96), "name": ["x"]}, 0)
    assert out["pred"].shape == (1, 64, 96) and out["path"] == ["x"]


class _PoisonBatches(L.Callback):
    """Fill the images of chosen training batches with NaN (an injected fault) and snapshot the weights."""

    def __init__(self, poisoned: set[int]) -> None:
        self.poisoned = poisoned
        self.unchanged: dict[int, bool] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._before = {k: v.clone() for k, v in pl_module.model.state_dict().items()}
        if batch_idx in self.poisoned:
            batch["image"].fill_(float("nan"))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        after = pl_module.model.state_dict()
        self.unchanged[batch_idx] = all(torch.equal(after[k], v) for k, v in self._before.items())


def test_a_nan_batch_is_skipped_and_counted(tmp_path):
    from hrseg.data import DemoDataModule

    dm = DemoDataModule(**{**SMALL, "num_train": 8})
    task = _task(nonfinite_patience=2)
    poison = _PoisonBatches({1})
    trainer = _trainer(tmp_path, max_steps=4, limit_val_batches=0, callbacks=[poison])
    with pytest.warns(UserWarning, match=r"non-finite loss at step 1 .*samples \['demo_train_"):
        trainer.fit(task, datamodule=dm)
    assert task.nonfinite_steps == 1
    assert poison.unchanged == {0: False, 1: True, 2: False, 3: False}  # only the NaN step left weights alone
    assert all(torch.isfinite(v).all() for v in task.model.state_dict().values() if v.is_floating_point())


def test_consecutive_nan_batches_stop_with_the_step_and_samples_named(tmp_path):
    from hrseg.data import DemoDataModule
    from hrseg.task import NonFiniteLossError

    dm = DemoDataModule(**{**SMALL, "num_train": 8})
    task = _task(nonfinite_patience=2)
    trainer = _trainer(tmp_path, max_steps=4, limit_val_batches=0, callbacks=[_PoisonBatches({1, 2})])
    with pytest.raises(NonFiniteLossError, match=r"2 consecutive .* the last at step \d+ .*samples \['demo_"):
        trainer.fit(task, datamodule=dm)
    assert task.nonfinite_steps == 2


def test_non_finite_weights_are_never_saved(tmp_path):
    from hrseg.task import NonFiniteLossError

    task = _task()
    trainer = _trainer(tmp_path, max_steps=1, limit_val_batches=0)
    trainer.fit(task, datamodule=DemoDataModule(**SMALL))
    with torch.no_grad():
        task.model.last_layer[3].bias[0] = float("nan")
    with pytest.raises(NonFiniteLossError, match=r"last_layer\.3\.bias"):
        trainer.save_checkpoint(tmp_path / "nan.ckpt")
    assert not (tmp_path / "nan.ckpt").exists()


def test_the_model_summary_counts_flops_on_an_example_image() -> None:
    """Lightning's summary runs the network once on ``example_input_array`` (0 FLOPs without one): one image
    of the model's channels; the example is no hyper-parameter, so checkpoints and loading are as before."""
    from lightning.pytorch.utilities.model_summary import ModelSummary

    task = SegmentationTask(model_options={"in_channels": 4}, labels=LabelSet.generic(3), log_images=0)
    assert tuple(task.example_input_array.shape) == (1, 4, 64, 64)
    task.train()
    summary = ModelSummary(task)
    assert summary.total_flops > 1e6  # HRNetV2-W18-Small-v1 at 64x64: ~0.13 GFLOPs
    assert task.training  # the summary's eval-mode forward left the mode as it was
    assert "example_input_array" not in task.hparams


def test_the_example_image_suits_the_size_divisor() -> None:
    """Encoders that need multiples of their stride (smp: 32) get a side they accept."""
    from hrseg.task import _example_input

    class Strided(torch.nn.Module):
        in_channels, size_divisor, min_export_size = 1, 48, 48

    assert tuple(_example_input(Strided()).shape) == (1, 1, 96, 96)
    assert tuple(_example_input(torch.nn.Identity()).shape) == (1, 3, 64, 64)  # no capabilities: RGB
