"""Writers of generated scenes in the real on-disk dataset layouts (Cityscapes, PASCAL VOC + SBD, a folder).

``hrseg data synth`` calls them, and the loader tests read what they write, so every DataModule is exercised
on its real layout without downloading anything.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from hrseg.data.metadata import (
    CITYSCAPES_CLASSES,
    CITYSCAPES_LABELS,
    CITYSCAPES_NUM_CLASSES,
    CITYSCAPES_PALETTE,
    CITYSCAPES_TRAIN_ID,
    IGNORE_INDEX,
    cityscapes_train_to_label_id,
    voc_colormap,
)
from hrseg.data.scenes import generate_scene, scene_rng

_T = CITYSCAPES_TRAIN_ID

LAYOUTS = ("cityscapes", "voc", "folder")

_CITIES = {"train": ("aachen", "bochum"), "val": ("frankfurt",), "test": ("berlin",)}

# Demo train ids -> VOC classes (everything else is background).
_TRAIN_ID_TO_VOC = {
    _T["person"]: 15,
    _T["rider"]: 15,
    _T["car"]: 7,
    _T["truck"]: 7,
    _T["bus"]: 6,
    _T["train"]: 19,
    _T["motorcycle"]: 14,
    _T["bicycle"]: 2,
}


def _progress(total: int, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="img", disable=not enabled)


def _cityscapes_color(label_ids: np.ndarray) -> np.ndarray:
    table = np.zeros((256, 4), dtype=np.uint8)
    for lab in CITYSCAPES_LABELS:
        if lab.id >= 0:
            table[lab.id] = (*lab.color, 255)
    return table[label_ids]


def write_cityscapes(
    out: str | Path,
    num_train: int,
    num_val: int,
    num_test: int,
    seed: int = 0,
    size: tuple[int, int] = (128, 256),
    train_ids: bool = False,
    progress: bool = True,
) -> Path:
    """Write generated scenes in the Cityscapes layout (leftImg8bit/ + gtFine/ with labelIds and colour PNGs).

    A 2-pixel frame is labelled "rectification border" (id 2, ignored), like the real masks' ignored regions.

    Args:
        out: dataset root (gets ``leftImg8bit/`` and ``gtFine/``).
        num_train: images in train (spread over two cities).
        num_val: images in val.
        num_test: images in test (no labels, as in the real release).
        seed: scene seed.
        size: (H, W).
        train_ids: also write ``*_gtFine_labelTrainIds.png`` (as cityscapesScripts' createTrainIdLabelImgs).
        progress: show a tqdm bar.
    """
    root = Path(out)
    to_label_id = cityscapes_train_to_label_id()
    counts = {"train": num_train, "val": num_val, "test": num_test}
    with _progress(sum(counts.values()), "cityscapes", progress) as bar:
        for split, n in counts.items():
            cities = _CITIES[split]
            for i in range(n):
                city = cities[i % len(cities)]
                stem = f"{city}_{i // len(cities):06d}_000019"
                image, mask = generate_scene(scene_rng(seed, split, i), size)
                img_dir = root / "leftImg8bit" / split / city
                img_dir.mkdir(parents=True, exist_ok=True)
                Image.fromarray(image).save(img_dir / f"{stem}_leftImg8bit.png")
                if split != "test":
                    gt_dir = root / "gtFine" / split / city
                    gt_dir.mkdir(parents=True, exist_ok=True)
                    label_ids = to_label_id[mask]
                    label_ids[:2, :] = label_ids[-2:, :] = 2
                    label_ids[:, :2] = label_ids[:, -2:] = 2
                    Image.fromarray(label_ids, mode="L").save(gt_dir / f"{stem}_gtFine_labelIds.png")
                    Image.fromarray(_cityscapes_color(label_ids), mode="RGBA").save(
                        gt_dir / f"{stem}_gtFine_color.png"
                    )
                    if train_ids:
                        tid = mask.copy()
                        tid[label_ids == 2] = IGNORE_INDEX
                        Image.fromarray(tid, mode="L").save(gt_dir / f"{stem}_gtFine_labelTrainIds.png")
                bar.update(1)
    return root


def _voc_borders(labels: np.ndarray, width: int = 1) -> np.ndarray:
    """Mark object outlines with 255 like the VOC annotations (pixels next to a different label)."""
    out = labels.copy()
    edge = np.zeros(labels.shape, dtype=bool)
    for dy, dx in ((0, 1), (1, 0)):
        a = labels[: labels.shape[0] - dy, : labels.shape[1] - dx]
        b = labels[dy:, dx:]
        diff = a != b
        edge[: labels.shape[0] - dy, : labels.shape[1] - dx] |= diff
        edge[dy:, dx:] |= diff
    for _ in range(width - 1):
        grown = edge.copy()
        grown[1:] |= edge[:-1]
        grown[:-1] |= edge[1:]
        grown[:, 1:] |= edge[:, :-1]
        grown[:, :-1] |= edge[:, 1:]
        edge = grown
    out[edge] = IGNORE_INDEX
    return out


def _to_voc(mask: np.ndarray) -> np.ndarray:
    lut = np.zeros(256, dtype=np.uint8)
    for tid, voc in _TRAIN_ID_TO_VOC.items():
        lut[tid] = voc
    lut[IGNORE_INDEX] = IGNORE_INDEX
    return lut[mask]


def _save_palette_png(indices: np.ndarray, path: Path) -> None:
    img = Image.fromarray(indices.astype(np.uint8), mode="P")
    img.putpalette([c for rgb in voc_colormap(256) for c in rgb])
    img.save(path)


def write_voc(
    out: str | Path,
    num_train: int,
    num_val: int,
    num_aug: int,
    seed: int = 0,
    size: tuple[int, int] = (128, 256),
    progress: bool = True,
) -> Path:
    """Write generated scenes in the PASCAL VOC 2012 layout, plus the SBD "aug" extension.

    Layout: ``VOCdevkit/VOC2012/`` with ``JPEGImages``, ``SegmentationClass``, ``SegmentationClassAug`` and
    ``ImageSets/Segmentation``.
    SegmentationClass masks are palette PNGs with 255 outlines; SegmentationClassAug masks are greyscale
    (train, val and ``num_aug`` extra images); lists train / val / trainval / trainaug / aug.
    Scene classes map to VOC: person, car, bus, ...; everything else is background.
    """
    voc = Path(out) / "VOCdevkit" / "VOC2012"
    dirs = {k: voc / k for k in ("JPEGImages", "SegmentationClass", "SegmentationClassAug")}
    lists_dir = voc / "ImageSets" / "Segmentation"
    for d in [*dirs.values(), lists_dir]:
        d.mkdir(parents=True, exist_ok=True)
    ids: dict[str, list[str]] = {"train": [], "val": [], "aug": []}
    counts = {"train": num_train, "val": num_val, "aug": num_aug}
    year = {"train": 2007, "val": 2008, "aug": 2011}
    with _progress(sum(counts.values()), "voc", progress) as bar:
        for split, n in counts.items():
            for i in range(n):
                image_id = f"{year[split]}_{i + 1:06d}"
                image, mask = generate_scene(scene_rng(seed, "test" if split == "aug" else split, i), size)
                voc_mask = _to_voc(mask)
                Image.fromarray(image).save(dirs["JPEGImages"] / f"{image_id}.jpg", quality=92)
                if split != "aug":
                    _save_palette_png(_voc_borders(voc_mask), dirs["SegmentationClass"] / f"{image_id}.png")
                Image.fromarray(voc_mask, mode="L").save(dirs["SegmentationClassAug"] / f"{image_id}.png")
                ids[split].append(image_id)
                bar.update(1)

    def write_list(name: str, items: list[str]) -> None:
        (lists_dir / name).write_text("".join(f"{x}\n" for x in items))

    write_list("train.txt", ids["train"])
    write_list("val.txt", ids["val"])
    write_list("trainval.txt", ids["train"] + ids["val"])
    write_list("aug.txt", ids["aug"])
    write_list("trainaug.txt", ids["train"] + ids["aug"])
    return Path(out)


def write_folder(
    out: str | Path,
    num_train: int,
    num_val: int,
    seed: int = 0,
    size: tuple[int, int] = (128, 256),
    progress: bool = True,
) -> Path:
    """Write generated scenes as a plain folder dataset: ``images/``, ``masks/`` (train-id PNGs), lists.

    Also writes ``train.txt`` / ``val.txt`` (stems) and ``classes.json`` (names + palette) for
    :class:`~hrseg.data.folder.FolderDataModule`.
    """
    root = Path(out)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    stems: dict[str, list[str]] = {"train": [], "val": []}
    with _progress(num_train + num_val, "folder", progress) as bar:
        for split, n in (("train", num_train), ("val", num_val)):
            for i in range(n):
                stem = f"{split}_{i:05d}"
                image, mask = generate_scene(scene_rng(seed, split, i), size)
                Image.fromarray(image).save(root / "images" / f"{stem}.png")
                Image.fromarray(mask, mode="L").save(root / "masks" / f"{stem}.png")
                stems[split].append(stem)
                bar.update(1)
    for split, items in stems.items():
        (root / f"{split}.txt").write_text("".join(f"{x}\n" for x in items))
    meta = {
        "num_classes": CITYSCAPES_NUM_CLASSES,
        "class_names": CITYSCAPES_CLASSES,
        "palette": [list(c) for c in CITYSCAPES_PALETTE],
        "ignore_index": IGNORE_INDEX,
    }
    (root / "classes.json").write_text(json.dumps(meta, indent=1) + "\n")
    return root


__all__ = ["LAYOUTS", "write_cityscapes", "write_folder", "write_voc"]
