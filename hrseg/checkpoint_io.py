"""The trainer's checkpoint writer: every checkpoint lands atomically, never as a truncated file.

A Lightning ``CheckpointIO`` plugin (``Trainer(plugins=[AtomicCheckpointIO()])``), installed by the hrseg CLI;
reading checkpoints is :mod:`hrseg.checkpoint`'s job.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import fsspec
import torch
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.plugins import TorchCheckpointIO

__all__ = ["AtomicCheckpointIO"]


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` to a temporary file next to the target, fsync, then ``os.replace``.

    A kill at any moment leaves either the previous checkpoint or the new one, never a truncated file.
    Lightning's own save goes through an fsspec transaction whose temporary file lives in ``$TMPDIR``: when
    that is another filesystem than the checkpoint folder (a node-local /tmp, a shared checkpoint disk) the
    final "rename" is a copy, which a kill can cut short. Remote URLs (s3://, gs://...) keep Lightning's path.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        """Write ``checkpoint`` to ``path`` atomically (local paths)."""
        fs, urlpath = fsspec.core.url_to_fs(str(path))
        if storage_options is not None or not isinstance(fs, LocalFileSystem):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        target = Path(urlpath)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as fh:
                torch.save(checkpoint, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        try:  # make the rename itself durable
            fd = os.open(target.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError:
            pass
