"""Every shipped config parses (``--print_config``) and builds its model, DataModule and Trainer on generated
data that ``hrseg data synth`` writes in the real layouts (Cityscapes, VOC, ADE20K, COCO-Stuff,
PASCAL-Context, LIP)."""

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
    "ade20k/hrnetv2_w48": ("hrnetv2_w48", "ADE20KDataModule", 150),
    "ade20k/hrnetv2_w48_ocr": ("hrnetv2_w48_ocr", "ADE20KDataModule", 150),
    "cocostuff/hrnetv2_w48": ("hrnetv2_w48", "CocoStuff10kDataModule", 171),
    "cocostuff/hrnetv2_w48_ocr": ("hrnetv2_w48_ocr", "CocoStuff10kDataModule", 171),
    "pascal_context_59/hrnetv2_w48": ("hrnetv2_w48", "PascalContext59DataModule", 59),
    "pascal_context_59/hrnetv2_w48_ocr": ("hrnetv2_w48_ocr", "PascalContext59DataModule", 59),
    "pascal_context_60/hrnetv2_w48": ("hrnetv2_w48", "PascalContext60DataModule", 60),
    "pascal_context_60/hrnetv2_w48_ocr": ("hrnetv2_w48_ocr", "PascalContext60DataModule", 60),
    "lip/hrnetv2_w48": ("hrnetv2_w48", "LIPDataModule", 20),
    "lip/hrnetv2_w48_ocr": ("hrnetv2_w48_ocr", "LIPDataModule", 20),
}
#: the official schedule of each GPU recipe, by config name or else by family: (max_steps, lr, head_lr_mult)
RECIPES = {
    "cityscapes": ((40000, 120000), 0.01, 1.0),
    "voc": ((20000, 40000), 0.01, 1.0),
    "ade20k": ((151560,), 0.02, 1.0),  # 120 epochs x 1263 iterations
    "cocostuff": ((61820,), 0.001, 10.0),  # 110 epochs x 562 iterations, x10 on the head
    "pascal_context_59": ((62400,), 0.001, 10.0),  # 200 epochs x 312 iterations
    "pascal_context_60/hrnetv2_w48": ((62400,), 0.004, 1.0),  # the only official plain 60-class file
    "pascal_context_60/hrnetv2_w48_ocr": ((62400,), 0.001, 10.0),
    "lip": ((114150,), 0.007, 1.0),  # 150 epochs x 761 iterations
}


@pytest.fixture(scope="module")
def roots(tmp_path_factory) -> dict[str, Path]:
    """Tiny Cityscapes, VOC(+aug), ADE20K, COCO-Stuff 10k, PASCAL-Context (converted from .mat), LIP trees."""
    base = tmp_path_factory.mktemp("synth")
    common = ["--num", "3", "--num-val", "2", "--size", "64x128", "--no-progress"]
    layouts = {
        "cityscapes": "cityscapes",
        "voc": "voc",
        "ade20k": "ade20k",
        "cocostuff": "cocostuff10k",
        "pascal_context_59": "pascal_context_59",
        "lip": "lip",
    }
    for family, layout in layouts.items():
        assert main(["data", "synth", "--layout", layout, "--output", str(base / family), *common]) == 0
    ctx = base / "pascal_context_59"
    convert = ["data", "convert", "--datamodule", "pascal_context_59", "--root", str(ctx), "--no-progress"]
    assert main(convert) == 0
    return {**{family: base / family for family in layouts}, "pascal_context_60": ctx}


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
        steps, lr, head_lr_mult = RECIPES.get(name) or RECIPES[name.split("/")[0]]
        assert trainer.max_steps in steps
        assert task.optimizer_config.name == "sgd" and task.optimizer_config.lr == lr
        assert task.optimizer_config.head_lr_mult == head_lr_mult
        assert task.hparams.weights is not None
        with pytest.raises(FileNotFoundError):  # a missing pretrained file fails loudly, never silently
            task.setup("fit")
    if name.startswith("cityscapes/"):
        assert task.loss_config.class_weights == "cityscapes"
    if name.startswith(("ade20k/", "cocostuff/", "pascal_context", "lip/")):  # the official test pipeline
        protocol = task.eval_protocol
        assert protocol.mode == "official" and protocol.flip and protocol.base_size in (473, 520)
        published = (1.0,) if name.startswith("lip/") else (0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)
        assert protocol.scales == published
    assert task.model.num_classes == num_classes
    if model_name.endswith("_ocr"):  # official HRNet-OCR criterion: 0.4 x aux + 1.0 x main
        assert task.loss_weights == [0.4, 1.0]
        # the HRNet-OCR branch's OCR recipes use align_corners=True; its plain HRNetV2 rows, mmsegmentation's
        # VOC recipe and the demo use False
        assert task.hparams.align_corners == (not name.startswith(("voc/", "demo")))
    else:
        assert not task.hparams.align_corners
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


@pytest.mark.slow  # four CLI fits (model build + two steps each): ~8 s on an idle 2-core machine
def test_ade20k_and_cocostuff_recipes_fit_two_steps(roots, tiny_trainer_args, tmp_path, monkeypatch):
    """Each new recipe trains two steps on its generated layout (W18-Small, a small crop, the CPU)."""
    for name in (
        "ade20k/hrnetv2_w48",
        "ade20k/hrnetv2_w48_ocr",
        "cocostuff/hrnetv2_w48",
        "cocostuff/hrnetv2_w48_ocr",
    ):
        small = ["--model.model", "hrnetv2_w18_small_v1"]
        if name.endswith("_ocr"):  # a narrow OCR head keeps the two steps to about a second
            small = [
                *("--model.model", "hrnetv2_w18_small_v1_ocr"),
                *(
                    "--model.model_options.ocr_mid_channels",
                    "32",
                    "--model.model_options.ocr_key_channels",
                    "16",
                ),
            ]
        argv = [
            "fit",
            "--config",
            name,
            *_overrides(name, roots, monkeypatch),
            *tiny_trainer_args,
            *small,
            *("--model.weights", "null"),
            *("--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.strategy", "auto"),
            *("--trainer.sync_batchnorm", "false", "--trainer.logger", "lightning.pytorch.loggers.CSVLogger"),
            *("--trainer.logger.save_dir", str(tmp_path / name)),
            *("--trainer.default_root_dir", str(tmp_path / name)),
            *("--data.init_args.crop_size", "[32, 32]", "--data.init_args.batch_size", "2"),
            *("--trainer.max_epochs", "2"),  # 3 generated images make one batch of 2 per epoch
        ]
        cli = run_lightning_cli(argv)
        assert cli.trainer.global_step == 2, name
        assert cli.model.model.num_classes == EXPECTED[name][2]
