"""Exact resume: data order, augmentations and the loader position survive a kill -9.

Fast tests check the pieces (sampler, per-sample augmentation seeds, loader state, atomic checkpoint writes);
the slow one kills ``hrseg fit --config demo`` (shrunk) with SIGKILL at a random mid-run step (the seed is
printed; ``HRSEG_KILL_SEED=<seed>`` replays it), resumes it with ``--ckpt_path last`` and requires the final
weights to be bitwise those of an uninterrupted run.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from hrseg.callbacks import LastCheckpoint
from hrseg.checkpoint_io import AtomicCheckpointIO
from hrseg.data import DemoDataModule
from hrseg.data.resume import ResumableSampler, sample_seed


@pytest.fixture(autouse=True)
def _no_global_seed(monkeypatch):
    """In-process fits earlier in the session leave ``PL_GLOBAL_SEED`` set; these tests assume seed 0."""
    monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)


def _datamodule(**kwargs) -> DemoDataModule:
    args = {"num_train": 10, "num_val": 2, "image_size": (32, 64), "crop_size": (24, 40), "batch_size": 2}
    dm = DemoDataModule(**{**args, **kwargs})
    dm.setup("fit")
    return dm


def _images(loader) -> list[torch.Tensor]:
    return [b["image"] for b in loader]


def test_training_order_and_augmentations_are_a_function_of_seed_and_epoch(monkeypatch):
    monkeypatch.setenv("PL_GLOBAL_SEED", "7")
    first = _images(_datamodule().train_dataloader())
    torch.manual_seed(123)  # global RNG state plays no part
    again = _images(_datamodule().train_dataloader())
    assert len(first) == 5
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    loader = _datamodule().train_dataloader()
    loader.sampler.set_epoch(1)
    assert not torch.equal(_images(loader)[0], first[0])
    monkeypatch.setenv("PL_GLOBAL_SEED", "8")
    assert not torch.equal(_images(_datamodule().train_dataloader())[0], first[0])


def test_sample_augmentation_does_not_depend_on_batch_position():
    dm = _datamodule()
    dataset = dm.train_dataset
    key = (3, sample_seed(0, 2, 3))
    a = dataset[key]["image"]
    dataset[(5, sample_seed(0, 2, 5))]  # draws in between must not matter
    assert torch.equal(dataset[key]["image"], a)
    assert not torch.equal(dataset[(3, sample_seed(0, 3, 3))]["image"], a)


def test_loader_state_resumes_mid_epoch_and_moves_to_next_epoch():
    dm = _datamodule()
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(2)
    full = _images(loader)
    resumed = _datamodule().train_dataloader()
    resumed.load_state_dict({"seed": 0, "epoch": 2, "batches": 3, "batch_size": 2})
    rest = _images(resumed)
    assert len(rest) == 2 and all(torch.equal(a, b) for a, b in zip(full[3:], rest, strict=True))
    assert len(_images(resumed)) == 5  # the skip applies once
    # without a trainer the loader counts what it yielded; a finished epoch resumes at the next one
    counting = _datamodule().train_dataloader()
    it = iter(counting)
    next(it)
    next(it)
    assert counting.state_dict() == {"seed": 0, "epoch": 0, "batches": 2, "batch_size": 2}
    list(it)
    assert counting.state_dict()["epoch"] == 1 and counting.state_dict()["batches"] == 0


def test_datamodule_state_restores_the_next_train_loader():
    dm = _datamodule()
    dm.load_state_dict({"train_loader": {"seed": 0, "epoch": 1, "batches": 4, "batch_size": 2}})
    loader = dm.train_dataloader()
    assert loader.sampler.epoch == 1 and len(_images(loader)) == 1


def test_sampler_shards_cover_the_epoch_once():
    dataset = list(range(10))
    keys = [k for rank in (0, 1) for k in ResumableSampler(dataset, num_replicas=2, rank=rank, seed=3)]
    assert sorted(i for i, _ in keys) == list(range(10))
    assert all(s == sample_seed(3, 0, i) for i, s in keys)


def test_atomic_checkpoint_io_replaces_without_leftovers(tmp_path):
    path = tmp_path / "sub" / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": 1}, path)
    io.save_checkpoint({"step": 2}, path)
    assert torch.load(path, weights_only=True) == {"step": 2}
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]

    class Boom:
        def __reduce__(self):
            raise RuntimeError("interrupted mid-write")

    with pytest.raises(RuntimeError, match="mid-write"):
        io.save_checkpoint({"step": 3, "x": Boom()}, path)
    assert torch.load(path, weights_only=True) == {"step": 2}  # the old file survives a failed write
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]


class _RecordingIO(AtomicCheckpointIO):
    """The checkpoint plugin of a real fit, noting the step and file name of every save it writes."""

    def __init__(self) -> None:
        super().__init__()
        self.saved: list[tuple[int, str]] = []

    def save_checkpoint(self, checkpoint: dict, path: Any, storage_options: Any | None = None) -> None:
        super().save_checkpoint(checkpoint, path, storage_options)
        self.saved.append((int(checkpoint["global_step"]), Path(path).name))


def test_last_checkpoint_is_written_every_n_steps_and_after_every_validation(tmp_path: Path) -> None:
    """A fit of 12 steps, 7 per epoch: last.ckpt at steps 5 and 10 and after the epoch's validation (7)."""
    import lightning as L

    from hrseg.task import SegmentationTask

    dm = DemoDataModule(num_train=14, num_val=2, image_size=(32, 64), batch_size=2)
    io = _RecordingIO()
    trainer = L.Trainer(
        max_steps=12,
        accelerator="cpu",
        logger=False,
        plugins=[io],
        callbacks=[LastCheckpoint(dirpath=tmp_path, every_n_train_steps=5)],
        num_sanity_val_steps=0,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(SegmentationTask(model="hrnetv2_w18_small_v1", labels=dm.labels, log_images=0), dm)
    steps = [step for step, name in io.saved]
    assert {name for _, name in io.saved} == {"last.ckpt"}
    assert steps[:3] == [5, 7, 10], io.saved  # every 5 steps, and after the validation that ends epoch 0
    assert set(steps) <= {5, 7, 10, 12}, io.saved  # nothing else (12: the end of the run)
    assert _step(tmp_path / "last.ckpt") == steps[-1]  # the file on disk is the latest save
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


# ------------------------------------------------------------------------------------------ end to end
TINY = [
    "fit",
    "--config=demo",
    "--data.init_args.num_train=16",
    "--data.init_args.num_val=4",
    "--data.init_args.image_size=[32,64]",
    "--data.init_args.crop_size=[24,48]",
    "--data.init_args.batch_size=4",
    "--data.init_args.eval_batch_size=2",
    "--model.log_images=0",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--trainer.accelerator=cpu",
    "--trainer.max_epochs=3",  # 4 steps per epoch, 12 in all
    "--trainer.log_every_n_steps=1",
    "--last_checkpoint.every_n_train_steps=1",
]
TOTAL_STEPS = 12
ENV = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "OMP_NUM_THREADS": "1"}
# the random kill points of these tests come from one printed seed; set it to replay a failure
SEED_ENV = "HRSEG_KILL_SEED"


def kill_seed() -> int:
    """``$HRSEG_KILL_SEED``, or a fresh random seed (print it: a failure is replayed by setting it)."""
    return int(os.environ.get(SEED_ENV) or random.SystemRandom().randrange(2**32))


def _fit(root: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "hrseg", *TINY, f"--trainer.default_root_dir={root}", *extra]
    return subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-4000:]
    return out


def _step(path: Path) -> int:
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["global_step"])
    except Exception:  # not written yet
        return -1


def _final_state(root: Path, version: int) -> dict:
    ckpt = root / "lightning_logs" / f"version_{version}" / "checkpoints" / "last.ckpt"
    data = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert data["global_step"] == TOTAL_STEPS
    return data["state_dict"]


@pytest.mark.slow
def test_sigkill_at_random_step_then_resume_is_bitwise_identical(tmp_path, uninterrupted_fit):
    seed = kill_seed()
    target = random.Random(seed).randint(2, TOTAL_STEPS - 3)  # mid-epoch or at an epoch boundary
    print(f"{SEED_ENV}={seed}: SIGKILL at step {target}")
    root = tmp_path / "killed"
    proc = _fit(root)
    last = root / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    killed_at = -1
    while proc.poll() is None:
        killed_at = _step(last) if last.exists() else -1
        if killed_at >= target:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"the run ended before step {target} ({SEED_ENV}={seed})"
    assert 0 < _step(last) < TOTAL_STEPS  # whatever the kill interrupted, last.ckpt is whole
    out = _finish(_fit(root, "--ckpt_path=last"))
    assert "Resuming from" in out
    expected, resumed = _final_state(uninterrupted_fit, 0), _final_state(root, 1)
    differing = [k for k, v in expected.items() if not torch.equal(resumed[k], v)]
    where = f"killed at step {killed_at} ({SEED_ENV}={seed})"
    assert not differing, f"{where}: {len(differing)} tensors differ, e.g. {differing[:3]}"
