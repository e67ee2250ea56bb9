"""Faults injected for real: a SIGKILL while a large checkpoint is written, a corrupt image met mid-fit.

The kill points are random; the seed is printed and replayed with ``HRSEG_KILL_SEED`` (as in test_resume).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from test_resume import ENV, SEED_ENV, _step, kill_seed

from hrseg.commands.data import main as data_main

CHECKPOINT_MB = 24
WRITER = textwrap.dedent(
    f"""
    import itertools, sys, torch
    from hrseg.checkpoint_io import AtomicCheckpointIO
    io = AtomicCheckpointIO()
    weights = torch.zeros({CHECKPOINT_MB} * 2**20 // 4)
    for step in itertools.count(int(sys.argv[2])):
        io.save_checkpoint({{"global_step": step, "weights": weights.fill_(step)}}, sys.argv[1])
        print(step, flush=True)
    """
)


def _saved_step(path: Path) -> int:
    """The step of a whole checkpoint written by WRITER (every weight equals it)."""
    data = torch.load(path, map_location="cpu", weights_only=True)
    step = int(data["global_step"])
    assert data["weights"].numel() == CHECKPOINT_MB * 2**20 // 4 and bool((data["weights"] == step).all())
    return step


@pytest.mark.slow
def test_sigkill_while_a_large_checkpoint_is_written_leaves_the_previous_one_and_no_litter(
    tmp_path: Path,
) -> None:
    """Three writers, each killed at a random moment of a 24 MB write: no truncated file, no litter."""
    seed = kill_seed()
    rng = random.Random(seed)
    print(f"{SEED_ENV}={seed}")
    path = tmp_path / "checkpoints" / "last.ckpt"
    completed = -1
    for round_ in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), str(completed + 1)],
            env=ENV,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        first = int(proc.stdout.readline())  # one whole save of this process: its duration sets the offsets
        start = time.perf_counter()
        second = int(proc.stdout.readline())
        duration = time.perf_counter() - start
        offset = rng.uniform(0.0, duration)
        time.sleep(offset)  # somewhere inside the next write (torch.save, fsync or the rename)
        proc.send_signal(signal.SIGKILL)
        rest = proc.stdout.read().split()
        proc.wait(timeout=60)
        proc.stdout.close()
        assert proc.returncode == -signal.SIGKILL
        completed = int(rest[-1]) if rest else second
        where = f"round {round_}, {offset:.3f} s into a {duration:.3f} s write ({SEED_ENV}={seed})"
        step = _saved_step(path)  # loadable and whole
        # the last reported save, or the one the kill interrupted after its rename
        assert step in (completed, completed + 1) and step > first, where
        assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"], where  # no temporary file left
        completed = step


EPOCHS = 4
FIT = [
    "fit",
    f"--trainer.max_epochs={EPOCHS}",
    "--trainer.num_sanity_val_steps=0",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--trainer.accelerator=cpu",
    f"--trainer.check_val_every_n_epoch={EPOCHS}",
    "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
    "--model.model=hrnetv2_w18_small_v1",
    "--model.log_images=0",
    "--last_checkpoint.every_n_train_steps=1",
]


@pytest.mark.slow
def test_a_fit_that_meets_a_corrupt_image_stops_naming_it_and_resumes_from_last_ckpt(tmp_path: Path) -> None:
    """An image goes bad on disk while ``hrseg fit`` runs: the run stops at it naming the file, and after
    the file is repaired ``--ckpt_path last`` continues from the periodic checkpoint to the end."""
    data = tmp_path / "data"
    assert data_main(["synth", "--layout", "folder", "--output", str(data), "--num", "8"]) == 0
    train = [line.strip() for line in (data / "train.txt").read_text().splitlines() if line.strip()]
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        "seed_everything: 7\n"
        "data:\n  class_path: hrseg.data.FolderDataModule\n  init_args:\n"
        f"    images_dir: {data / 'images'}\n    masks_dir: {data / 'masks'}\n    num_classes: 19\n"
        f"    train_list: {data / 'train.txt'}\n    val_list: {data / 'val.txt'}\n"
        "    crop_size: [32, 48]\n    batch_size: 2\n    eval_batch_size: 1\n"
    )
    root = tmp_path / "run"
    total = EPOCHS * (len(train) // 2)
    args = [
        sys.executable,
        "-m",
        "hrseg",
        *FIT,
        f"--config={cfg}",
        f"--trainer.default_root_dir={root}",
        f"--trainer.logger.save_dir={root}",
    ]
    proc = subprocess.Popen(args, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    last = root / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    victim = next((data / "images").glob(f"{Path(train[-1]).stem}*"))
    good = victim.read_bytes()
    while proc.poll() is None and _step(last) < 3:
        time.sleep(0.05)
    if proc.poll() is not None:
        pytest.fail(f"the fit ended before its third step:\n{proc.communicate()[0][-3000:]}")
    victim.write_bytes(good[: len(good) // 3])  # truncated on disk mid-run: read during the next epoch
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode not in (0, None), out[-3000:]
    # one line naming the sample and the file, no traceback
    assert f"hrseg fit: error: bad sample '{victim.stem}'" in out and str(victim) in out, out[-3000:]
    assert "corrupt" in out and "Traceback" not in out, out[-3000:]
    stopped = _step(last)
    assert 3 <= stopped < total, out[-3000:]  # the periodic last.ckpt of the interrupted epoch

    victim.write_bytes(good)
    resumed = subprocess.run(
        [*args, "--ckpt_path=last"], env=ENV, capture_output=True, text=True, timeout=900, check=False
    )
    log = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, log[-3000:]
    assert "Resuming from" in log
    final = root / "lightning_logs" / "version_1" / "checkpoints" / "last.ckpt"
    assert _step(final) == total


def test_a_save_removes_temporary_files_of_dead_writers_only(tmp_path: Path) -> None:
    """Where no unnamed temporary file is possible, a killed writer's named one goes at the next save."""
    from hrseg.checkpoint_io import AtomicCheckpointIO

    dead = subprocess.Popen(["true"])  # a pid that has exited
    dead.wait()
    stale = tmp_path / f".last.ckpt.{dead.pid}.tmp"
    live = tmp_path / f".last.ckpt.{os.getppid()}.tmp"  # a concurrent writer that still runs
    stale.write_bytes(b"partial")
    live.write_bytes(b"partial")
    AtomicCheckpointIO().save_checkpoint({"global_step": 1}, tmp_path / "last.ckpt")
    assert not stale.exists() and live.exists()
