"""How the DataModules' loaders batch and parallelise: padding collate, worker seeding, the worker count."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from lightning.fabric.utilities.data import suggested_max_num_workers

from hrseg.metadata import IGNORE_INDEX


def pad_collate(batch: Sequence[Mapping[str, Any]], ignore_index: int = IGNORE_INDEX) -> dict[str, Any]:
    """Collate samples that may differ in size: pad images with 0 and masks with ``ignore_index``.

    Padding goes at the bottom / right so pixel coordinates are unchanged; same-size batches are just
    stacked. Non-tensor values (names, paths) become lists.
    """
    out: dict[str, Any] = {}
    keys = batch[0].keys()
    for key in keys:
        values = [b[key] for b in batch]
        if isinstance(values[0], torch.Tensor):
            shapes = {tuple(v.shape) for v in values}
            if len(shapes) == 1:
                out[key] = torch.stack(values)
                continue
            h = max(v.shape[-2] for v in values)
            w = max(v.shape[-1] for v in values)
            fill = ignore_index if key == "mask" else 0
            padded = values[0].new_full((len(values), *values[0].shape[:-2], h, w), fill)
            for i, v in enumerate(values):
                padded[i, ..., : v.shape[-2], : v.shape[-1]] = v
            out[key] = padded
        else:
            out[key] = values
    return out


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: give each worker's augmentation pipeline its own seed.

    Albumentations keeps its own generator, which forked workers would otherwise share (identical
    augmentations in every worker); ``worker_info.seed`` derives from the torch seed, so runs under
    ``seed_everything`` stay reproducible.
    """
    info = torch.utils.data.get_worker_info()
    transform = getattr(info.dataset, "transform", None) if info is not None else None
    if info is not None and transform is not None and hasattr(transform, "reseed"):
        transform.reseed(info.seed)


class PadCollate:
    """Picklable collate callable bound to an ignore index (lambdas break spawn-started workers)."""

    def __init__(self, ignore_index: int) -> None:
        self.ignore_index = ignore_index

    def __call__(self, batch: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Collate ``batch`` with :func:`pad_collate`."""
        return pad_collate(batch, self.ignore_index)


#: upper bound of :func:`auto_num_workers` per device process
MAX_AUTO_WORKERS = 8


def auto_num_workers(device_type: str, processes_per_node: int = 1) -> int:
    """DataLoader workers for ``num_workers=None``: 0 on CPU, else Lightning's suggestion, at most 8.

    Lightning's ``suggested_max_num_workers`` gives the cores per device process minus one (for the process
    itself). On CPU the workers would compete with the training threads for the same cores (on the 2-core dev
    machine two workers were slower than loading in-process). On a GPU one worker decodes and augments ~11
    Cityscapes samples/s while an H200 trains HRNetV2 at 18-40 samples/s (see benchmarks/README.md).
    """
    if device_type == "cpu":
        return 0
    return min(MAX_AUTO_WORKERS, suggested_max_num_workers(max(1, processes_per_node)))


__all__ = ["MAX_AUTO_WORKERS", "PadCollate", "auto_num_workers", "pad_collate", "seed_worker"]
