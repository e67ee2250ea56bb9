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

import numpy as np
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


# --- full and read-only disks ------------------------------------------------------------------------------

HRSEG_ENV = {**ENV, "PYTHONPATH": os.pathsep.join(sys.path)}


def _hrseg(*argv: str, file_size_limit: int | None = None, read_only: Path | None = None):
    """``python -m hrseg ARGV`` under a file-size limit (a disk that fills up) or with a read-only folder.

    ``RLIMIT_FSIZE`` makes a write past the limit fail with EFBIG, as a full disk fails with ENOSPC: the same
    path through hrseg. SIGXFSZ is ignored so that the write returns the error instead of killing the process.
    The read-only folder is a read-only bind mount in a private mount namespace (root ignores permission bits)
    or, for other users, a folder without write permission.
    """
    import resource

    def limit() -> None:
        if file_size_limit is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))

    command = [sys.executable, "-m", "hrseg", *argv]
    if read_only is not None:
        if os.geteuid() == 0:
            mount = 'mount --bind -o ro "$0" "$0" && exec "$@"'
            command = ["unshare", "--map-root-user", "--mount", "sh", "-c", mount, str(read_only), *command]
        else:
            read_only.chmod(0o555)
    try:
        return subprocess.run(
            command, env=HRSEG_ENV, capture_output=True, text=True, timeout=600, preexec_fn=limit, check=False
        )
    finally:
        if read_only is not None:
            read_only.chmod(0o755)


def _files(folder: Path) -> list[str]:
    """Every entry under ``folder``, hidden ones included (a temporary file left behind would show)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def _one_line(stderr: str, prefix: str, *words: str) -> str:
    assert "Traceback" not in stderr, stderr[-3000:]
    line = stderr.strip().splitlines()[-1]
    assert line.startswith(f"{prefix}: error: cannot write "), stderr[-3000:]
    for word in words:
        assert word in line, line
    return line


@pytest.mark.slow  # two short resumed fits (~20 s each on 2 busy cores)
def test_a_fit_whose_checkpoint_save_meets_a_full_disk_stops_in_one_line_and_resumes(
    tiny_checkpoint: Path, tiny_fit_args: list[str], tmp_path: Path
) -> None:
    """A resumed ``hrseg fit`` that cannot write its checkpoint: one line, the earlier one whole, a rerun
    with ``--ckpt_path last`` finishes."""
    root = tmp_path / "run"
    earlier = root / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    earlier.parent.mkdir(parents=True)
    earlier.write_bytes(tiny_checkpoint.read_bytes())  # two steps done; the fit below asks for a third
    fit = ["fit", "--config", "demo", *tiny_fit_args, "--trainer.max_steps", "3", "--trainer.max_epochs", "2"]
    fit += ["--trainer.default_root_dir", str(root), "--ckpt_path", "last"]
    fit += ["--trainer.logger", "lightning.pytorch.loggers.CSVLogger", "--trainer.logger.save_dir", str(root)]
    full = _hrseg(*fit, file_size_limit=2**20)  # the checkpoint is ~18 MB; logs and configs are small
    assert full.returncode == 1, full.stderr[-3000:]
    failed = root / "lightning_logs" / "version_1" / "checkpoints" / "last.ckpt"
    _one_line(full.stderr, "hrseg fit", str(failed), "(EFBIG)", "--ckpt_path last", "untouched")
    assert not failed.parent.exists() or _files(failed.parent) == []  # no partial or temporary file
    assert _step(earlier) == 2

    rerun = _hrseg(*fit)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"Resuming from {earlier}" in rerun.stdout + rerun.stderr
    assert _step(root / "lightning_logs" / "version_2" / "checkpoints" / "last.ckpt") >= 2  # saved, whole


@pytest.mark.slow  # two predict processes (~6 s each)
def test_predict_on_a_full_disk_stops_in_one_line_and_a_rerun_completes(
    tiny_checkpoint: Path, tmp_path: Path
):
    """The disk fills up at the second image's overlay: the first image's files are whole, nothing partial is
    left, and the same command run again writes the rest."""
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for name, size in (("a_small", (48, 64)), ("m_large", (320, 320)), ("z_small", (48, 64))):
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(images / f"{name}.png")
    out = tmp_path / "out"
    predict = ["predict", "--ckpt_path", str(tiny_checkpoint), "--input", str(images), "--output", str(out)]
    full = _hrseg(*predict, "--overlay", file_size_limit=150_000)  # the large overlay PNG is ~300 KB
    assert full.returncode == 1, full.stderr[-3000:]
    _one_line(
        full.stderr, "hrseg predict", str(out / "m_large_overlay.png"), "(EFBIG)", "resumes where it stopped"
    )
    written = _files(out)
    assert all(not name.startswith(".") for name in written), written
    assert {"a_small_trainIds.png", "a_small_color.png", "a_small_overlay.png"} <= set(written)
    assert "m_large_overlay.png" not in written and not any(n.startswith("z_small") for n in written)
    for name in written:
        with Image.open(out / name) as png:
            png.load()  # whole files only

    rerun = _hrseg(*predict, "--overlay")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    expected = {
        f"{n}_{kind}.png"
        for n in ("a_small", "m_large", "z_small")
        for kind in ("trainIds", "color", "overlay")
    }
    assert set(_files(out)) == expected


@pytest.mark.slow  # three export processes (~8 s each)
def test_export_to_a_full_disk_or_a_read_only_folder_leaves_nothing_partial(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    out = tmp_path / "exports"
    out.mkdir()
    hub = ["export", "--ckpt_path", str(tiny_checkpoint), "--format", "hub", "--output", str(out / "hub")]
    full = _hrseg(*hub, file_size_limit=2**20)  # model.safetensors is ~6 MB
    assert full.returncode == 1, full.stderr[-3000:]
    _one_line(full.stderr, "hrseg export", str(out / "hub"), "(EFBIG)", "no partial export")
    assert _files(out) == []

    read_only = tmp_path / "read-only"
    read_only.mkdir()
    bundle = ["export", "--ckpt_path", str(tiny_checkpoint), "--format", "safetensors"]
    refused = _hrseg(*bundle, "--output", str(read_only / "model.safetensors"), read_only=read_only)
    assert refused.returncode == 1, refused.stderr[-3000:]
    line = _one_line(refused.stderr, "hrseg export", str(read_only / "model.safetensors"))
    assert "(EROFS)" in line or "(EACCES)" in line, line
    assert _files(read_only) == []

    done = _hrseg(*hub)
    assert done.returncode == 0, done.stderr[-3000:]
    assert _files(out) == ["hub", "hub/README.md", "hub/config.json", "hub/model.safetensors"]


def test_atomic_output_renames_whole_results_and_names_a_refused_write(tmp_path: Path) -> None:
    """Files beside the target move together; a failed block leaves nothing; a refused write hidden in a
    library's own error (torch's zip writer raises RuntimeError) and a real ENOSPC are named in one line."""
    import errno

    from hrseg.files import DiskWriteError, atomic_output, disk_errors

    out = tmp_path / "out"
    with atomic_output(out / "model.xml") as tmp:
        tmp.write_text("xml")
        tmp.with_suffix(".bin").write_bytes(b"bin")
    assert _files(out) == ["model.bin", "model.xml"]
    with pytest.raises(ZeroDivisionError), atomic_output(out / "half.onnx") as tmp:
        tmp.write_text("partial")
        _ = 1 / 0
    with (
        pytest.raises(DiskWriteError) as info,
        atomic_output(out / "model.pt2", "the earlier files are whole"),
    ):
        try:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError as err:
            raise RuntimeError("[enforce fail at inline_container.cc:672] unexpected pos") from err
    assert str(info.value) == (
        f"cannot write {out / 'model.pt2'}: No space left on device (ENOSPC); the disk is full: free space "
        "or write elsewhere; the earlier files are whole"
    )
    assert info.value.errno == errno.ENOSPC and _files(out) == ["model.bin", "model.xml"]
    full = Path("/dev/full")  # a device that is always full
    with pytest.raises(DiskWriteError, match=r"cannot write /dev/full: .*\(ENOSPC\)"), disk_errors(full):
        full.write_bytes(b"x")
