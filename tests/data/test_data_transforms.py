"""Augmentations keep image and mask aligned, and padding never invents labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hrseg.colors import denormalize
from hrseg.data.loaders import pad_collate
from hrseg.data.transforms import build_eval_transform, build_train_transform

# Four well-separated colours; the mask is a function of the image: class = index of the pixel's colour.
COLORS = np.array([[230, 40, 40], [40, 220, 60], [50, 60, 230], [240, 230, 70]], dtype=np.uint8)


def _pattern(h: int = 60, w: int = 90, block: int = 10) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    grid = rng.integers(0, len(COLORS), (h // block + 1, w // block + 1))
    mask = np.kron(grid, np.ones((block, block), dtype=np.int64))[:h, :w].astype(np.uint8)
    return COLORS[mask], mask


def _classify(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest colour per pixel, and whether the pixel is black (padding)."""
    d = ((rgb[..., None, :].astype(np.int32) - COLORS[None, None].astype(np.int32)) ** 2).sum(-1)
    return d.argmin(-1), rgb.astype(np.int32).sum(-1) < 30


def _interior(mask: np.ndarray, r: int = 2) -> np.ndarray:
    """Pixels whose (2r+1)^2 neighbourhood holds a single label (away from resampled edges)."""
    h, w = mask.shape
    p = np.pad(mask, r, mode="edge")
    same = np.ones_like(mask, dtype=bool)
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            same &= p[r + dy : r + dy + h, r + dx : r + dx + w] == mask
    return same


@pytest.mark.parametrize("seed", range(12))
def test_train_aug_keeps_alignment_and_pads_with_ignore(seed: int) -> None:
    image, mask = _pattern()
    t = build_train_transform(crop_size=(64, 96), scale_range=(0.5, 2.0), hflip_prob=0.5, ignore_index=255)
    t.pipeline.set_random_seed(seed)
    img_t, mask_t = t(image, mask)
    assert img_t.shape == (3, 64, 96) and img_t.dtype == torch.float32
    assert mask_t.shape == (64, 96) and mask_t.dtype == torch.int64
    rgb = denormalize(img_t)
    m = mask_t.numpy()
    cls, black = _classify(rgb)
    # padding never invents labels: the padded area is exactly the ignore area
    np.testing.assert_array_equal(black, m == 255)
    assert set(np.unique(m)) <= {0, 1, 2, 3, 255}
    inner = _interior(m) & ~black
    assert inner.sum() > 200
    np.testing.assert_array_equal(cls[inner], m[inner])


def test_flip_alone_is_exact() -> None:
    image, mask = _pattern()
    t = build_train_transform(crop_size=None, hflip_prob=1.0)
    img_t, mask_t = t(image, mask)
    np.testing.assert_array_equal(mask_t.numpy(), mask[:, ::-1])
    cls, _ = _classify(denormalize(img_t))
    np.testing.assert_array_equal(cls, mask[:, ::-1])


@pytest.mark.parametrize("seed", range(6))
def test_flip_swaps_the_label_sets_pairs_through_scale_and_crop(seed: int) -> None:
    """Classes 0 and 1 are a left/right pair: wherever the image was mirrored, their labels trade places."""
    image, mask = _pattern()
    t = build_train_transform(
        crop_size=(40, 60), scale_range=(0.75, 1.25), hflip_prob=1.0, flip_permutation=[1, 0, 2, 3]
    )
    t.reseed(seed)
    img_t, mask_t = t(image, mask)
    m = mask_t.numpy()
    cls, black = _classify(denormalize(img_t))
    inner = _interior(m) & ~black
    inner[:, [0, -1]] = inner[[0, -1], :] = False  # the last column: linear vs nearest resampling at the edge
    assert inner.sum() > 200
    swapped = np.array([1, 0, 2, 3])[cls]  # the colours still show the unswapped class
    np.testing.assert_array_equal(swapped[inner], m[inner])
    mask = mask.copy()
    mask[:4, :4] = 255  # the ignore value is no class: it stays
    plain = build_train_transform(crop_size=None, hflip_prob=1.0, flip_permutation=[1, 0, 2, 3])
    np.testing.assert_array_equal(
        plain(image, mask)[1].numpy(), np.array([1, 0, 2, 3, *range(4, 256)])[mask[:, ::-1]]
    )


def test_photometric_keeps_mask() -> None:
    image, mask = _pattern()
    t = build_train_transform(crop_size=None, hflip_prob=0.0, photometric=True)
    _, mask_t = t(image, mask)
    np.testing.assert_array_equal(mask_t.numpy(), mask)


def test_eval_transform_and_normalization() -> None:
    image, mask = _pattern(30, 50)
    img_t, mask_t = build_eval_transform()(image, mask)
    assert img_t.shape == (3, 30, 50)
    np.testing.assert_array_equal(mask_t.numpy(), mask)
    expected = (image[0, 0] / 255.0 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(img_t[:, 0, 0].numpy(), expected, atol=1e-5)
    img_r, mask_r = build_eval_transform(image_size=(16, 32))(image, mask)
    assert img_r.shape == (3, 16, 32) and mask_r.shape == (30, 50)  # the labels keep full resolution


def test_pad_collate_mixed_sizes() -> None:
    items = [
        {"image": torch.ones(3, 4, 5), "mask": torch.zeros(4, 5, dtype=torch.int64), "name": "a"},
        {"image": torch.ones(3, 6, 3), "mask": torch.ones(6, 3, dtype=torch.int64), "name": "b"},
    ]
    batch = pad_collate(items, ignore_index=255)
    assert batch["image"].shape == (2, 3, 6, 5) and batch["mask"].shape == (2, 6, 5)
    assert batch["name"] == ["a", "b"]
    assert (batch["mask"][0, 4:] == 255).all() and (batch["image"][0, :, 4:] == 0).all()
    assert (batch["mask"][1, :, 3:] == 255).all() and (batch["mask"][1, :, :3] == 1).all()


def test_workers_draw_different_augmentations() -> None:
    from hrseg.data.dataset import ArraySegmentationDataset
    from hrseg.data.loaders import seed_worker
    from hrseg.data.worker_signals import WorkerSignalDataLoader

    image, mask = _pattern()
    t = build_train_transform(crop_size=(20, 20), scale_range=(0.5, 2.0), hflip_prob=0.5)
    ds = ArraySegmentationDataset([image] * 4, [mask] * 4, [str(i) for i in range(4)], t)
    loader = WorkerSignalDataLoader(ds, batch_size=1, num_workers=2, worker_init_fn=seed_worker)
    masks = [b["mask"][0] for b in loader]
    # items 0 and 1 are the first draws of worker 0 and worker 1: the same pixels without per-worker seeds
    assert not torch.equal(masks[0], masks[1])
