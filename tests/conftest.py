"""Shared fixtures: a tiny trained Lightning checkpoint and a folder of mixed test images.

The checkpoint is produced once per test session by the real CLI (``hrseg fit`` on generated demo scenes
for two steps) and shared between pytest-xdist workers through a file lock, so every test that needs "a
checkpoint a user would have" gets the same one cheaply.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
# No network in tests: the Hugging Face Hub is off (hub references resolve from the cache only; the cache is
# an empty folder of this run, see hub_cache below) and W&B never syncs.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["WANDB_MODE"] = "offline"


def _limit_threads() -> None:
    """Under pytest-xdist, give each worker its share of the cores (oversubscribed OpenMP threads crawl)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    if workers > 1:
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


_limit_threads()

#: two steps, nothing else: for any DataModule
TINY_TRAINER_ARGS = [
    "--trainer.max_steps",
    "2",
    "--trainer.max_epochs",
    "1",
    "--trainer.num_sanity_val_steps",
    "0",
    "--trainer.enable_progress_bar",
    "false",
    "--trainer.enable_model_summary",
    "false",
    "--model.log_images",
    "0",
]

#: two steps of the demo config on a few tiny scenes
TINY_FIT_ARGS = [
    *TINY_TRAINER_ARGS,
    "--data.init_args.num_train",
    "4",
    "--data.init_args.num_val",
    "2",
    "--data.init_args.batch_size",
    "2",
    "--data.init_args.eval_batch_size",
    "2",
    "--data.init_args.image_size",
    "[64, 96]",
]


def make_tiny_checkpoint(root: Path, *extra: str) -> Path:
    """Train the demo config for two steps under ``root`` (plus ``extra`` options); return ``last.ckpt``."""
    from hrseg.commands import main

    root.mkdir(parents=True, exist_ok=True)
    main(
        [
            "fit",
            "--config",
            "demo",
            "--trainer.default_root_dir",
            str(root),
            "--trainer.logger",
            "lightning.pytorch.loggers.CSVLogger",
            "--trainer.logger.save_dir",
            str(root),
            *TINY_FIT_ARGS,
            *extra,
        ]
    )
    found = sorted(root.rglob("last.ckpt"))
    if not found:
        raise RuntimeError(f"the tiny fit wrote no last.ckpt under {root}")
    return found[-1]


def shared_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A temporary folder common to all xdist workers of this run (the run's own folder without xdist)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session", autouse=True)
def hub_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty Hugging Face cache for the run: a developer's own cache never makes a test pass or fail.

    Tests that need cached hub files build them in their own folder and point ``HF_HUB_CACHE`` there.
    """
    cache = tmp_path_factory.mktemp("hf-hub-cache")
    os.environ["HF_HUB_CACHE"] = str(cache)
    return cache


@pytest.fixture(scope="session")
def shared_tmp_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder shared by all xdist workers of this run, for expensive artefacts built once (use a lock)."""
    return shared_tmp(tmp_path_factory)


@pytest.fixture(scope="session")
def tiny_fit_args() -> list[str]:
    """:data:`TINY_FIT_ARGS` for test modules (``from conftest import`` may find tests/data's)."""
    return list(TINY_FIT_ARGS)


@pytest.fixture(scope="session")
def tiny_trainer_args() -> list[str]:
    """:data:`TINY_TRAINER_ARGS` for test modules."""
    return list(TINY_TRAINER_ARGS)


@pytest.fixture(scope="session")
def tiny_fit() -> Callable[..., Path]:
    """:func:`make_tiny_checkpoint` for test modules (``from conftest import`` may find tests/data's)."""
    return make_tiny_checkpoint


def build_once(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], Path]) -> Path:
    """``build(folder)`` once per test run, shared by the xdist workers through a file lock; its path."""
    from filelock import FileLock

    shared = shared_tmp(tmp_path_factory)
    with FileLock(str(shared / f"{name}.lock")):
        done = shared / name / "PATH"
        if done.is_file() and Path(done.read_text()).exists():
            return Path(done.read_text())
        path = build(shared / name)
        done.write_text(str(path))
        return path


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Lightning ``.ckpt`` of ``hrnetv2_w18_small_v1`` (19 Cityscapes classes), two CLI training steps."""
    return build_once(tmp_path_factory, "tiny_checkpoint", make_tiny_checkpoint)


# 60 AdamW steps on 16 demo scenes: enough for confident logits (a two-step model's are nearly flat, so int8
# noise flips many argmaxes and agreement says little about the quantization)
TRAINED_FIT_ARGS = (
    "--trainer.max_steps",
    "60",
    "--trainer.max_epochs",
    "100",
    "--data.init_args.num_train",
    "16",
    "--data.init_args.batch_size",
    "4",
)


@pytest.fixture(scope="session")
def trained_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``hrnetv2_w18_small_v1`` after 60 demo training steps (TRAINED_FIT_ARGS); built once per run."""
    return build_once(
        tmp_path_factory, "trained_checkpoint", lambda root: make_tiny_checkpoint(root, *TRAINED_FIT_ARGS)
    )


@pytest.fixture(scope="session")
def uninterrupted_fit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The root of one uninterrupted ``test_resume.TINY`` fit, built once per run.

    The reference of the SIGKILL (test_resume) and SIGTERM (test_preemption) tests: how often ``last.ckpt``
    is written leaves the training as it is, so both compare their resumed runs with this one.
    """
    from test_resume import _finish, _fit

    def build(root: Path) -> Path:
        _finish(_fit(root))
        return root

    return build_once(tmp_path_factory, "uninterrupted_fit", build)


def write_mixed_images(folder: Path) -> dict[str, Path]:
    """Write images of mixed sizes and modes (RGB / L / RGBA / P PNGs, an RGB JPEG); returns name -> path."""
    from hrseg.data import generate_scene

    folder.mkdir(parents=True, exist_ok=True)
    specs = {
        "rgb_odd": ((67, 101), "RGB", ".png"),
        "grey": ((48, 80), "L", ".png"),
        "rgba": ((64, 64), "RGBA", ".png"),
        "palette": ((40, 72), "P", ".png"),
        "photo": ((90, 120), "RGB", ".jpg"),
    }
    out: dict[str, Path] = {}
    for i, (name, (size, mode, suffix)) in enumerate(specs.items()):
        rgb, _ = generate_scene(i, size=(max(size[0], 16), max(size[1], 16)))
        img = Image.fromarray(rgb)
        if mode == "RGBA":
            alpha = np.full(rgb.shape[:2], 200, dtype=np.uint8)
            img = Image.fromarray(np.dstack([rgb, alpha]))
        elif mode != "RGB":
            img = img.convert(mode)
        path = folder / f"{name}{suffix}"
        img.save(path)
        out[name] = path
    return out


@pytest.fixture
def demo_images_dir(tmp_path: Path) -> Path:
    """A folder of five demo scenes of mixed sizes and modes (RGB, L, RGBA, P PNGs and a JPEG)."""
    folder = tmp_path / "images"
    write_mixed_images(folder)
    return folder
