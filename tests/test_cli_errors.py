"""Everyday mistakes through the real ``hrseg`` command line: one line, no traceback, the file named.

Each row is a command a newcomer could type, the exit status it must end with (2: the command line cannot
run; 1: an input cannot be used) and the words the single ``hrseg <cmd>: error: ...`` line must contain. The
rows run in this process through :func:`hrseg.commands.main` (one import of torch and Lightning for all of
them); a few run as real ``python -m hrseg`` processes as well.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

# imported at collection: Lightning binds its log handlers to the real stderr, not to one test's capture
import hrseg.commands.lightning  # noqa: F401
from hrseg.commands import main

SHIPPED = "cityscapes/hrnetv2_w48"  # one of the shipped configs every "unknown config" error must list
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Broken and wrong inputs: garbage, a truncated zip, a pickle holding an object, a plain state dict."""
    root = tmp_path_factory.mktemp("mistakes")
    garbage = root / "garbage.ckpt"
    garbage.write_bytes(os.urandom(2048))
    objects = root / "objects.ckpt"
    torch.save({"state_dict": {}, "extra": argparse.Namespace(a=1)}, objects)
    truncated = root / "truncated.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(64, 64)}}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:300])
    plain = root / "hrnet_w18_small_v1_cityscapes.pth"  # weights only, as released checkpoints are
    torch.save({"conv1.weight": torch.zeros(64, 3, 3, 3)}, plain)
    not_a_run = root / "not_a_run"
    not_a_run.mkdir()
    images = root / "images"
    images.mkdir()
    Image.new("RGB", (64, 32)).save(images / "street.png")
    return {
        "root": root,
        "garbage": garbage,
        "objects": objects,
        "truncated": truncated,
        "plain": plain,
        "not_a_run": not_a_run,
        "images": images,
        "missing": root / "missing.ckpt",
    }


# (argv with {name} placeholders for the files above, exit status, words the error line contains)
MISTAKES: list[tuple[str, int, list[str]]] = [
    ("frobnicate", 2, ["unknown command", "fit"]),
    # configs
    ("fit --config demoo", 2, ["'demoo' not found", SHIPPED]),
    ("validate -c cityscapes/hrnetv2_w99", 2, ["hrnetv2_w99", SHIPPED]),
    (
        "predict --config demoo --ckpt_path {garbage} --input {images} --output {root}/o",
        2,
        ["demoo", SHIPPED],
    ),
    ("data check -c demoo", 2, ["demoo", SHIPPED]),
    # LightningCLI options
    ("fit --config demo --optimizer SGD", 2, ["--optimizer"]),
    ("fit --config demo --lr_scheduler StepLR", 2, ["--lr_scheduler"]),
    ("fit --config demo --trainer.max_epochs many", 2, ["max_epochs", "many"]),
    ("fit --config demo --model.model hrnetv2_w99", 2, ["hrnetv2_w99", "hrnetv2_w48"]),
    (
        "fit --config demo --model.compile true --model.compile_backend nope",
        2,
        ["unknown compile backend 'nope'", "inductor"],
    ),
    # checkpoints given to the trainer commands
    ("test --config demo --ckpt_path {garbage}", 1, ["{garbage}", "not a PyTorch checkpoint"]),
    ("test --config demo --ckpt_path {truncated}", 1, ["{truncated}", "corrupt or truncated"]),
    ("validate --config demo --ckpt_path {missing}", 1, ["{missing}", "not found"]),
    (
        "validate --config demo --ckpt_path {plain}",
        1,
        ["{plain}", "not a Lightning checkpoint", "--model.weights"],
    ),
    ("test --config demo --ckpt_path {objects}", 1, ["{objects}", "argparse.Namespace", "trusted"]),
    # predict / export
    ("predict --ckpt_path {garbage} --input {images} --output {root}/o", 1, ["{garbage}", "not a PyTorch"]),
    ("predict --ckpt_path {missing} --input {images} --output {root}/o", 1, ["{missing}", "not found"]),
    ("predict --input {images} --output {root}/o", 2, ["--ckpt_path"]),
    ("predict --ckpt_path {garbage} --input {images} --output {root}/o --trainer.devices 2", 2, ["--config"]),
    ("predict --ckpt_path {garbage} --input {images} --output {root}/o --window 512by1024", 2, ["HxW"]),
    ("export --format onnx", 2, ["--ckpt_path"]),
    ("export --ckpt_path {garbage} --size 256", 2, ["--size", "HxW"]),
    ("export --ckpt_path {truncated} --output {root}/m.onnx", 1, ["{truncated}", "corrupt or truncated"]),
    ("export --ckpt_path {missing}", 1, ["{missing}", "not found"]),
    ("serve --port 8080", 2, ["--ckpt_path"]),
    # report / evaluate / data
    ("report {root}/no_such_run", 1, ["run folder not found", "{root}/no_such_run"]),
    ("report {not_a_run}", 1, ["{not_a_run}", "not a run folder", "config.yaml"]),
    ("evaluate --pred {images} --gt {root}/missing_gt", 1, ["--gt", "{root}/missing_gt", "folder not found"]),
    ("evaluate --pred {root}/missing_pred --gt {images}", 1, ["--pred", "folder not found"]),
    ("data synth --layout voc --num 2", 2, ["--output"]),
    ("data synth --layout voc --num 2 --output {root}/v --size 8x8", 2, ["--size", "16x16"]),
]


def _fill(text: str, files: dict[str, Path]) -> str:
    return text.format(**{k: str(v) for k, v in files.items()})


def _check_one_line(err: str, prefix: str, words: list[str]) -> None:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if ": error: " in line]
    assert len(lines) == 1, err
    line = lines[0]
    assert line.startswith(prefix), line  # "hrseg fit: error: ...", "hrseg data check: error: ..."
    assert line == err.strip().splitlines()[-1], f"the error line is not the last one:\n{err}"
    for word in words:
        assert word in line, f"{word!r} missing from: {line}"


@pytest.mark.parametrize(("argv", "code", "words"), MISTAKES, ids=[m[0].split(" {")[0] for m in MISTAKES])
def test_mistake_is_one_line(argv, code, words, files, capsys, monkeypatch):
    monkeypatch.chdir(files["root"])  # any run folder a mistake could create lands here
    args = _fill(argv, files).split()
    try:
        status = main(args)
    except SystemExit as exc:  # argparse's usage errors exit; `python -m hrseg` passes the status on
        status = exc.code
    err = capsys.readouterr().err
    assert status == code, err
    prefix = "hrseg: error:" if args[0] == "frobnicate" else f"hrseg {args[0]}"
    _check_one_line(err, prefix, [_fill(w, files) for w in words])


def test_failed_launch_leaves_no_run_folder(files, tmp_path, capsys):
    """A recipe without its data stops before training; the version folder it opened is removed again."""
    root = tmp_path / "runs"
    args = [
        "fit",
        "--config",
        "cityscapes/hrnetv2_w18_small_v1",
        f"--data.init_args.root={tmp_path / 'no_cityscapes'}",
        "--model.weights=null",
        "--trainer.devices=1",
        "--trainer.strategy=auto",
        "--trainer.sync_batchnorm=false",
        f"--trainer.default_root_dir={root}",
        *QUIET,
    ]
    assert main(args) == 1
    _check_one_line(capsys.readouterr().err, "hrseg fit", ["Cityscapes root directory not found"])
    assert not root.exists() or not any(root.rglob("version_*")), sorted(root.rglob("*"))


def test_validating_without_weights_warns(tmp_path, capsys):
    args = [
        "validate",
        "--config",
        "demo",
        "--data.init_args.num_val=2",
        "--data.init_args.image_size=[32, 64]",
        "--data.init_args.eval_batch_size=2",
        f"--trainer.default_root_dir={tmp_path}",
        *QUIET,
    ]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "hrseg validate: warning: no --ckpt_path and no --model.weights" in err
    assert "untrained" in err


@pytest.mark.slow  # three interpreter start-ups (one imports Lightning): ~40 s on 2 busy cores
def test_mistakes_in_real_processes(files):
    """``python -m hrseg``: the same single line and exit status from a real process."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    cases = [
        (["fit", "--config", "demoo"], 2, "hrseg fit", ["demoo", SHIPPED]),
        (["report", str(files["not_a_run"])], 1, "hrseg report", ["not a run folder"]),
        (
            ["test", "--config", "demo", "--ckpt_path", str(files["garbage"])],
            1,
            "hrseg test",
            [str(files["garbage"])],
        ),
    ]
    for argv, code, prefix, words in cases:
        proc = subprocess.run(
            [sys.executable, "-m", "hrseg", *argv],
            cwd=files["root"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == code, proc.stderr
        _check_one_line(proc.stderr, prefix, words)
