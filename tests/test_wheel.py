"""The release: the wheel and the sdist build offline, and the installed wheel works outside the checkout.

The wheel is installed into a fresh virtual environment under ``tmp_path``; its dependencies come from the
test's own environment through a ``.pth`` line naming that site-packages folder (site runs the ``.pth`` files
of its own site folders only, so the editable hrseg installed there is not importable in the new one). Then
``hrseg fit``, ``predict`` and ``export`` run with the working directory outside the checkout: configs, the
serve page and ``py.typed`` must be package data.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]

#: files every distribution must carry besides the modules
PACKAGE_DATA = (
    "hrseg/py.typed",
    "hrseg/serve/page.html",
    "hrseg/configs/demo.yaml",
    "hrseg/configs/voc/hrnetv2_w48.yaml",
)

#: where the fit writes, relative to the working directory outside the checkout
RUN_DIR = [
    "--trainer.default_root_dir=run",
    "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
    "--trainer.logger.save_dir=run",
]


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _source_copy(tmp_path: Path) -> Path:
    """The files a release is built from, copied out, so the build leaves nothing in the checkout."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / "hrseg", src / "hrseg", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return src


@pytest.mark.slow
def test_wheel_and_sdist_install_and_run_outside_the_checkout(
    tmp_path: Path, tiny_fit_args: list[str]
) -> None:
    src = _source_copy(tmp_path)
    dist = tmp_path / "dist"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    # setuptools' PEP 517 hooks directly: no `build` package and no network (the build needs setuptools only)
    build = "from setuptools import build_meta as b; b.build_wheel({d!r}); b.build_sdist({d!r})"
    _run([sys.executable, "-c", build.format(d=str(dist))], src, env)
    (wheel,) = dist.glob("*.whl")
    (sdist,) = dist.glob("*.tar.gz")
    assert wheel.name.startswith(f"hrseg-{VERSION}-") and sdist.name == f"hrseg-{VERSION}.tar.gz"

    wheel_files = set(zipfile.ZipFile(wheel).namelist())
    with tarfile.open(sdist) as tar:
        sdist_files = {name.removeprefix(f"hrseg-{VERSION}/") for name in tar.getnames()}
    for name in PACKAGE_DATA:
        assert name in wheel_files, f"the wheel lacks {name}"
        assert name in sdist_files, f"the sdist lacks {name}"
    configs = {n for n in REPO.joinpath("hrseg", "configs").rglob("*.yaml")}
    shipped = {f"hrseg/{p.relative_to(REPO / 'hrseg').as_posix()}" for p in configs}
    assert shipped <= wheel_files and shipped <= sdist_files
    assert not [n for n in wheel_files if n.startswith("tests/") or "__pycache__" in n]

    # a fresh environment; the dependencies are the test environment's, hrseg is the wheel's
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path, env)
    python = venv / "bin" / "python"
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            str(wheel),
        ],
        tmp_path,
        env,
    )
    site = Path(
        _run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], tmp_path, env
        ).strip()
    )
    (site / "_test_dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")

    work = tmp_path / "work"
    work.mkdir()
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["HF_HUB_OFFLINE"] = "1"
    where = _run(
        [str(python), "-c", "import hrseg; print(hrseg.__file__, hrseg.__version__)"], work, env
    ).split()
    assert Path(where[0]).is_relative_to(venv) and where[1] == VERSION, where
    hrseg = str(venv / "bin" / "hrseg")  # the console script of the wheel
    assert _run([hrseg, "--version"], work, env).strip() == f"hrseg {VERSION}"

    _run([hrseg, "fit", "--config", "demo", *tiny_fit_args, *RUN_DIR], work, env)
    ckpt = next((work / "run").rglob("last.ckpt"))
    _run(
        [hrseg, "data", "synth", "--layout", "folder", "--output", "scenes", "--num", "1", "--num-val", "1"],
        work,
        env,
    )
    images = work / "scenes" / "images"  # 2 scenes of 128x256 (train + val)
    _run(
        [
            hrseg,
            "predict",
            "--ckpt_path",
            str(ckpt),
            "--input",
            str(images),
            "--output",
            "preds",
            "--no-progress",
        ],
        work,
        env,
    )
    assert sorted(p.name for p in (work / "preds").glob("*_trainIds.png")) == sorted(
        f"{p.stem}_trainIds.png" for p in images.iterdir()
    )
    _run(
        [
            hrseg,
            "export",
            "--ckpt_path",
            str(ckpt),
            "--format",
            "onnx",
            "--output",
            "model.onnx",
            "--size",
            "64x64",
        ],
        work,
        env,
    )
    assert (work / "model.onnx").stat().st_size > 0
