"""hrseg's loaders hold PyTorch's DataLoader SIGCHLD handler only while they iterate (data.worker_signals).

The reproduction runs in a fresh interpreter, as a notebook would: train with loader workers, run ONNX Runtime
and OpenVINO, then start child processes. Without the fix, PyTorch's handler stays installed after the fit
(``signal.getsignal(SIGCHLD)`` is ``_set_SIGCHLD_handler.<locals>.handler``, not the handler the process had),
and with both runtimes' thread pools alive a later child's exit segfaulted the process now and then (exit
-11: the xdist worker deaths of 2026-11-27; not every run crashes, so the test asserts the state the crash
depends on, the handler, and that the children's exits do no harm).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch.utils.data import Dataset

from hrseg.data.worker_signals import WorkerSignalDataLoader

REPRODUCTION = textwrap.dedent(
    """
    import multiprocessing, signal, subprocess, sys
    import lightning as L
    import numpy as np
    from hrseg.data import DemoDataModule
    from hrseg.data.synthetic import generate_scene
    from hrseg.deploy import Segmenter
    from hrseg.task import SegmentationTask

    calls = []
    def previous(signum, frame):
        calls.append(signum)
    signal.signal(signal.SIGCHLD, previous)

    dm = DemoDataModule(num_train=8, num_val=4, image_size=(32, 64), batch_size=2, num_workers=2)
    dm.setup("fit")
    for i, _ in enumerate(dm.train_dataloader()):  # iterated to the end
        assert signal.getsignal(signal.SIGCHLD) is not previous, "PyTorch's handler is installed meanwhile"
    assert signal.getsignal(signal.SIGCHLD) is previous, signal.getsignal(signal.SIGCHLD)
    it = iter(dm.val_dataloader())
    next(it)  # broken off after one batch
    del it
    assert signal.getsignal(signal.SIGCHLD) is previous, signal.getsignal(signal.SIGCHLD)

    task = SegmentationTask(model="hrnetv2_w18_small_v1", labels=dm.labels, log_images=0)
    trainer = L.Trainer(
        max_steps=3, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        default_root_dir=sys.argv[3],
    )
    trainer.fit(task, datamodule=dm)
    assert signal.getsignal(signal.SIGCHLD) is previous, signal.getsignal(signal.SIGCHLD)
    print("handler restored after the fit", flush=True)

    images = [generate_scene(i, (64, 96))[0] for i in range(2)]
    for backend in ("onnxruntime", "openvino"):
        seg = Segmenter.from_checkpoint(sys.argv[1], backend=backend, cache_dir=sys.argv[2])
        for image in images:
            seg.predict(image)
    for _ in range(100):
        subprocess.run(["true"], check=True)
    with multiprocessing.get_context("fork").Pool(2) as pool:
        assert pool.map(abs, [-1, -2, -3]) == [1, 2, 3]
    assert calls, "the previous handler saw the children exit"
    print("children started and reaped after both runtimes ran", flush=True)
    """
)


@pytest.mark.slow
def test_fit_then_runtimes_then_children_in_one_interpreter(
    tiny_checkpoint: Path, shared_tmp_dir: Path, tmp_path: Path
) -> None:
    pytest.importorskip("openvino")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            REPRODUCTION,
            str(tiny_checkpoint),
            str(shared_tmp_dir / "backend-cache"),
            str(tmp_path),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "handler restored after the fit" in out and "children started and reaped" in out, out[-4000:]


class _KillsItsWorker(Dataset[torch.Tensor]):
    """Item 1 kills the worker process that loads it (what an out-of-memory kill does)."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> torch.Tensor:
        if index == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        return torch.tensor(index)


def _is_pytorchs(handler: object) -> bool:
    return getattr(handler, "__qualname__", "").startswith("_set_SIGCHLD_handler.")


def test_the_handler_is_pytorchs_while_iterating_and_the_previous_one_after() -> None:
    before = signal.getsignal(signal.SIGCHLD)
    loader = WorkerSignalDataLoader(list(range(6)), batch_size=2, num_workers=2, persistent_workers=True)
    for epoch in range(2):  # persistent workers: the second epoch reuses them and installs the handler again
        during = [signal.getsignal(signal.SIGCHLD) for _ in loader]
        assert len(during) == 3 and all(_is_pytorchs(h) for h in during), (epoch, during)
        assert signal.getsignal(signal.SIGCHLD) == before
    assert signal.getsignal(signal.SIGCHLD) == before
    assert [signal.getsignal(signal.SIGCHLD) for _ in WorkerSignalDataLoader([0, 1])] == [
        before
    ] * 2  # no workers


def test_a_killed_worker_is_still_reported() -> None:
    before = signal.getsignal(signal.SIGCHLD)
    with pytest.raises(RuntimeError, match=r"DataLoader worker \(pid"):
        list(WorkerSignalDataLoader(_KillsItsWorker(), batch_size=1, num_workers=1))
    assert signal.getsignal(signal.SIGCHLD) == before
