"""Every shipped config parses (``--print_config``) and builds its model, DataModule and Trainer on generated
data written in the real Cityscapes / VOC / PASCAL-Context / LIP layouts by ``hrseg data synth``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch.strategies import DDPStrategy

from hrseg.commands import main
from hrseg.commands.configs import CONFIG_DIR, list_configs
from hrseg.commands.lightning import run_lightning_cli

CONFIGS = list_configs()
EXPECTED = {
    "demo": ("hrnetv2_w18_small_v1", "DemoDataModule", 19),
    "demo_ocr": ("hrnetv2_w18_small_v1_ocr", "DemoDataModule", 19),
    "cityscapes/hrnetv2_w48": ("hrnetv2_w48", "CityscapesDataModule", 19),
    "cityscapes/hrnetv2_w48_ohem": ("hrnetv2_w48", "CityscapesDataModule", 19),
    "cityscapes/hrnetv2_w18": ("hrnetv2_w18", "CityscapesDataModule", 19),
    "cityscapes/hrnetv2_w18_small_v2": ("hrnetv2_w18_small_v2", "CityscapesDataModule", 19),
    "cityscapes/hrnetv2_w18_small_v1": ("hrnetv2_w18_small_v1", "CityscapesDataModule", 19),
    "voc/hrnetv2_w48": ("hrnetv2_w48", "VOCDataModule", 21),
    "voc/hrnetv2_w18": ("hrnetv2_w18", "VOCDataModule", 21),
    "cityscapes/hrnetv2_w48_ocr": ("hrnetv2_w48_ocr", "CityscapesDataModule", 19),
    "cityscapes/hrnetv2_w48_ocr_ohem": ("hrnetv2_w48_ocr", "CityscapesDataModule", 19),
    "voc/hrnetv2_w48_ocr": ("hrnetv2_w48_ocr", "VOCDataModule", 21),
    "pascal_context_59/hrnetv2_w48": ("hrnetv2_w48", "PascalContext59DataModule", 59),
    "pascal_context_59/hrnetv2_w48_ocr": ("hrnetv2_w48_ocr", "PascalContext59DataModule", 59),
    "pascal_context_60/hrnetv2_w48": ("hrnetv2_w48", "PascalContext60DataModule", 60),
    "pascal_context_60/hrnetv2_w48_ocr": ("hrnetv2_w48_ocr", "PascalContext60DataModule", 60),
    "lip/hrnetv2_w48": ("hrnetv2_w48", "LIPDataModule", 20),
    "lip/hrnetv2_w48_ocr": ("hrnetv2_w48_ocr", "LIPDataModule", 20),
}
#: the official HRNet-OCR-branch recipes of the other datasets: (max_steps, lr, head_lr_mult); the others
#: train 20k / 40k / 120k iterations at lr 0.01 with one lr for every parameter
OFFICIAL_OTHER = {
    "pascal_context_59/hrnetv2_w48": (62400, 0.001, 10.0),
    "pascal_context_59/hrnetv2_w48_ocr": (62400, 0.001, 10.0),
    "pascal_context_60/hrnetv2_w48": (62400, 0.004, 1.0),
    "pascal_context_60/hrnetv2_w48_ocr": (62400, 0.001, 10.0),
    "lip/hrnetv2_w48": (114150, 0.007, 1.0),
    "lip/hrnetv2_w48_ocr": (114150, 0.007, 1.0),
}
#: configs whose align_corners is true: the official HRNet-OCR branch's default, unless its file says False
ALIGN_CORNERS = {
    *(n for n in EXPECTED if n.startswith("cityscapes/") and "_ocr" in n),
    *(n for n in OFFICIAL_OTHER if n != "pascal_context_59/hrnetv2_w48"),
}


@pytest.fixture(scope="module")
def roots(tmp_path_factory) -> dict[str, Path]:
    """Tiny Cityscapes, VOC(+aug), PASCAL-Context (labels converted from .mat) and LIP trees."""
    base = tmp_path_factory.mktemp("synth")
    common = ["--num", "3", "--num-val", "2", "--size", "64x128", "--no-progress"]
    cs, voc, ctx, lip = base / "cityscapes", base / "voc", base / "pascal_context", base / "lip"
    assert main(["data", "synth", "--layout", "cityscapes", "--output", str(cs), *common]) == 0
    assert main(["data", "synth", "--layout", "voc", "--output", str(voc), *common]) == 0
    assert main(["data", "synth", "--layout", "pascal_context_59", "--output", str(ctx), *common]) == 0
    convert = ["data", "convert", "--datamodule", "pascal_context_59", "--root", str(ctx), "--no-progress"]
    assert main(convert) == 0
    assert main(["data", "synth", "--layout", "lip", "--output", str(lip), *common]) == 0
    return {"cityscapes": cs, "voc": voc, "pascal_context_59": ctx, "pascal_context_60": ctx, "lip": lip}


def _overrides(name: str, roots: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> list[str]:
    family = name.split("/")[0]
    if family == "cityscapes":  # through the config's ${oc.env:CITYSCAPES_ROOT,...} interpolation
        monkeypatch.setenv("CITYSCAPES_ROOT", str(roots[family]))
        return ["--data.init_args.num_workers=0"]
    if family in roots:
        return [f"--data.init_args.root={roots[family]}", "--data.init_args.num_workers=0"]
    return [
        "--data.init_args.num_train=2",
        "--data.init_args.num_val=2",
        "--data.init_args.image_size=[64, 128]",
    ]


def test_every_shipped_config_is_covered():
    assert set(CONFIGS) == set(EXPECTED)
    assert (CONFIG_DIR.parent.parent / "configs").resolve() == CONFIG_DIR  # the top-level symlink


@pytest.mark.parametrize("name", CONFIGS)
def test_config_prints(name, roots, capsys, monkeypatch):
    with pytest.raises(SystemExit) as exc:
        main(["fit", "--config", name, *_overrides(name, roots, monkeypatch), "--print_config"])
    assert exc.value.code in (0, None)
    out = capsys.readouterr().out
    assert f"model: {EXPECTED[name][0]}" in out


@pytest.mark.parametrize("name", CONFIGS)
def test_config_builds_model_data_and_trainer(name, roots, monkeypatch):
    model_name, dm_name, num_classes = EXPECTED[name]
    cli = run_lightning_cli(["--config", name, *_overrides(name, roots, monkeypatch)], run=False)
    task, dm, trainer = cli.model, cli.datamodule, cli.trainer
    assert type(dm).__name__ == dm_name
    assert task.hparams.model == model_name
    assert (
        task.labels == dm.labels and dm.labels.num_classes == num_classes
    )  # linked, not repeated in the YAML
    assert task.hparams.labels == dm.labels.to_dict()
    if not name.startswith("demo"):  # the GPU recipes: DDP + SyncBN, SGD poly over a fixed iteration budget
        assert model_name in str(trainer.default_root_dir)  # ${..model.model} interpolation in the YAML
        assert isinstance(trainer.strategy, DDPStrategy)
        steps, lr, head_lr_mult = OFFICIAL_OTHER.get(name, (trainer.max_steps, 0.01, 1.0))
        assert trainer.max_steps == steps and steps in (20000, 40000, 62400, 114150, 120000)
        assert task.optimizer_config.name == "sgd" and task.optimizer_config.lr == lr
        assert task.optimizer_config.head_lr_mult == head_lr_mult
        assert task.hparams.weights is not None
        with pytest.raises(FileNotFoundError):  # a missing pretrained file fails loudly, never silently
            task.setup("fit")
    if name.startswith("cityscapes/"):
        assert task.loss_config.class_weights == "cityscapes"
    assert task.model.num_classes == num_classes
    if model_name.endswith("_ocr"):  # official HRNet-OCR criterion: 0.4 x aux + 1.0 x main
        assert task.loss_weights == [0.4, 1.0]
    assert task.hparams.align_corners == (name in ALIGN_CORNERS)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].dtype == torch.float32 and batch["mask"].dtype == torch.int64
    crop = dm.crop_size or batch["image"].shape[-2:]
    assert tuple(batch["image"].shape[-2:]) == tuple(crop)
    assert batch["image"].shape[0] == min(dm.batch_size, len(dm.train_dataset))


NEW_DATASET_CONFIGS = [
    n for n in CONFIGS if n.split("/")[0] in ("pascal_context_59", "pascal_context_60", "lip")
]


@pytest.mark.parametrize("name", NEW_DATASET_CONFIGS)
def test_two_fit_steps_on_generated_data(name, roots, tmp_path, monkeypatch, capsys, tiny_trainer_args):
    """Each PASCAL-Context / LIP recipe trains two steps of W18-Small on small crops of its real layout."""
    small = "hrnetv2_w18_small_v1_ocr" if name.endswith("_ocr") else "hrnetv2_w18_small_v1"
    args = [
        "fit",
        "--config",
        name,
        *_overrides(name, roots, monkeypatch),
        *tiny_trainer_args,
        f"--model.model={small}",
        "--model.weights=null",
        "--trainer.accelerator=cpu",
        "--trainer.devices=1",
        "--trainer.strategy=auto",
        "--trainer.sync_batchnorm=false",
        f"--trainer.default_root_dir={tmp_path}",
        "--data.init_args.batch_size=1",  # three generated training images: two steps of one
        "--data.init_args.crop_size=[64, 64]",
    ]
    if name.startswith("lip/"):  # and a validation through LIP's 473x473 test resize (eval_size)
        args += ["--data.init_args.train_resize=[64, 64]", "--trainer.check_val_every_n_epoch=1"]
    assert main(args) == 0
    assert "2 steps" in capsys.readouterr().out
    assert bool(list(tmp_path.rglob("*.ckpt"))) == name.startswith("lip/")  # the best-mIoU checkpoint


@pytest.mark.parametrize("name", ["cityscapes/hrnetv2_w18_small_v1", "voc/hrnetv2_w48_ocr"])
def test_interpolations_follow_command_line_overrides(name, roots, capsys, monkeypatch):
    """``--model.model X`` moves the run folder too: interpolations resolve after the command line."""
    family = name.split("/")[0]
    other = "hrnetv2_w18_small_v2" if family == "cityscapes" else "hrnetv2_w18_ocr"
    with pytest.raises(SystemExit) as exc:
        main(
            [
                "fit",
                "--config",
                name,
                *_overrides(name, roots, monkeypatch),
                "--model.model",
                other,
                "--print_config",
            ]
        )
    assert exc.value.code in (0, None)
    out = capsys.readouterr().out
    assert f"default_root_dir: runs/{family}/{other}" in out, out
    assert f"model: {other}" in out
    assert "${" not in out  # nothing left unresolved
    cli = run_lightning_cli(
        ["--config", name, *_overrides(name, roots, monkeypatch), f"--model.model={other}"], run=False
    )
    assert cli.trainer.default_root_dir == f"runs/{family}/{other}"
    if family == "cityscapes":  # ${oc.env:CITYSCAPES_ROOT,...}: the environment still fills the data root
        assert str(cli.datamodule.root) == str(roots["cityscapes"])
