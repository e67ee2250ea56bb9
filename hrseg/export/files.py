"""Writing export files atomically: a killed export never leaves a half-written model behind."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

__all__ = ["atomic_target"]


@contextlib.contextmanager
def atomic_target(final: Path, suffixes: Sequence[str] = ("",)) -> Iterator[Path]:
    """A temporary path beside ``final``; on success the file(s) are renamed into place.

    Args:
        final: the file to write.
        suffixes: the files that make it up, as suffixes replacing ``final``'s (``""``: ``final`` itself),
            e.g. ``(".xml", ".bin")`` for an OpenVINO IR.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmpdir = Path(tempfile.mkdtemp(prefix=".tmp-", dir=final.parent))
    tmp = tmpdir / final.name
    try:
        yield tmp
        for suffix in suffixes:
            src = tmp.with_suffix(suffix) if suffix else tmp
            dst = final.with_suffix(suffix) if suffix else final
            os.replace(src, dst)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
