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

from hrseg.files import disk_errors

__all__ = ["AtomicCheckpointIO"]


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` to a temporary file next to the target, fsync, then ``os.replace``.

    A kill at any moment leaves either the previous checkpoint or the new one, never a truncated file, and
    no temporary file: on Linux the data is written to an unnamed file (``O_TMPFILE``, freed by the kernel
    when a kill cuts the write short) that gets a name only for the rename; elsewhere, and for the
    microseconds between naming and renaming, the next save removes temporary files whose writer is dead.
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
        # a full or read-only disk: one line that says the earlier checkpoint (if any) is whole
        safe = (
            f"the previous {target.name} is intact" if target.exists() else "no partial checkpoint was left"
        ) + "; earlier checkpoints are untouched: resume with --ckpt_path last"
        with disk_errors(target, safe):
            self._save_local(checkpoint, target)

    @staticmethod
    def _save_local(checkpoint: dict[str, Any], target: Path) -> None:
        """The atomic local save: an unnamed (or named) temporary file, fsync, rename, fsync the folder."""
        target.parent.mkdir(parents=True, exist_ok=True)
        _remove_dead_writers_files(target)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            try:
                unnamed = os.open(target.parent, os.O_TMPFILE | os.O_WRONLY, 0o666)
            except (AttributeError, OSError):  # not Linux, or a filesystem without O_TMPFILE
                unnamed = None
            with open(tmp, "wb") if unnamed is None else open(unnamed, "wb") as fh:
                torch.save(checkpoint, fh)
                fh.flush()
                os.fsync(fh.fileno())
                if unnamed is not None:  # a name for the rename (a dir fd makes CPython call linkat, which
                    # follows the /proc link to the open file; plain link() would refuse it as cross-device)
                    folder = os.open(target.parent, os.O_RDONLY)
                    try:
                        os.link(f"/proc/self/fd/{fh.fileno()}", tmp, src_dir_fd=folder, follow_symlinks=True)
                    finally:
                        os.close(folder)
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


def _remove_dead_writers_files(target: Path) -> None:
    """Delete ``.<name>.<pid>.tmp`` files next to ``target`` whose writing process no longer runs."""
    for tmp in target.parent.glob(f".{target.name}.*.tmp"):
        pid = tmp.name[len(target.name) + 2 : -len(".tmp")]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            tmp.unlink(missing_ok=True)
        except OSError:  # alive, another user's
            pass
