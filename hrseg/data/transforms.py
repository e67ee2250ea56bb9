"""Albumentations pipelines for training and evaluation.

Training follows the official HRNet recipe: horizontal flip (swapping the label set's left/right classes
in the mask, e.g. LIP's arms, legs and shoes), an optional fixed resize (the official LIP recipe), random
scale in [0.5, 2.0], pad (image 0, mask = ignore) to at least the crop, random crop, optional photometric
jitter, ImageNet normalization. Evaluation keeps the image as is (or resizes the image only, so metrics stay
on the original labels). Every knob is a typed argument of the DataModules, so YAML configs set them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np
import torch

from hrseg.metadata import IGNORE_INDEX, IMAGENET_MEAN, IMAGENET_STD

if TYPE_CHECKING:
    import albumentations as A


def _libraries() -> tuple[ModuleType, ModuleType]:
    """Import albumentations and OpenCV on first use: ``hrseg fit --help`` needs neither (0.4 s)."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import albumentations
    import cv2

    # Without this, OpenCV spawns one thread pool per DataLoader worker and oversubscribes small machines.
    cv2.setNumThreads(0)
    return albumentations, cv2


class SegmentationTransform:
    """Apply an albumentations pipeline to an (image, mask) pair and return tensors.

    Returns a float32 (3, H, W) normalized image and an int64 (H, W) mask (or None). The image alone can be
    resized first (``image_size``) for evaluation at a fixed input size while the mask keeps its resolution.

    The training horizontal flip runs here, before the pipeline, rather than as an albumentations step: a
    flipped mask must also swap the left/right classes of its label set (``flip_permutation``), and only this
    step knows whether it flipped. Flipping first is what the official LIP code does; for the other datasets
    it draws the same distribution as flipping after the scale and crop.

    Args:
        pipeline: the albumentations steps (normalisation and tensor conversion last).
        image_size: (H, W) to resize the image alone to first (evaluation); None keeps it.
        hflip_prob: probability of a horizontal flip of image and mask.
        flip_permutation: class order after a flip (:meth:`hrseg.metadata.LabelSet.flip_permutation`); None
            when no class swaps.
    """

    def __init__(
        self,
        pipeline: A.Compose,
        image_size: tuple[int, int] | None = None,
        hflip_prob: float = 0.0,
        flip_permutation: Sequence[int] | None = None,
    ) -> None:
        if not 0.0 <= hflip_prob <= 1.0:
            raise ValueError(f"hflip_prob must be in [0, 1], got {hflip_prob}")
        self.pipeline = pipeline
        self.image_size = tuple(image_size) if image_size is not None else None
        self.hflip_prob = float(hflip_prob)
        #: (class, its class after a flip) for every class a flip changes (from ``flip_permutation``)
        self.flip_swaps = [(c, int(n)) for c, n in enumerate(flip_permutation or ()) if int(n) != c]
        self._flip_rng = np.random.default_rng()

    def flip(self, image: np.ndarray, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        """Mirror ``image`` and ``mask`` left to right, swapping the left/right classes in the mask."""
        image = np.ascontiguousarray(image[:, ::-1])
        if mask is None:
            return image, None
        mask = mask[:, ::-1]
        if self.flip_swaps:  # compared with the unswapped mask: values other than the classes stay
            swapped = mask.copy()
            for old, new in self.flip_swaps:
                swapped[mask == old] = new
            mask = swapped
        return image, np.ascontiguousarray(mask)

    def __call__(
        self, image: np.ndarray, mask: np.ndarray | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Transform one (image, mask) pair; returns (float image tensor, int64 mask tensor or None)."""
        if self.hflip_prob > 0 and self._flip_rng.random() < self.hflip_prob:
            image, mask = self.flip(image, mask)
        if self.image_size is not None and image.shape[:2] != self.image_size:
            _, cv2 = _libraries()
            h, w = self.image_size
            image = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
            if mask is not None:
                # The eval image alone is resized; the mask stays at full resolution.
                out = self.pipeline(image=image)
                return out["image"].float(), torch.from_numpy(np.ascontiguousarray(mask)).long()
        if mask is None:
            out = self.pipeline(image=image)
            return out["image"].float(), None
        out = self.pipeline(image=image, mask=mask)
        m = out["mask"]
        m = torch.from_numpy(np.ascontiguousarray(m)) if isinstance(m, np.ndarray) else m
        return out["image"].float(), m.long()

    def reseed(self, seed: int) -> None:
        """Seed the pipeline's random generators.

        The training loader reseeds before every sample with ``sample_seed(seed, epoch, index)``
        (:class:`hrseg.data.resume.ResumableSampler`), so a sample's augmentation depends on nothing else: not
        the worker, the batch position or a restart.
        """
        self.pipeline.set_random_seed(int(seed) % 2**32)
        # a generator of its own, from another stream of the same seed: not correlated with the pipeline's
        self._flip_rng = np.random.default_rng([int(seed) % 2**32, 1])

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(image_size={self.image_size}, hflip_prob={self.hflip_prob}, "
            f"flip_swaps={self.flip_swaps}, pipeline={self.pipeline!r})"
        )


def _normalize_and_tensor(mean: Sequence[float], std: Sequence[float]) -> list[A.BasicTransform]:
    alb, _ = _libraries()
    return [alb.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=255.0), alb.ToTensorV2()]


def build_train_transform(
    crop_size: tuple[int, int] | None = (512, 1024),
    scale_range: tuple[float, float] | None = (0.5, 2.0),
    hflip_prob: float = 0.5,
    photometric: bool = False,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    ignore_index: int = IGNORE_INDEX,
    flip_permutation: Sequence[int] | None = None,
    resize: tuple[int, int] | None = None,
) -> SegmentationTransform:
    """Build the training pipeline.

    Args:
        crop_size: (H, W) of the random crop; None keeps the (scaled) image size, in which case scaling is
            skipped so that batches keep one size.
        scale_range: random rescale factor range; None or (1, 1) disables it.
        hflip_prob: probability of a horizontal flip (image and mask together).
        photometric: add brightness / contrast / saturation / hue jitter.
        mean: normalization mean (RGB, in [0, 1] units).
        std: normalization std.
        ignore_index: mask value used for padding, so padding never invents labels.
        flip_permutation: class order after a flip (the label set's :meth:`~hrseg.metadata.LabelSet.
            flip_permutation`): a flipped mask swaps its left/right classes; None: no class swaps.
        resize: (H, W) every training image (and its mask, nearest neighbour) is resized to before the random
            scale, whatever its aspect ratio: the official LIP recipe (473x473); None keeps the image size.
    """
    alb, cv2 = _libraries()
    steps: list[A.BasicTransform] = []
    if resize is not None:
        rh, rw = int(resize[0]), int(resize[1])
        if rh < 1 or rw < 1:
            raise ValueError(f"resize must be a positive (height, width), got {resize}")
        steps.append(
            alb.Resize(rh, rw, interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST, p=1.0)
        )
    if crop_size is not None:
        ch, cw = int(crop_size[0]), int(crop_size[1])
        if scale_range is not None and tuple(scale_range) != (1.0, 1.0):
            lo, hi = float(scale_range[0]), float(scale_range[1])
            if not 0 < lo <= hi:
                raise ValueError(f"scale_range must satisfy 0 < low <= high, got {scale_range}")
            steps.append(
                alb.RandomScale(
                    scale_limit=(lo - 1.0, hi - 1.0),
                    interpolation=cv2.INTER_LINEAR,
                    mask_interpolation=cv2.INTER_NEAREST,
                    p=1.0,
                )
            )
        steps += [
            alb.PadIfNeeded(
                min_height=ch,
                min_width=cw,
                position="top_left",
                border_mode=cv2.BORDER_CONSTANT,
                fill=0,
                fill_mask=ignore_index,
            ),
            alb.RandomCrop(height=ch, width=cw),
        ]
    if photometric:
        steps.append(alb.ColorJitter(brightness=0.25, contrast=0.25, saturation=0.25, hue=0.05, p=0.8))
    steps += _normalize_and_tensor(mean, std)
    return SegmentationTransform(alb.Compose(steps), hflip_prob=hflip_prob, flip_permutation=flip_permutation)


def build_eval_transform(
    image_size: tuple[int, int] | None = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> SegmentationTransform:
    """Build the evaluation / prediction pipeline: optional image-only resize to ``image_size`` (H, W)."""
    alb, _ = _libraries()
    return SegmentationTransform(alb.Compose(_normalize_and_tensor(mean, std)), image_size=image_size)


__all__ = ["SegmentationTransform", "build_eval_transform", "build_train_transform"]
