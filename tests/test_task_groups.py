"""The task's grouped hyper-parameters (loss, optimizer, eval protocol): options, checkpoints, validation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hrseg.eval_protocol import EvalProtocol
from hrseg.losses import LossConfig, OhemCrossEntropy
from hrseg.metadata import get_label_set
from hrseg.optim import OptimizerConfig
from hrseg.task import SegmentationTask

#: an OCR-style fine-tune: every group away from its defaults
LOSS = LossConfig([{"name": "ohem", "weight": 1.0, "thresh": 0.7}], "cityscapes", [2.0])
OPTIMIZER = OptimizerConfig("adamw", 0.003, 0.8, 1e-4, False, 5.0, 7, 1.0)
PROTOCOL = EvalProtocol("slide", (32, 48), flip=True)


def test_groups_validate_early_and_round_trip_as_plain_data() -> None:
    import hrseg

    assert (hrseg.LossConfig, hrseg.OptimizerConfig, hrseg.EvalProtocol) == (
        LossConfig,
        OptimizerConfig,
        EvalProtocol,
    )
    for value in (LOSS, OPTIMIZER):
        data = json.loads(json.dumps(value.to_dict()))  # what a checkpoint holds: plain data
        assert type(value).from_dict(data) == value == type(value).coerce(data)
    with pytest.raises(ValueError, match="unknown loss 'nope'"):
        LossConfig("nope")
    with pytest.raises(ValueError, match=r"unknown option \['threshold'\] for loss 'ohem'"):
        LossConfig([{"name": "ohem", "threshold": 0.7}]).build(get_label_set("cityscapes"))
    with pytest.raises(ValueError, match="class-weight table 'kitti'"):
        LossConfig(class_weights="kitti")
    with pytest.raises(ValueError, match="unknown loss keys"):
        LossConfig.from_dict({"term": "ce"})
    with pytest.raises(ValueError, match="'sgd' or 'adamw'"):
        OptimizerConfig("adam")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="lr must be > 0"):
        OptimizerConfig(lr=0.0)
    with pytest.raises(ValueError, match="nesterov applies to SGD only"):
        OptimizerConfig("adamw", nesterov=True)
    with pytest.raises(TypeError, match=r"LossConfig\(terms=...\)"):
        SegmentationTask(labels="cityscapes", loss="ohem")  # type: ignore[arg-type]


def test_ohem_options_live_in_the_term() -> None:
    """OHEM's threshold and minimum are options of the ohem term (no second, task-level copy)."""
    task = SegmentationTask(
        labels="cityscapes", loss=LossConfig([{"name": "ohem", "thresh": 0.6, "min_kept": 50}])
    )
    ohem = task.criterion.terms["ohem"]
    assert isinstance(ohem, OhemCrossEntropy) and (ohem.thresh, ohem.min_kept) == (0.6, 50)
    default = SegmentationTask(labels="cityscapes", loss=LossConfig("ohem")).criterion.terms["ohem"]
    assert isinstance(default, OhemCrossEntropy) and (default.thresh, default.min_kept) == (0.9, 131072)


def test_a_checkpoint_stores_the_groups_and_loads_with_their_values(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    ckpt = torch.load(tiny_checkpoint, map_location="cpu", weights_only=True)
    hparams = ckpt["hyper_parameters"]
    # the demo config's groups, stored as plain data
    assert hparams["optimizer"]["name"] == "adamw" and hparams["loss"]["terms"] == "ce"
    assert not {"lr", "class_weights", "eval_mode"} & set(hparams)  # each group is one value
    hparams.update(loss=LOSS.to_dict(), optimizer=OPTIMIZER.to_dict(), eval_protocol=PROTOCOL.to_dict())
    tuned = tmp_path / "tuned.ckpt"
    torch.save(ckpt, tuned)

    # the record beside the weights, read without loading the tensors; a damaged file is named
    from hrseg.checkpoint import CheckpointError, read_lightning_record

    assert read_lightning_record(tuned)["hyper_parameters"]["optimizer"]["lr"] == 0.003
    (tmp_path / "damaged.ckpt").write_bytes(tuned.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=r"damaged\.ckpt"):
        read_lightning_record(tmp_path / "damaged.ckpt")

    task = SegmentationTask.from_checkpoint(tuned)
    assert (task.loss_config, task.optimizer_config, task.eval_protocol) == (LOSS, OPTIMIZER, PROTOCOL)
    assert task.loss_weights == [2.0]
    state = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items()}
    assert all(torch.equal(v, state[k]) for k, v in task.model.state_dict().items())


def test_grouped_command_line_options_give_the_config() -> None:
    from hrseg.commands.lightning import run_lightning_cli
    from hrseg.commands.options import UsageError

    grouped = [
        "--model.optimizer.name=sgd",
        "--model.optimizer.lr=0.02",
        "--model.optimizer.head_lr_mult=10",
        "--model.loss.terms=ohem",
        "--model.loss.class_weights=cityscapes",
        "--model.eval_protocol.flip=true",
    ]
    small = [
        "--data.init_args.num_train=2",
        "--data.init_args.num_val=2",
        "--data.init_args.image_size=[32, 64]",
    ]
    task = run_lightning_cli(["--config", "demo", *small, *grouped], run=False).model
    assert isinstance(task, SegmentationTask)
    assert task.optimizer_config == OptimizerConfig(
        "sgd", 0.02, weight_decay=1e-4, head_lr_mult=10.0, warmup_iters=20
    )
    assert task.loss_config == LossConfig("ohem", "cityscapes") and task.eval_protocol.flip
    # one spelling: a group's field is not also a task option
    with pytest.raises(UsageError, match="lr"):
        run_lightning_cli(["--config", "demo", *small, "--model.lr=0.02"], run=False)
