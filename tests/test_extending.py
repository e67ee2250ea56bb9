"""docs/extending.md runs: its files are copied out of the page into a package and used through ``hrseg``.

A file of the page is the code block right after a ``<!-- extending: NAME.py -->`` marker. Each test writes
every marked file into one temporary package and runs the real command in a fresh process, with the package
named in ``HRSEG_PLUGINS`` (so the plugin loader is what finds the head).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "extending.md"
PACKAGE = "hrseg_extending_example"
_MARKED = re.compile(r"<!-- extending: (?P<name>[\w.]+\.py) -->\s*```python\n(?P<code>.*?)```", re.S)


def doc_files() -> dict[str, str]:
    """File name -> source of every marked block of docs/extending.md."""
    return {m["name"]: m["code"] for m in _MARKED.finditer(DOC.read_text())}


@pytest.fixture
def plugin_env(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """Every file of the page as one package under ``tmp_path``; the environment that loads it as plugins."""
    package = tmp_path / "plugins" / PACKAGE
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    for name, code in doc_files().items():
        (package / name).write_text(code)
    modules = [f"{PACKAGE}.{Path(name).stem}" for name in doc_files()]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(package.parent), str(REPO), env.get("PYTHONPATH", "")])
    env["HRSEG_PLUGINS"] = ",".join(modules)
    return env, tmp_path


def _hrseg(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "hrseg", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_the_page_has_the_toy_head() -> None:
    assert "toy_head.py" in doc_files()
    assert "## A new head" in DOC.read_text()


def test_toy_head_fits_and_predicts(
    plugin_env: tuple[dict[str, str], Path], tiny_fit_args: list[str]
) -> None:
    """The toy head of the page: two fit steps of the demo, then predict with the checkpoint written."""
    import torch

    from hrseg.data import generate_scene

    env, root = plugin_env
    _hrseg(
        env,
        root,
        "fit",
        "--config",
        "demo",
        "--model.model",
        "hrnetv2_w18_small_v1_toy",
        "--model.model_options",
        "{toy_dropout: 0.1}",
        "--trainer.default_root_dir",
        str(root),
        "--trainer.logger",
        "lightning.pytorch.loggers.CSVLogger",
        "--trainer.logger.save_dir",
        str(root),
        *tiny_fit_args,
    )
    (ckpt,) = sorted(root.rglob("last.ckpt"))
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    head_keys = sorted(k for k in state if k.startswith("model.toy_classifier."))
    assert head_keys == [
        "model.toy_classifier.1.bias",
        "model.toy_classifier.1.weight",
    ]  # flat, as documented

    from PIL import Image

    images = root / "images"
    images.mkdir()
    for i in range(2):
        Image.fromarray(generate_scene(i, size=(48, 80))[0]).save(images / f"scene{i}.png")
    out = root / "pred"
    _hrseg(env, root, "predict", "--ckpt_path", str(ckpt), "--input", str(images), "--output", str(out))
    assert sorted(p.name for p in out.glob("*_trainIds.png")) == [
        "scene0_trainIds.png",
        "scene1_trainIds.png",
    ]


def test_a_plugin_that_does_not_import_is_one_line(tmp_path: Path) -> None:
    env = dict(os.environ, HRSEG_PLUGINS="no_such_hrseg_plugin")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-m", "hrseg", "data", "--help"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "plugin 'no_such_hrseg_plugin' named in HRSEG_PLUGINS failed to import" in proc.stderr


def test_toy_dataset_synth_check_fit_predict(
    plugin_env: tuple[dict[str, str], Path], tiny_trainer_args: list[str]
) -> None:
    """The toy dataset of the page: a generated tree, checked, two fit steps on it, predictions."""
    import torch

    assert "toy_dataset.py" in doc_files() and "## A new dataset" in DOC.read_text()
    env, root = plugin_env
    data = root / "toy"
    synth = _hrseg(env, root, "data", "synth", "--layout", "toy", "--output", str(data), "--num", "6")
    assert f"hrseg data check --datamodule toy --root {data}" in synth.stdout
    assert sorted(p.name for p in (data / "val").iterdir()) == ["0000.jpg", "0000_label.png"]
    check = _hrseg(env, root, "data", "check", "--datamodule", "toy", "--root", str(data), "--no-progress")
    assert "3 classes" in check.stdout and "OK: no problems found" in check.stdout
    (data / "train" / "0001_label.png").unlink()  # a missing mask is named
    bad = subprocess.run(
        [sys.executable, "-m", "hrseg", "data", "check", "--datamodule", "toy", "--root", str(data)],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1 and "0001.jpg: no mask 0001_label.png" in bad.stdout
    (data / "train" / "0001.jpg").unlink()
    _hrseg(
        env,
        root,
        "fit",
        "--config",
        "demo",
        "--data",
        "toy",
        "--data.init_args.root",
        str(data),
        "--data.init_args.batch_size",
        "2",
        *tiny_trainer_args,
        "--trainer.default_root_dir",
        str(root / "runs"),
    )
    (ckpt,) = sorted((root / "runs").rglob("last.ckpt"))
    labels = torch.load(ckpt, map_location="cpu", weights_only=True)["hyper_parameters"]["labels"]
    assert labels["name"] == "toy" and labels["class_names"] == ["background", "square", "disc"]
    out = root / "pred"
    _hrseg(
        env,
        root,
        "predict",
        "--ckpt_path",
        str(ckpt),
        "--input",
        str(data / "val" / "*.jpg"),
        "--output",
        str(out),
    )
    assert sorted(p.name for p in out.glob("*_trainIds.png")) == ["0000_trainIds.png"]
