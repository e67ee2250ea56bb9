"""The task's grouped hyper-parameters (loss, optimizer, eval protocol); older flat spellings still load."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from hrseg.eval_protocol import EvalProtocol
from hrseg.losses import LossConfig, OhemCrossEntropy
from hrseg.optim import OptimizerConfig
from hrseg.task import SegmentationTask, upgrade_hparams

#: what an older hrseg wrote for an OCR fine-tune: every group as flat keys
FLAT: dict[str, Any] = {
    "loss": "ohem",
    "ohem_thresh": 0.7,
    "ohem_min_kept": 131072,  # the default: left out of the term
    "class_weights": "cityscapes",
    "loss_weights": [2.0],  # the demo model has one training output
    "optimizer": "adamw",
    "lr": 0.003,
    "momentum": 0.8,
    "weight_decay": 1e-4,
    "nesterov": False,
    "head_lr_mult": 5.0,
    "warmup_iters": 7,
    "poly_power": 1.0,
    "eval_mode": "slide",
    "eval_window": [32, 48],
    "eval_flip": True,
}
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
        LossConfig([{"name": "ohem", "threshold": 0.7}]).build(19, 255)
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
        SegmentationTask(loss="ohem")  # type: ignore[arg-type]


def test_ohem_options_live_in_the_term() -> None:
    """OHEM's threshold and minimum are options of the ohem term (no second, task-level copy)."""
    task = SegmentationTask(loss=LossConfig([{"name": "ohem", "thresh": 0.6, "min_kept": 50}]))
    ohem = task.criterion.terms["ohem"]
    assert isinstance(ohem, OhemCrossEntropy) and (ohem.thresh, ohem.min_kept) == (0.6, 50)
    default = SegmentationTask(loss=LossConfig("ohem")).criterion.terms["ohem"]
    assert isinstance(default, OhemCrossEntropy) and (default.thresh, default.min_kept) == (0.9, 131072)


def test_flat_hparams_of_older_checkpoints_fold_into_their_groups() -> None:
    upgraded = upgrade_hparams({**FLAT, "model": "hrnetv2_w18_small_v1", "num_classes": 19})
    assert upgraded == {
        "model": "hrnetv2_w18_small_v1",
        "num_classes": 19,
        "loss": LOSS.to_dict(),
        "optimizer": OPTIMIZER.to_dict(),
        "eval_protocol": PROTOCOL.to_dict(),
    }
    # today's form passes through unchanged
    assert upgrade_hparams(upgraded) == upgraded
    # a term that sets its own threshold keeps it
    own = LossConfig.from_hparams({"loss": [{"name": "ohem", "thresh": 0.5}], "ohem_thresh": 0.7})
    assert own.terms == [{"name": "ohem", "weight": 1.0, "thresh": 0.5}]


def test_a_checkpoint_stores_the_groups_and_an_older_one_loads_with_its_values(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    ckpt = torch.load(tiny_checkpoint, map_location="cpu", weights_only=True)
    hparams = ckpt["hyper_parameters"]
    # the demo config's groups, stored as plain data
    assert hparams["optimizer"]["name"] == "adamw" and hparams["loss"]["terms"] == "ce"
    assert not {"lr", "ohem_thresh", "class_weights", "loss_weights", "eval_mode"} & set(hparams)
    for key in ("loss", "optimizer", "eval_protocol"):
        del hparams[key]
    hparams.update(FLAT)
    old = tmp_path / "flat.ckpt"
    torch.save(ckpt, old)

    # the record beside the weights, read without loading the tensors; a damaged file is named
    from hrseg.checkpoint import CheckpointError, read_lightning_record

    assert read_lightning_record(old)["hyper_parameters"]["lr"] == 0.003
    (tmp_path / "damaged.ckpt").write_bytes(old.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=r"damaged\.ckpt"):
        read_lightning_record(tmp_path / "damaged.ckpt")

    task = SegmentationTask.from_checkpoint(old)
    assert (task.loss_config, task.optimizer_config, task.eval_protocol) == (LOSS, OPTIMIZER, PROTOCOL)
    assert task.loss_weights == [2.0]
    state = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items()}
    assert all(torch.equal(v, state[k]) for k, v in task.model.state_dict().items())


def test_flat_command_line_options_give_the_grouped_config(capsys: pytest.CaptureFixture[str]) -> None:
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
    flat = [
        "--model.optimizer",
        "sgd",
        "--model.lr=0.02",
        "--model.head_lr_mult",
        "10",
        "--model.loss=ohem",
        "--model.class_weights=cityscapes",
        "--model.eval_flip=true",
    ]
    small = [
        "--data.init_args.num_train=2",
        "--data.init_args.num_val=2",
        "--data.init_args.image_size=[32, 64]",
    ]

    def task_of(args: list[str]) -> SegmentationTask:
        model = run_lightning_cli(["--config", "demo", *small, *args], run=False).model
        assert isinstance(model, SegmentationTask)
        return model

    new = task_of(grouped)
    assert "deprecated" not in capsys.readouterr().err
    assert new.optimizer_config == OptimizerConfig(
        "sgd", 0.02, weight_decay=1e-4, head_lr_mult=10.0, warmup_iters=20
    )
    assert new.loss_config == LossConfig("ohem", "cityscapes") and new.eval_protocol.flip
    old = task_of(flat)
    err = capsys.readouterr().err
    assert err.count("is deprecated") == 6 and "--model.lr is deprecated; use --model.optimizer.lr" in err
    assert (old.optimizer_config, old.loss_config, old.eval_protocol) == (
        new.optimizer_config,
        new.loss_config,
        new.eval_protocol,
    )
    with pytest.raises(UsageError, match=r"--model.ohem_thresh is now an option of the ohem loss term"):
        run_lightning_cli(["--config", "demo", "--model.ohem_thresh=0.7"], run=False)


def test_a_config_file_in_the_flat_layout_is_refused_in_one_line_naming_the_file(tmp_path: Path) -> None:
    from hrseg.commands.lightning import run_lightning_cli
    from hrseg.commands.options import UsageError

    old = tmp_path / "mine.yaml"
    old.write_text("model:\n  loss: ohem\n  ohem_min_kept: 1000\n  lr: 0.02\n  warmup_iters: 5\n")
    with pytest.raises(UsageError) as err:
        run_lightning_cli(["fit", "--config", str(old)], run=False)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{old}: the model section uses the flat options")
    for moved in ("lr -> optimizer.lr", "warmup_iters -> optimizer.warmup_iters", "loss -> loss.terms"):
        assert moved in message
    assert "ohem_min_kept -> an option of the ohem term" in message
