"""The datasets behind every DataModule: image / mask files, or in-memory arrays, -> tensor samples."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from hrseg.data.checks import DEFAULT_ENCODING, DatasetError, LabelSpec, Sample, load_sample, read_image
from hrseg.data.resume import apply_sample_key
from hrseg.data.transforms import SegmentationTransform


class SegmentationDataset(Dataset):
    """Image / mask files -> ``{"image", "mask", "name"}`` samples, validated on every read.

    Bad files raise :class:`DatasetError` from ``__getitem__`` with the path and the problem, so the message
    survives the DataLoader worker re-raise.

    Args:
        samples: the split's items.
        specs: label rules per ``Sample`` encoding key (``"default"`` unless a DataModule uses several).
        transform: pipeline returning tensors.
        labelled: False yields ``{"image", "name", "path", "error"}`` (prediction) and never reads masks.
            An unreadable image does not stop a prediction run: its item carries the message in ``error``
            (empty otherwise) and a 1x1 placeholder image, so the writer reports it by name at the end.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        specs: Mapping[str, LabelSpec] | None,
        transform: SegmentationTransform,
        labelled: bool = True,
    ) -> None:
        self.samples = list(samples)
        self.specs = dict(specs or {})
        self.transform = transform
        self.labelled = labelled

    def __len__(self) -> int:
        return len(self.samples)

    def spec_for(self, sample: Sample) -> LabelSpec:
        """Return the label rules of ``sample`` (by its encoding key)."""
        return self.specs.get(sample.encoding) or self.specs[DEFAULT_ENCODING]

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray | None, str]:
        """Decode sample ``index`` without transforms: RGB uint8 image, train-id mask (or None), name."""
        sample = self.samples[index]
        if not self.labelled:
            return read_image(sample.image), None, sample.name
        if sample.mask is None:
            raise DatasetError(f"{sample.image}: no mask for this image in a labelled split")
        image, mask = load_sample(sample, self.spec_for(sample))
        return image, mask, sample.name

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index = apply_sample_key(self.transform, key)
        if not self.labelled:
            sample = self.samples[index]
            try:
                image, _, name = self.load(index)
            except DatasetError as exc:  # reported by the prediction writer; the other images go on
                return {
                    "image": torch.zeros(3, 1, 1),
                    "name": sample.name,
                    "path": str(sample.image),
                    "error": str(exc),
                }
            img_t, _ = self.transform(image, None)
            return {"image": img_t, "name": name, "path": str(sample.image), "error": ""}
        image, mask, name = self.load(index)
        img_t, mask_t = self.transform(image, mask)
        return {"image": img_t, "mask": mask_t, "name": name}


class ArraySegmentationDataset(Dataset):
    """In-memory (image, mask) arrays -> the same samples as :class:`SegmentationDataset`.

    Args:
        images: RGB uint8 arrays (H, W, 3).
        masks: train-id arrays (H, W), or None for prediction.
        names: one name per item.
        transform: pipeline returning tensors.
    """

    def __init__(
        self,
        images: Sequence[np.ndarray],
        masks: Sequence[np.ndarray] | None,
        names: Sequence[str],
        transform: SegmentationTransform,
    ) -> None:
        if masks is not None and len(masks) != len(images):
            raise ValueError(f"{len(images)} images but {len(masks)} masks")
        self.images = list(images)
        self.masks = list(masks) if masks is not None else None
        self.names = list(names)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray | None, str]:
        """Return the raw image, mask (or None) and name of item ``index``."""
        mask = self.masks[index] if self.masks is not None else None
        return self.images[index], mask, self.names[index]

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index = apply_sample_key(self.transform, key)
        image, mask, name = self.load(index)
        img_t, mask_t = self.transform(image, mask)
        if mask_t is None:
            return {"image": img_t, "name": name, "path": name, "error": ""}
        return {"image": img_t, "mask": mask_t, "name": name}


__all__ = ["ArraySegmentationDataset", "SegmentationDataset"]
