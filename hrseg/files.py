"""Writing files safely: whole or not at all, and a full or read-only disk said in one line.

Every file hrseg writes for a user (predictions, exports, model folders, report figures, benchmark records)
goes through :func:`atomic_output`: it is written under a temporary name in the same folder and renamed into
place, so a failed or killed write never leaves a partial file where a finished one is expected. A write the
disk refuses (no space, over quota, over the file-size limit, read-only, no permission) becomes a
:class:`DiskWriteError` that names the path, the error and what is safe; the command line prints it as one
line. Checkpoints take the same path through :class:`hrseg.checkpoint_io.AtomicCheckpointIO`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import Tensor

__all__ = [
    "DISK_ERRNOS",
    "FULL_DISK_ERRNOS",
    "DiskWriteError",
    "atomic_output",
    "atomic_write_text",
    "describe_disk_error",
    "disk_error_of",
    "disk_errors",
    "save_safetensors",
]

#: errno -> what the user can do about it
DISK_ERRNOS: dict[int, str] = {
    errno.ENOSPC: "the disk is full: free space or write elsewhere",
    errno.EDQUOT: "the disk quota is used up: free space within the quota or write elsewhere",
    errno.EFBIG: "the file exceeds the file-size limit (ulimit -f) or the filesystem's largest file",
    errno.EROFS: "the filesystem is read-only: write to another folder",
    errno.EACCES: "no permission to write there: write to a folder you own",
    errno.EPERM: "no permission to write there: write to a folder you own",
}

FULL_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})
"""The errnos only a write gets (a permission error may also come from a read)."""


class DiskWriteError(OSError):
    """A write the disk refused; the message names the path, the error and what is safe.

    Attributes:
        errno: the refused write's errno (``ENOSPC``, ``EFBIG``, ...).
        filename: the file that was being written.
    """

    def __init__(self, message: str, code: int, path: str | Path) -> None:
        """Keep ``message`` as the text; ``code`` and ``path`` as ``errno`` and ``filename``."""
        super().__init__(message)
        self.errno = code
        self.filename = str(path)

    def __str__(self) -> str:
        """The message alone (``OSError`` would print ``[Errno N] None: path`` once ``errno`` is set)."""
        return str(self.args[0])


def disk_error_of(err: BaseException, errnos: Collection[int] = tuple(DISK_ERRNOS)) -> OSError | None:
    """The refused write behind ``err``: itself or one of its causes, an ``OSError`` of one of ``errnos``.

    Causes are followed because libraries re-raise the file's ``OSError`` as their own error: ``torch.save``
    to an open file, for one, raises ``RuntimeError("[enforce fail at inline_container.cc] unexpected pos")``
    with the ``OSError`` as its context.
    """
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        # a DiskWriteError is a description; the refused write itself is among its causes
        if (
            isinstance(current, OSError)
            and current.errno in errnos
            and not isinstance(current, DiskWriteError)
        ):
            return current
        current = current.__cause__ or current.__context__
    return None


def describe_disk_error(path: str | Path, cause: OSError, safe: str = "") -> str:
    """One line: the path, the error and its errno name, what to do, and what is safe (``safe``)."""
    code = cause.errno if cause.errno is not None else 0
    name = errno.errorcode.get(code, str(code))
    reason = cause.strerror or str(cause)
    return f"cannot write {path}: {reason} ({name}); {DISK_ERRNOS.get(code, '')}" + (
        f"; {safe}" if safe else ""
    )


@contextlib.contextmanager
def disk_errors(path: str | Path, safe: str = "") -> Iterator[None]:
    """Turn a write the disk refuses inside the block into a :class:`DiskWriteError` naming ``path``.

    Nested blocks (an export writing a model folder) end in the outermost one's path and ``safe``: the inner
    paths are temporary names the user never asked for.

    Args:
        path: what the block writes (named in the message).
        safe: what is intact and how to go on, e.g. "the previous checkpoint is intact".
    """
    try:
        yield
    except Exception as err:  # nested writers: the outermost names the path the user asked for
        cause = disk_error_of(err)
        if cause is None:
            raise
        raise DiskWriteError(describe_disk_error(path, cause, safe), cause.errno or 0, path) from err


@contextlib.contextmanager
def atomic_output(final: str | Path, safe: str = "") -> Iterator[Path]:
    """A temporary path to write ``final`` to; after the block it is renamed into place, whole.

    The temporary path has ``final``'s name inside a hidden folder beside it (same filesystem: the rename is
    atomic). Everything the block writes in that folder moves to ``final``'s folder: the file itself, files
    beside it (an OpenVINO ``.bin`` next to the ``.xml``, a bundle's ``.json``) or, when the block writes a
    folder at the path, that folder's files. A failed block moves nothing and the hidden folder is removed,
    so no partial file appears under a finished name. A write the disk refuses becomes a
    :class:`DiskWriteError` naming ``final``.

    Args:
        final: the file (or folder) to write.
        safe: what is safe when the disk refuses (added to the message).
    """
    final = Path(final)
    with disk_errors(final, safe or "nothing was written under that name"):
        final.parent.mkdir(parents=True, exist_ok=True)
        tmpdir = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
        try:
            yield tmpdir / final.name
            for entry in sorted(tmpdir.iterdir()):
                if entry.is_dir():  # a folder output: its files replace those of the same names
                    _move_tree(entry, final.parent / entry.name)
                else:
                    os.replace(entry, final.parent / entry.name)
        except Exception as err:
            refused = None if disk_error_of(err) is not None else _probe_disk(final.parent, tmpdir)
            if refused is None:
                raise
            refused.__cause__ = err
            raise DiskWriteError(
                describe_disk_error(final, refused, safe), refused.errno or 0, final
            ) from refused
        finally:
            shutil.rmtree(tmpdir, ignore_errors=True)


def atomic_write_text(path: str | Path, text: str, safe: str = "") -> None:
    """Write a UTF-8 text file whole or not at all (:func:`atomic_output`); ``safe`` as there."""
    with atomic_output(path, safe) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _probe_disk(folder: Path, written: Path) -> OSError | None:
    """Why a write into ``folder`` failed, read from the filesystem when the writer did not say.

    Writers in compiled code (safetensors' Rust writer, OpenVINO) report a refused write as their own error
    without an errno; the filesystem still tells: read-only, not writable, no free blocks, or a file in
    ``written`` that reached the process's file-size limit.
    """
    try:
        stat = os.statvfs(folder)
    except (OSError, AttributeError):  # gone, or not a POSIX system
        return None
    code = None
    root = getattr(os, "geteuid", lambda: -1)() == 0  # root may use the reserved blocks
    limit = _file_size_limit()
    if stat.f_flag & os.ST_RDONLY:
        code = errno.EROFS
    elif not os.access(folder, os.W_OK):
        code = errno.EACCES
    elif (stat.f_bfree if root else stat.f_bavail) == 0:
        code = errno.ENOSPC
    elif limit is not None and any(f.is_file() and f.stat().st_size >= limit for f in written.rglob("*")):
        code = errno.EFBIG
    return None if code is None else OSError(code, os.strerror(code), str(folder))


def _file_size_limit() -> int | None:
    """The process's largest file size (``ulimit -f``), None when unlimited or not a POSIX system."""
    try:
        import resource
    except ImportError:
        return None
    soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    return None if soft == resource.RLIM_INFINITY else soft


def save_safetensors(
    tensors: Mapping[str, Tensor], path: str | Path, metadata: dict[str, str] | None = None
) -> None:
    """Write a safetensors file through Python's file I/O.

    safetensors' own writer reports a refused write (a full disk, the file-size limit) without its errno and
    removes the partial file, so nothing would say why; serialised here and written by Python, the
    ``OSError`` keeps its errno for :func:`disk_errors`. The bytes are held once in memory (the model's size).
    """
    from safetensors.torch import save

    Path(path).write_bytes(save(dict(tensors), metadata=metadata))


def _move_tree(src: Path, dst: Path) -> None:
    """Move the files of ``src`` into ``dst`` (created), one ``os.replace`` each, keeping sub-folders."""
    dst.mkdir(parents=True, exist_ok=True)
    for entry in sorted(src.iterdir()):
        if entry.is_dir():
            _move_tree(entry, dst / entry.name)
        else:
            os.replace(entry, dst / entry.name)
