"""Exact resume: training order, augmentation seeds and the loader's position as pure functions of the run.

A resumed fit sees exactly the batches (and augmentations) the interrupted one would have seen:
:class:`ResumableSampler` makes the order a function of (seed, epoch) and every sample's augmentation a
function of (seed, epoch, index); :class:`ResumableDataLoader` saves and restores the position inside the
epoch through Lightning's stateful-loader hooks, counted by the trainer's loop progress (:func:`fit_position`,
the one place that reads Lightning's loop internals).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any, cast

import numpy as np
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import Dataset, DistributedSampler

from hrseg.data.worker_signals import WorkerSignalDataLoader


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The augmentation seed of sample ``index`` in ``epoch`` of a run seeded with ``seed``.

    A pure function of the three numbers (NumPy's ``SeedSequence`` mixes them), so the augmentation of
    every sample is the same whichever process, worker, batch position or resumed run draws it.
    """
    state = np.random.SeedSequence([int(seed) % 2**32, int(epoch), int(index)]).generate_state(1)
    return int(state[0])


def apply_sample_key(transform: Any, key: int | tuple[int, int]) -> int:
    """Dataset key -> index; an ``(index, seed)`` key (:class:`ResumableSampler`) reseeds ``transform``."""
    if isinstance(key, tuple | list):
        index, seed = int(key[0]), int(key[1])
        if hasattr(transform, "reseed"):
            transform.reseed(seed)
        return index
    return int(key)


def global_seed(default: int = 0) -> int:
    """The run's seed: ``PL_GLOBAL_SEED`` (set by ``seed_everything`` on every rank), else ``default``."""
    value = os.environ.get("PL_GLOBAL_SEED")
    return int(value) if value not in (None, "") else int(default)


class ResumableSampler(DistributedSampler):
    """Training order and augmentation seeds as a pure function of (seed, epoch), sharded over processes.

    A :class:`~torch.utils.data.DistributedSampler` (so Lightning keeps it as is and calls ``set_epoch``)
    that yields ``(index, sample_seed(seed, epoch, index))`` keys: the datasets reseed their augmentation
    pipeline from the key, so neither the worker count nor a restart changes what a sample looks like.
    :meth:`skip` starts the next iteration part-way into an epoch (mid-epoch resume).

    Args:
        dataset: the training dataset.
        num_replicas: processes sharing the epoch (1 without DDP).
        rank: this process's rank.
        seed: base seed of the permutation and of the augmentations (the same on every rank).
        shuffle: permute the indices every epoch.
    """

    def __init__(
        self, dataset: Dataset, num_replicas: int = 1, rank: int = 0, seed: int = 0, shuffle: bool = True
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)
        self._skip = 0

    def skip(self, epoch: int, samples: int) -> None:
        """Make the next iteration run ``epoch`` from its ``samples``-th element of this rank's share.

        Idempotent: the same position requested again (the DataModule and Lightning's loop may both
        restore it) is applied once.
        """
        position = (int(epoch), max(0, int(samples)))
        if position == getattr(self, "_restored", None):
            return
        self._restored = position
        self.epoch, self._skip = position

    def __iter__(self) -> Iterator[tuple[int, int]]:
        indices = list(super().__iter__())
        skip, self._skip = self._skip, 0
        return iter([(i, sample_seed(self.seed, self.epoch, i)) for i in indices[skip:]])


def fit_position(trainer: Any) -> tuple[int, int] | None:
    """(epoch, training batches consumed in it) from the trainer's progress counters, or None.

    Counted by the loops rather than by the loader: Lightning fetches one batch ahead, so the loader has
    always produced one batch more than the training loop has used when a checkpoint is written.
    """
    fit_loop = getattr(trainer, "fit_loop", None)
    if fit_loop is None or getattr(getattr(trainer, "state", None), "fn", None) != "fit":
        return None
    epochs = fit_loop.epoch_progress.current
    epoch = max(int(epochs.started) - 1, 0)
    if epochs.started == 0 or epochs.processed >= epochs.started:
        return int(epochs.processed), 0  # between epochs: the next one starts from its beginning
    return epoch, int(fit_loop.epoch_loop.batch_progress.current.processed)


class ResumableDataLoader(WorkerSignalDataLoader):
    """A training DataLoader whose position Lightning saves in checkpoints and restores on resume.

    Lightning calls ``state_dict`` when it writes a checkpoint and ``load_state_dict`` before the first
    ``iter`` of a resumed fit (any loader with both methods counts as stateful). The state is the sampler's
    seed, the epoch and how many batches of it the training loop had consumed; on load, the sampler skips
    those batches, so the resumed run sees exactly the batches (and augmentations) the interrupted run would
    have seen. Requires a :class:`ResumableSampler` and ``batch_size`` batching.

    Args:
        *args: :class:`~torch.utils.data.DataLoader` arguments.
        position: returns (epoch, batches consumed) of the current fit (the trainer's progress), or None to
            count the batches this loader's iterators yielded.
        **kwargs: :class:`~torch.utils.data.DataLoader` arguments.
    """

    def __init__(
        self, *args: Any, position: Callable[[], tuple[int, int] | None] | None = None, **kwargs: Any
    ):
        super().__init__(*args, **kwargs)
        if not isinstance(self.sampler, ResumableSampler) or self.batch_size is None:
            raise TypeError("ResumableDataLoader needs a ResumableSampler and a batch_size")
        self.position = position
        self._yielded = 0

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]  # a generator over the base iterator
        sampler = cast(ResumableSampler, self.sampler)
        epoch = sampler.epoch
        self._yielded = sampler._skip // int(self.batch_size or 1)
        self._epoch = epoch
        for batch in super().__iter__():
            self._yielded += 1
            yield batch

    def state_dict(self) -> dict[str, Any]:
        """``{"seed", "epoch", "batches", "batch_size"}``: where the next batch of this fit comes from."""
        sampler: ResumableSampler = self.sampler  # type: ignore[assignment]
        pos = self.position() if self.position is not None else None
        if pos is None:
            pos = (getattr(self, "_epoch", sampler.epoch), self._yielded)
        epoch, batches = pos
        if batches >= len(self):
            epoch, batches = epoch + 1, 0
        return {
            "seed": int(sampler.seed),
            "epoch": int(epoch),
            "batches": int(batches),
            "batch_size": self.batch_size,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from a :meth:`state_dict`: same seed, same epoch, its consumed batches skipped."""
        sampler: ResumableSampler = self.sampler  # type: ignore[assignment]
        sampler.seed = int(state.get("seed", sampler.seed))
        batch_size = int(state.get("batch_size", self.batch_size))
        if batch_size != self.batch_size:
            rank_zero_warn(
                f"resuming with batch_size={self.batch_size} from a checkpoint written with {batch_size}: "
                "the rest of the interrupted epoch is approximated"
            )
        sampler.skip(int(state.get("epoch", 0)), int(state.get("batches", 0)) * batch_size)


__all__ = [
    "ResumableDataLoader",
    "ResumableSampler",
    "apply_sample_key",
    "fit_position",
    "global_seed",
    "sample_seed",
]
