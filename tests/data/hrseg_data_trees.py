"""Generators of tiny datasets in the exact real on-disk layouts, for the data tests.

They are written independently of ``hrseg.data.synthetic`` so the loaders are tested against trees built from
the dataset definitions (docs/reference/datasets.md), not against their own writer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

# Official labelId -> trainId (docs/reference/datasets.md), written out here on purpose; all else -> 255.
REFERENCE_LABEL_TO_TRAIN = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
    23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}  # fmt: skip

CS_SIZE = (32, 72)  # (H, W): 34 stripes of 2 px for ids 0..33 and a 4 px band of 255 (the license plate's -1)


def reference_train_ids(label_ids: np.ndarray) -> np.ndarray:
    """Map labelIds to trainIds pixel by pixel with the reference dict (slow and obvious on purpose)."""
    out = np.full(label_ids.shape, 255, dtype=np.int64)
    for lid, tid in REFERENCE_LABEL_TO_TRAIN.items():
        out[label_ids == lid] = tid
    return out


def all_ids_mask(size: tuple[int, int] = CS_SIZE, shift: int = 0) -> np.ndarray:
    """A labelIds mask holding every id 0..33 (vertical stripes, rolled by ``shift`` rows) and 255."""
    h, w = size
    mask = np.full((h, w), 255, dtype=np.uint8)
    for k in range(34):
        mask[:, 2 * k : 2 * k + 2] = k
    mask[h // 2 :, :68] = np.roll(mask[h // 2 :, :68], 2 * (shift % 34), axis=1)
    return mask


def random_image(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    return rng.integers(0, 256, (*size, 3), dtype=np.uint8)


def make_cityscapes_tree(
    root: Path,
    counts: dict[str, int] | None = None,
    train_ids: bool = False,
    size: tuple[int, int] = CS_SIZE,
    seed: int = 0,
) -> Path:
    """Write ``leftImg8bit/<split>/<city>/..._leftImg8bit.png`` and ``gtFine/<split>/<city>/..._labelIds.png``
    (plus ``_labelTrainIds.png`` when ``train_ids``); the test split gets images only."""
    rng = np.random.default_rng(seed)
    counts = counts or {"train": 3, "val": 2, "test": 1}
    cities = {"train": ["aachen", "zurich"], "val": ["lindau"], "test": ["bonn"]}
    for split, n in counts.items():
        for i in range(n):
            city = cities[split][i % len(cities[split])]
            stem = f"{city}_{i:06d}_000019"
            img_dir = root / "leftImg8bit" / split / city
            img_dir.mkdir(parents=True, exist_ok=True)
            Image.fromarray(random_image(rng, size)).save(img_dir / f"{stem}_leftImg8bit.png")
            if split == "test":
                continue
            gt_dir = root / "gtFine" / split / city
            gt_dir.mkdir(parents=True, exist_ok=True)
            lab = all_ids_mask(size, shift=i)
            Image.fromarray(lab, mode="L").save(gt_dir / f"{stem}_gtFine_labelIds.png")
            if train_ids:
                tid = reference_train_ids(lab).astype(np.uint8)
                Image.fromarray(tid, mode="L").save(gt_dir / f"{stem}_gtFine_labelTrainIds.png")
    return root


def voc_palette() -> list[int]:
    """The VOC bit-interleaved colour map, flattened for ``Image.putpalette`` (written independently)."""
    pal = []
    for k in range(256):
        r = g = b = 0
        c = k
        for j in range(8):
            r |= (c & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    return pal


def voc_mask(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """Background plus two rectangles of random classes, each outlined with a 255 border."""
    h, w = size
    mask = np.zeros((h, w), dtype=np.uint8)
    for _ in range(2):
        cls = int(rng.integers(1, 21))
        y0, x0 = int(rng.integers(2, h // 2)), int(rng.integers(2, w // 2))
        y1, x1 = y0 + int(rng.integers(6, h // 2)), x0 + int(rng.integers(6, w // 2))
        mask[y0 - 1 : y1 + 1, x0 - 1 : x1 + 1] = 255
        mask[y0:y1, x0:x1] = cls
    return mask


def save_palette_png(mask: np.ndarray, path: Path) -> None:
    img = Image.fromarray(mask, mode="P")
    img.putpalette(voc_palette())
    img.save(path)


def make_voc_tree(
    root: Path,
    n_train: int = 3,
    n_val: int = 2,
    n_aug: int = 2,
    size: tuple[int, int] = (40, 48),
    aug_list: str = "trainaug",
    seed: int = 0,
) -> Path:
    """Write ``root/VOCdevkit/VOC2012`` with JPEG images, palette masks with 255 borders, split lists and an
    SBD-style aug split (greyscale ``SegmentationClassAug`` masks).

    Args:
        aug_list: ``trainaug`` writes ``trainaug.txt``; ``aug`` writes ``aug.txt`` (used with train.txt);
            ``none`` writes no aug list.
    """
    rng = np.random.default_rng(seed)
    voc = root / "VOCdevkit" / "VOC2012"
    for d in ("JPEGImages", "SegmentationClass", "SegmentationClassAug", "ImageSets/Segmentation"):
        (voc / d).mkdir(parents=True, exist_ok=True)
    ids = {
        "train": [f"2007_{i:06d}" for i in range(n_train)],
        "val": [f"2008_{i:06d}" for i in range(n_val)],
        "aug": [f"2010_{i:06d}" for i in range(n_aug)],
    }
    for split, items in ids.items():
        for image_id in items:
            Image.fromarray(random_image(rng, size)).save(voc / "JPEGImages" / f"{image_id}.jpg")
            mask = voc_mask(rng, size)
            if split != "aug":
                save_palette_png(mask, voc / "SegmentationClass" / f"{image_id}.png")
            aug_mask = np.where(mask == 255, 0, mask).astype(np.uint8)
            Image.fromarray(aug_mask, mode="L").save(voc / "SegmentationClassAug" / f"{image_id}.png")
    lists = voc / "ImageSets" / "Segmentation"
    (lists / "train.txt").write_text("\n".join(ids["train"]) + "\n")
    (lists / "val.txt").write_text("\n".join(ids["val"]) + "\n")
    (lists / "trainval.txt").write_text("\n".join(ids["train"] + ids["val"]) + "\n")
    if aug_list == "trainaug":
        (lists / "trainaug.txt").write_text("\n".join(ids["train"] + ids["aug"]) + "\n")
    elif aug_list == "aug":
        (lists / "aug.txt").write_text("\n".join(ids["aug"]) + "\n")
    return root


def make_folder_tree(
    root: Path,
    n: int = 6,
    num_classes: int = 4,
    size: tuple[int, int] = (24, 40),
    seed: int = 0,
) -> tuple[Path, Path]:
    """Write ``root/images/*.jpg|png`` and ``root/masks/*.png`` (values 0..num_classes-1 and 255)."""
    rng = np.random.default_rng(seed)
    images, masks = root / "images", root / "masks"
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        ext = ".jpg" if i % 2 else ".png"
        Image.fromarray(random_image(rng, size)).save(images / f"img{i:02d}{ext}")
        mask = rng.integers(0, num_classes, size, dtype=np.uint8)
        mask[0, :] = 255
        Image.fromarray(mask, mode="L").save(masks / f"img{i:02d}.png")
    return images, masks


def corrupt_png(path: Path) -> None:
    """Truncate a PNG so that its header parses but decoding fails."""
    data = path.read_bytes()
    path.write_bytes(data[: max(len(data) // 3, 40)])


# ADE20K: annotation value v in 1..150 is train id v - 1, 0 ("other") ignored (docs/reference/datasets.md).
ADE_SIZE = (6, 151)  # (H, W): one column per annotation value 0..150


def ade_reference_train_ids(raw: np.ndarray) -> np.ndarray:
    """ADE20K annotation values -> train ids, written out from the dataset definition."""
    return np.where(raw == 0, 255, raw.astype(np.int64) - 1)


def all_values_mask(values: list[int], height: int, shift: int = 0) -> np.ndarray:
    """One column per value (rolled by ``shift`` columns), so every value occurs in the mask."""
    row = np.roll(np.asarray(values, dtype=np.int64), shift)
    return np.repeat(row[None, :], height, axis=0)


def make_ade20k_tree(root: Path, counts: dict[str, int] | None = None, seed: int = 0) -> Path:
    """Write ``ADEChallengeData2016/images/{training,validation}/ADE_*.jpg`` and greyscale annotation PNGs
    holding every value 0..150."""
    rng = np.random.default_rng(seed)
    counts = counts or {"train": 2, "val": 1}
    names = {"train": ("training", "ADE_train_"), "val": ("validation", "ADE_val_")}
    for split, n in counts.items():
        folder, prefix = names[split]
        img_dir = root / "ADEChallengeData2016" / "images" / folder
        ann_dir = root / "ADEChallengeData2016" / "annotations" / folder
        img_dir.mkdir(parents=True, exist_ok=True)
        ann_dir.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            stem = f"{prefix}{i + 1:08d}"
            Image.fromarray(random_image(rng, ADE_SIZE)).save(img_dir / f"{stem}.jpg")
            mask = all_values_mask(list(range(151)), ADE_SIZE[0], shift=i).astype(np.uint8)
            Image.fromarray(mask, mode="L").save(ann_dir / f"{stem}.png")
    return root


# COCO-Stuff 164k: 0..181 = COCO category id - 1; these 11 ids are unused (ignored), the rest -> 0..170.
COCO_UNUSED = {11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90}
COCO_VALUES = [*range(182), 255]  # every stuffthingmaps value, 255 = unlabelled


def coco_reference_train_ids(raw164k: np.ndarray) -> np.ndarray:
    """COCO-Stuff 164k values -> train ids pixel by pixel (slow and obvious on purpose)."""
    out = np.full(raw164k.shape, 255, dtype=np.int64)
    train_id = 0
    for value in range(182):
        if value in COCO_UNUSED:
            continue
        out[raw164k == value] = train_id
        train_id += 1
    assert train_id == 171
    return out


def make_cocostuff_tree(root: Path, counts: dict[str, int] | None = None, seed: int = 0) -> Path:
    """Write ``{train,val}2017/*.jpg`` and ``stuffthingmaps_trainval2017/{train,val}2017/*.png``."""
    rng = np.random.default_rng(seed)
    counts = counts or {"train": 2, "val": 1}
    size = (5, len(COCO_VALUES))
    for split, n in counts.items():
        img_dir, map_dir = root / f"{split}2017", root / "stuffthingmaps_trainval2017" / f"{split}2017"
        img_dir.mkdir(parents=True, exist_ok=True)
        map_dir.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            stem = f"{1000 * (split == 'val') + i + 1:012d}"
            Image.fromarray(random_image(rng, size)).save(img_dir / f"{stem}.jpg")
            mask = all_values_mask(COCO_VALUES, size[0], shift=i).astype(np.uint8)
            Image.fromarray(mask, mode="L").save(map_dir / f"{stem}.png")
    return root


def make_cocostuff10k_tree(root: Path, counts: dict[str, int] | None = None, seed: int = 0) -> Path:
    """Write the 10k release: ``images/*.jpg``, ``annotations/*.mat`` (``S``: 0 unlabelled, 1..182 = COCO
    category ids, every value present) and ``imageLists/{train,test}.txt``."""
    from scipy.io import savemat

    rng = np.random.default_rng(seed)
    counts = counts or {"train": 2, "test": 1}
    size = (5, 183)
    for d in ("images", "annotations", "imageLists"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for split, n in counts.items():
        names = [f"COCO_{'train' if split == 'train' else 'val'}2014_{i + 1:012d}" for i in range(n)]
        for i, name in enumerate(names):
            Image.fromarray(random_image(rng, size)).save(root / "images" / f"{name}.jpg")
            s = all_values_mask(list(range(183)), size[0], shift=i).astype(np.uint16)
            savemat(
                str(root / "annotations" / f"{name}.mat"), {"S": s, "names": np.array(["x"], dtype=object)}
            )
        (root / "imageLists" / f"{split}.txt").write_text("".join(f"{x}\n" for x in names))
    return root


def write_lst(path: Path, root: Path, pairs: list[tuple[Path, Path | None]]) -> Path:
    """An official-style list: ``image [label]`` per line, relative to ``root`` (written independently)."""
    lines = [" ".join(str(p.relative_to(root)) for p in pair if p is not None) for pair in pairs]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path
