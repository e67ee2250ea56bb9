"""PyTorch's DataLoader SIGCHLD handler, installed only while one of hrseg's loaders iterates.

PyTorch's first multi-worker DataLoader iterator installs a process-wide SIGCHLD handler
(``torch.utils.data._utils.signal_handling._set_SIGCHLD_handler``) so that a worker killed by a signal raises
an error instead of hanging the main process, and never removes it (a module flag makes the install
once-only). For the rest of the process every child's exit (``subprocess.run``, a multiprocessing pool, a
notebook's shell command) is then delivered as a signal with a Python handler instead of being ignored, to
whichever thread happens to run: a runtime's worker thread (ONNX Runtime's, OpenVINO's TBB pool) may see its
blocking call interrupted mid-wait. With both runtimes loaded, a later child's exit segfaulted the process
(the xdist worker deaths of the test suite, 2026-11-27); a notebook that trains, exports int8 and then starts
any child process is the same sequence.

:class:`WorkerSignalDataLoader` keeps PyTorch's handler for exactly as long as the loader iterates and puts
back the previous handler once the iteration ends (exhausted, broken off, or the iterator dropped). A worker
that dies while no iteration runs (between epochs, with persistent workers) is still reported: the loader
checks its workers' liveness whenever a batch takes longer than five seconds.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from torch.utils.data import DataLoader
from torch.utils.data._utils import signal_handling

__all__ = ["WorkerSignalDataLoader", "worker_sigchld_handler"]


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def worker_sigchld_handler(num_workers: int) -> Iterator[None]:
    """Install PyTorch's worker-failure SIGCHLD handler for the block, then restore the previous handler.

    Nested blocks (a validation loader iterated inside a training epoch) leave the handler to the outermost
    one. Nothing happens without workers, off the main thread (signals cannot be set there) or on platforms
    without SIGCHLD.

    Args:
        num_workers: the loader's worker processes; 0 needs no handler.

    Yields:
        None, with PyTorch's handler installed when the loader has workers.
    """
    owner = (
        num_workers > 0
        and hasattr(signal, "SIGCHLD")
        and _in_main_thread()
        and not signal_handling._SIGCHLD_handler_set
    )
    if not owner:
        yield
        return
    previous = signal.getsignal(signal.SIGCHLD)
    signal_handling._set_SIGCHLD_handler()  # chains to `previous` while installed
    try:
        yield
    finally:
        if _in_main_thread():  # an iterator finalised by another thread leaves PyTorch's handler, as before
            signal.signal(signal.SIGCHLD, previous if previous is not None else signal.SIG_DFL)
            signal_handling._SIGCHLD_handler_set = False  # the next iteration installs it again


class WorkerSignalDataLoader(DataLoader):
    """A :class:`~torch.utils.data.DataLoader` whose SIGCHLD handler lives only while it iterates.

    Takes the DataLoader's arguments; see the module docstring for why.
    """

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]  # a generator over the base iterator
        with worker_sigchld_handler(self.num_workers):
            yield from super().__iter__()
