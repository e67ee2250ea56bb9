"""DDP on CPU processes (gloo): evaluation is exact for odd splits, and 2 nodes behave like 2 local processes.

Validation and test metrics come from one confusion matrix summed over the split and the loss from a mean over
images summed across processes, so a multi-process run must report what one process reports on the same
checkpoint: every image counted exactly once. Lightning's default distributed sampler pads a split of 7 images
on 2 processes to 8 by repeating one (the mIoU then differs in the third decimal); the DataModules give each
image to exactly one process instead.
"""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hrseg.commands import main

NUM_VAL = 7  # odd: 2 processes get 4 + 3 images

SMALL = [
    "--config=demo",
    "--data.init_args.num_train=16",
    f"--data.init_args.num_val={NUM_VAL}",
    "--data.init_args.image_size=[48,96]",
    "--data.init_args.batch_size=4",
    "--model.log_images=0",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--trainer.accelerator=cpu",
    "--trainer.max_epochs=1",
    "--trainer.num_sanity_val_steps=0",
    "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
    "--trainer.logger.init_args.name=csv",
]
ENV = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "OMP_NUM_THREADS": "1"}


def _metrics(path: Path, prefix: str) -> dict[str, float]:
    with open(path) as fh:
        rows = [r for r in csv.DictReader(fh) if r.get(f"{prefix}/mIoU")]
    return {k: float(v) for k, v in rows[-1].items() if k.startswith(f"{prefix}/") and v}


def _run(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "hrseg", *args]
    return subprocess.Popen(
        cmd, cwd=cwd, env=env or ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _wait(proc: subprocess.Popen, timeout: float = 600) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-4000:]
    return out


def _root_args(root: Path) -> list[str]:
    return [f"--trainer.default_root_dir={root}", f"--trainer.logger.init_args.save_dir={root}"]


def _single_process(subcommand: str, root: Path, ckpt: Path, eval_batch: int) -> Path:
    """Evaluate ``ckpt`` in this process on one thread (bitwise the convolutions of a 1-thread DDP rank)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        args = [
            subcommand,
            *SMALL,
            f"--data.init_args.eval_batch_size={eval_batch}",
            "--trainer.devices=1",
            *_root_args(root),
            f"--ckpt_path={ckpt}",
        ]
        assert main(args) == 0
    finally:
        torch.set_num_threads(threads)
    return root / "csv" / "version_0" / "metrics.csv"


def _assert_same(multi: dict[str, float], single: dict[str, float], prefix: str) -> None:
    assert f"{prefix}/mIoU" in multi and f"{prefix}/iou_road" in multi and f"{prefix}/loss" in multi
    assert set(multi) == set(single)
    for key, value in single.items():
        assert multi[key] == pytest.approx(value, abs=1e-6), key


@pytest.fixture(scope="module")
def ddp_fit(tmp_path_factory) -> Path:
    """One 2-process DDP fit on one node; its version folder.

    Eval batch 3 on 7 images: the ranks validate [3, 1] and [3] images, so the fit's own validation is the
    two-process, uneven-batch validation the tests compare with one process.
    """
    root = tmp_path_factory.mktemp("ddp")
    args = [
        "fit",
        *SMALL,
        "--data.init_args.eval_batch_size=3",
        "--trainer.devices=2",
        "--trainer.strategy=ddp",
    ]
    _wait(_run([*args, *_root_args(root)], root))
    return root / "csv" / "version_0"


@pytest.mark.slow
def test_two_process_validation_of_odd_split_equals_one_process(ddp_fit, tmp_path):
    """The fit's two-process validation (eval batch 3: [3, 1] and [3] images) equals one process."""
    ckpt = ddp_fit / "checkpoints" / "last.ckpt"
    assert torch.load(ckpt, map_location="cpu", weights_only=True)["global_step"] == 2  # 16 / 2 / batch 4
    single = _metrics(_single_process("validate", tmp_path / "single", ckpt, eval_batch=3), "val")
    _assert_same(_metrics(ddp_fit / "metrics.csv", "val"), single, "val")


@pytest.mark.slow
def test_two_process_eval_batch_3_test_equals_one_process(ddp_fit, tmp_path):
    """``hrseg test`` on 2 processes, eval batch 3 on 7 images: ranks run [3, 1] and [3] images; exact.

    (Two-process validation at eval batch 3 is the fit's own, checked above; the ``validate`` subcommand
    under DDP is checked on 3 processes below.)
    """
    ckpt = ddp_fit / "checkpoints" / "last.ckpt"
    root = tmp_path / "ddp_test"
    args = ["test", *SMALL, "--data.init_args.eval_batch_size=3", "--trainer.devices=2"]
    _wait(_run([*args, "--trainer.strategy=ddp", *_root_args(root), f"--ckpt_path={ckpt}"], tmp_path))
    multi = _metrics(root / "csv" / "version_0" / "metrics.csv", "test")
    single = _metrics(_single_process("test", tmp_path / "single_test", ckpt, eval_batch=3), "test")
    _assert_same(multi, single, "test")


@pytest.mark.slow
def test_three_process_validation_of_odd_split_equals_one_process(ddp_fit, tmp_path):
    """7 images on 3 processes (3 + 2 + 2), eval batch 2: still every image exactly once."""
    ckpt = ddp_fit / "checkpoints" / "last.ckpt"
    root = tmp_path / "ddp3"
    args = ["validate", *SMALL, "--data.init_args.eval_batch_size=2", "--trainer.devices=3"]
    _wait(_run([*args, "--trainer.strategy=ddp", *_root_args(root), f"--ckpt_path={ckpt}"], tmp_path))
    multi = _metrics(root / "csv" / "version_0" / "metrics.csv", "val")
    single = _metrics(_single_process("validate", tmp_path / "single3", ckpt, eval_batch=2), "val")
    _assert_same(multi, single, "val")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_two_nodes_on_loopback_train_and_evaluate_like_two_local_processes(ddp_fit, tmp_path):
    """2 nodes x 1 process through Lightning's environment variables, rendezvous on 127.0.0.1."""
    root = tmp_path / "nodes"
    port = _free_port()
    procs = []
    for node in (0, 1):
        env = {
            **ENV,
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "NODE_RANK": str(node),
            "LOCAL_RANK": "0",
            "WORLD_SIZE": "2",
        }
        args = ["fit", *SMALL, "--data.init_args.eval_batch_size=3", "--trainer.devices=1"]
        args += ["--trainer.num_nodes=2", "--trainer.strategy=ddp", *_root_args(root)]
        procs.append(_run(args, tmp_path, env))
    for proc in procs:
        _wait(proc)
    version = root / "csv" / "version_0"
    node_ckpt = torch.load(version / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    local_ckpt = torch.load(ddp_fit / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert node_ckpt["global_step"] == local_ckpt["global_step"] == 2
    for key, value in local_ckpt["state_dict"].items():
        assert torch.equal(node_ckpt["state_dict"][key], value), key
    _assert_same(_metrics(version / "metrics.csv", "val"), _metrics(ddp_fit / "metrics.csv", "val"), "val")


def test_finished_run_destroys_its_process_group(tmp_path, monkeypatch):
    """A DDP run that ends well tears its process group down before the process exits.

    Left alive, Gloo's threads can abort the exiting interpreter ("terminate called without an active
    exception", exit -6) after a run that succeeded; that crashed one of the two-node processes in CI.
    """
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(_free_port()))
    args = ["validate", *SMALL, "--data.init_args.num_val=2", "--trainer.devices=1"]
    args += ["--trainer.strategy=ddp", *_root_args(tmp_path)]
    threads = torch.get_num_threads()
    try:
        assert main(args) == 0
    finally:
        torch.set_num_threads(threads)
    assert torch.distributed.is_available()
    assert not torch.distributed.is_initialized()
