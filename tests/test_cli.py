"""The real ``hrseg`` CLI on the demo config: fit, validate / test / predict from the checkpoint, resume."""

from __future__ import annotations

import argparse
import csv
import logging
import math
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from hrseg.commands import main
from hrseg.commands.configs import CONFIG_DIR, list_configs, resolve_config
from hrseg.optim import poly_warmup_factor

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
    # the task's groups read as plain fields, not as class_path / init_args pairs
    assert "  loss:\n    terms: ce\n" in out and "  optimizer:\n    name: adamw\n" in out
    assert "init_args:\n      terms" not in out and "class_path: hrseg.optim" not in out


class _Collect(logging.Handler):
    """Keeps the messages of the records it is handed."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_a_fit_prints_no_lightning_advert_and_counts_flops(tmp_path, capsys):
    """One tiny ``hrseg fit`` (a step, no validation): Lightning's own lines come through (``GPU available``),
    its "💡 Tip" advertisement for litlogger does not; the model summary counts the network's FLOPs on the
    task's example input (without one Lightning prints "Total FLOPs: 0")."""
    collect = _Collect()
    lightning_log = logging.getLogger("lightning.pytorch")  # its modules' records all reach this logger
    lightning_log.addHandler(collect)
    tiny = [
        "--data.init_args.num_train=2",
        "--data.init_args.image_size=[32, 64]",
        "--data.init_args.batch_size=2",
        "--trainer.max_steps=1",
        "--trainer.limit_val_batches=0",
        "--trainer.num_sanity_val_steps=0",
        "--trainer.enable_progress_bar=false",
        "--model.log_images=0",
        f"--trainer.default_root_dir={tmp_path}",
    ]
    try:
        assert main(["fit", "--config", "demo", *tiny]) == 0
    finally:
        lightning_log.removeHandler(collect)
    out = capsys.readouterr()
    logged = "\n".join(collect.messages)
    assert "GPU available" in logged  # the handler sees Lightning's rank-zero messages
    for text in (logged, out.out, out.err):
        assert "litlogger" not in text and "Tip:" not in text
    flops = re.search(r"Total FLOPs: *([0-9.]+) *([KMGT]?)", out.out + logged)
    assert flops is not None, out.out[-2000:]
    assert float(flops.group(1)) > 0 and flops.group(2) in "KMGT"


@pytest.mark.slow
def test_demo_fit_then_validate_test_predict(tmp_path, capsys):
    root = tmp_path / "run"
    fit = _args(
        root, "--trainer.max_epochs=6", "--model.optimizer.warmup_iters=0", "--model.optimizer.lr=0.005"
    )
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
    labels = hparams["labels"]  # linked from the data, stored as one value
    assert len(labels["class_names"]) == 19 and labels["class_names"][0] == "road"
    assert len(labels["palette"]) == 19 and hparams["model"] == "hrnetv2_w18_small_v1"

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

    assert viz_main([str(root / "csv" / "version_0"), "--output", str(tmp_path / "figures")]) == 0
    for name in ("predictions.png", "learning_curve.png"):
        assert (tmp_path / "figures" / name).stat().st_size > 0


@pytest.mark.slow
def test_resume_from_last_continues_step_optimizer_and_schedule(tmp_path, capsys):
    root = tmp_path / "run"
    common = ["--trainer.max_steps=8", "--model.optimizer.warmup_iters=0", "--model.optimizer.lr=0.004"]
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


def _parsers() -> dict[str, Callable[[], argparse.ArgumentParser]]:
    from hrseg.commands import data, evaluate, export, predict, report, serve

    return {
        "evaluate": evaluate._parser,
        "predict": predict._parser,
        "export": export._parser,
        "serve": serve._parser,
        "report": report.build_parser,
        "data": data.build_parser,
    }


def _option_strings() -> dict[str, list[list[str]]]:
    """``"<command>"`` -> the option strings of each of its actions (``data``'s subcommands included)."""
    found: dict[str, list[list[str]]] = {}
    for command, make in _parsers().items():
        todo = [(command, make())]
        while todo:
            name, parser = todo.pop()
            for action in parser._actions:
                if isinstance(action, argparse._SubParsersAction):
                    todo += [(f"{name} {sub}", p) for sub, p in action.choices.items()]
                elif action.option_strings:
                    found.setdefault(name, []).append(list(action.option_strings))
    return found


def test_every_option_has_one_spelling():
    """No aliases, no hidden options: each action has one long name (``-c`` / ``-h`` are the short forms)."""
    for command, actions in _option_strings().items():
        for names in actions:
            long = [n for n in names if n.startswith("--")]
            # --flip / --no-flip is one switch (BooleanOptionalAction), not two spellings
            if len(long) == 2 and long[1] == "--no-" + long[0][2:]:
                long = long[:1]
            assert len(long) == 1, f"hrseg {command}: {names} are several spellings of one option"
    for make in _parsers().values():
        assert all(a.help != argparse.SUPPRESS for a in make()._actions), "a hidden option"


def test_one_concept_has_one_name_across_commands():
    """The same words in another order are the same concept: ``--num-val`` everywhere, never ``--val-num``."""
    names = {n for actions in _option_strings().values() for group in actions for n in group if n[:2] == "--"}
    by_words: dict[frozenset[str], set[str]] = {}
    for name in names:
        by_words.setdefault(frozenset(name[2:].replace("_", "-").split("-")), set()).add(name)
    assert not [group for group in by_words.values() if len(group) > 1]
    # the shared vocabulary of docs/cli.md
    every: dict[str, set[str]] = {}
    for command, actions in _option_strings().items():
        every.setdefault(command.split()[0], set()).update(n for group in actions for n in group)
    assert all("--ckpt_path" in every[c] for c in ("predict", "export", "serve", "report"))
    assert all("--output" in every[c] for c in ("predict", "export", "report", "data"))
    assert {"--num-calib", "--num-val"} <= every["export"]


@pytest.mark.parametrize(
    ("command", "argv"),
    [
        ("predict", ["--ckpt", "a.ckpt"]),
        ("predict", ["--window", "512", "1024"]),
        ("predict", ["--mode", "multiscale"]),
        ("predict", ["--data.predict_path", "x"]),
        ("export", ["--out", "m.onnx"]),
        ("export", ["--height", "128"]),
        ("export", ["--quantize", "int8"]),
        ("export", ["--calib-num", "2"]),
        ("serve", ["--ckpt", "a.ckpt"]),
        ("report", ["r", "--checkpoint", "c"]),
        ("data", ["synth", "--layout", "voc", "--num", "1", "--out", "d"]),
    ],
)
def test_other_spellings_are_usage_errors(command, argv, capsys):
    with pytest.raises(SystemExit) as exc:
        _parsers()[command]().parse_args(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "error:" in err, err


def test_serve_needs_the_checkpoint(capsys):
    from hrseg.commands import serve

    with pytest.raises(SystemExit) as exc:
        serve.main(["--port", "8000"])
    assert exc.value.code == 2
    assert "the following arguments are required: --ckpt_path" in capsys.readouterr().err


def test_sizes_are_one_hxw_value():
    parser = _parsers()["predict"]()
    assert parser.parse_args(["--window", "512x1024", "--stride", "300x600"]).window == (512, 1024)
    assert _parsers()["export"]().parse_args(["--size", "128x192"]).size == (128, 192)


def test_predict_config_passes_lightning_options_through(capsys):
    """``predict --config`` accepts what LightningCLI accepts: --print_config, --data <class>."""
    with pytest.raises(SystemExit) as exc:
        main(
            [
                "predict",
                "-c",
                "demo",
                "--data",
                "FolderDataModule",
                "--data.init_args.images_dir=x",
                "--data.init_args.masks_dir=y",
                "--data.init_args.num_classes=3",
                "--print_config",
            ]
        )
    assert exc.value.code in (0, None)
    out = capsys.readouterr().out
    assert "FolderDataModule" in out and "images_dir: x" in out and "num_classes: 3" in out


@pytest.mark.slow
def test_one_optimiser_switch_keeps_poly_warmup_and_head_lr(tmp_path):
    """``--model.optimizer.name sgd`` trains with the task's schedule; LightningCLI's --optimizer is gone."""
    from hrseg.commands.lightning import run_lightning_cli

    cli = run_lightning_cli(["--config", "demo"], run=False)
    assert "optimizer" not in cli.parser.groups  # no second switch that could replace the schedule
    lr, mult, warmup, steps = 0.02, 10.0, 2, 4
    root = tmp_path / "run"
    args = _args(
        root,
        "--model.optimizer.name=sgd",
        f"--model.optimizer.lr={lr}",
        f"--model.optimizer.head_lr_mult={mult}",
        f"--model.optimizer.warmup_iters={warmup}",
        "--model.optimizer.poly_power=0.9",
        f"--trainer.max_steps={steps}",
        "--trainer.limit_val_batches=1",
        "--data.init_args.image_size=[32, 64]",
    )
    assert main(["fit", *args]) == 0
    ckpt = torch.load(root / "csv" / "version_0" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == steps
    groups = ckpt["optimizer_states"][0]["param_groups"]
    assert len(groups) == 2 and all("momentum" in g and "nesterov" in g for g in groups)  # SGD, two groups
    factor = poly_warmup_factor(steps, steps, 0.9, warmup)
    assert [g["lr"] for g in groups] == pytest.approx([lr * factor, lr * mult * factor])
    assert ckpt["lr_schedulers"][0]["base_lrs"] == pytest.approx([lr, lr * mult])
    lrs = [v for _, v in _values(_rows(root, 0), "train/lr")]
    expected = [lr * poly_warmup_factor(s, steps, 0.9, warmup) for s in range(steps)]
    assert lrs == pytest.approx(expected, rel=1e-5)  # warmup ramp, then the poly decay, per step
