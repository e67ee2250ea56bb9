"""A custom dataset as two folders: images and index masks paired by file stem.

Masks hold class indices (palette or greyscale PNGs), ``0 .. num_classes - 1`` plus ``ignore_index``. Splits
come from list files of stems or from a seeded random split.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from hrseg.data.checks import (
    IMAGE_EXTENSIONS,
    DatasetError,
    Problem,
    Sample,
    list_files,
    require_dir,
)
from hrseg.data.datamodule import SegmentationDataModule
from hrseg.data.layouts import progress_bar
from hrseg.data.registry import register_dataset
from hrseg.data.scenes import SCENE_LABELS, generate_scene, scene_rng
from hrseg.metadata import IGNORE_INDEX, LabelSet

SPLITS = ("train", "val", "test")
MASK_EXTENSIONS: tuple[str, ...] = (".png", ".bmp", ".tif", ".tiff")


def _read_stems(path: Path) -> list[str]:
    """Read a split list: one stem (or file name / relative path; its stem is used) per line."""
    if not path.is_file():
        raise DatasetError(f"{path}: split list not found")
    stems: list[str] = []
    for line in path.read_text().splitlines():
        token = line.strip()
        if token and not token.startswith("#"):
            stems.append(Path(token.split()[0]).stem if Path(token).suffix else Path(token).name)
    return stems


def write_folder(
    out: str | Path,
    num_train: int,
    num_val: int,
    seed: int = 0,
    size: tuple[int, int] = (128, 256),
    progress: bool = True,
) -> dict[str, Any]:
    """Write generated scenes as a plain folder dataset: ``images/``, ``masks/`` (train-id PNGs), lists.

    Also writes ``train.txt`` / ``val.txt`` (stems) and ``classes.json`` (names + palette) for
    :class:`FolderDataModule`.

    Returns:
        The :class:`FolderDataModule` keywords that read it.
    """
    root = Path(out)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    stems: dict[str, list[str]] = {"train": [], "val": []}
    with progress_bar(num_train + num_val, "folder", progress) as bar:
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
    (root / "classes.json").write_text(json.dumps(SCENE_LABELS.to_dict(), indent=1) + "\n")
    return {
        "images_dir": str(root / "images"),
        "masks_dir": str(root / "masks"),
        "num_classes": SCENE_LABELS.num_classes,
        "train_list": str(root / "train.txt"),
        "val_list": str(root / "val.txt"),
    }


@register_dataset("folder", write_layout=write_folder)
class FolderDataModule(SegmentationDataModule):
    """Images in one folder, masks in another, matched by stem (``a.jpg`` <-> ``a.png``).

    Args:
        images_dir: folder of images (png, jpg, ...; any size; grey / RGBA converted to RGB).
        masks_dir: folder of index masks.
        num_classes: number of classes (mask values ``0 .. num_classes - 1``).
        class_names: optional names (default ``class_0`` ...).
        palette: optional RGB colours (default: the VOC colour map).
        ignore_index: mask value ignored by losses and metrics.
        train_list: file of training stems; with no lists, a seeded split by ``val_ratio``.
        val_list: file of validation stems (default: the pairs not in ``train_list``).
        test_list: file of test stems (default: the validation split).
        val_ratio: fraction of pairs held out for validation when no lists are given.
        seed: seed of that random split.
        mask_suffix: text after the image stem in mask names (``a.jpg`` <-> ``a_mask.png`` with ``_mask``).
        batch_size: training batch size.
        num_workers: DataLoader workers; None = auto (0 on CPU, cores per GPU less one, up to 8).
        crop_size: training crop (H, W); None trains on whole images.
        **kwargs: the remaining :class:`SegmentationDataModule` arguments.
    """

    def __init__(
        self,
        images_dir: str,
        masks_dir: str,
        num_classes: int,
        class_names: list[str] | None = None,
        palette: list[tuple[int, int, int]] | None = None,
        ignore_index: int = IGNORE_INDEX,
        train_list: str | None = None,
        val_list: str | None = None,
        test_list: str | None = None,
        val_ratio: float = 0.2,
        seed: int = 0,
        mask_suffix: str = "",
        batch_size: int = 8,
        num_workers: int | None = None,
        crop_size: tuple[int, int] | None = (512, 512),
        **kwargs: Any,
    ) -> None:
        """Validate ``val_ratio`` and derive which splits exist from the lists given."""
        names = class_names if class_names is not None else LabelSet.generic(num_classes).class_names
        if len(names) != num_classes:
            raise ValueError(f"{len(names)} class names given for num_classes={num_classes}")
        super().__init__(
            labels=LabelSet(tuple(names), tuple(palette or ()), ignore_index),
            batch_size=batch_size,
            num_workers=num_workers,
            crop_size=crop_size,
            **kwargs,
        )
        if not 0.0 <= val_ratio < 1.0:
            raise ValueError(f"val_ratio must be in [0, 1), got {val_ratio}")
        self.images_dir = Path(images_dir).expanduser()
        self.masks_dir = Path(masks_dir).expanduser()
        self.train_list = Path(train_list) if train_list else None
        self.val_list = Path(val_list) if val_list else None
        self.test_list = Path(test_list) if test_list else None
        self.val_ratio = val_ratio
        self.seed = seed
        self.mask_suffix = mask_suffix
        has_val = self.val_list is not None or self.train_list is not None or val_ratio > 0
        self.val_split = "val" if has_val else None
        self.test_split = "test" if self.test_list is not None else self.val_split
        self.predict_split = self.test_split

    def describe_split(self, split: str) -> str:
        """Where the pairs are expected."""
        return f"{self.images_dir} (images) and {self.masks_dir} (masks)"

    def pairs(self) -> tuple[dict[str, Sample], list[Problem]]:
        """Match every image to its mask by stem.

        Images without masks, masks without images and ambiguous stems (two images or masks with the same
        stem) are reported as problems, not raised.

        Returns:
            The samples keyed by stem and the problems found.
        """
        images = list_files(require_dir(self.images_dir, "images"), IMAGE_EXTENSIONS)
        masks = list_files(require_dir(self.masks_dir, "masks"), MASK_EXTENSIONS)
        problems: list[Problem] = []
        by_stem: dict[str, Path] = {}
        for img in images:
            if img.stem in by_stem:
                problems.append(Problem(str(img), f"ambiguous: {by_stem[img.stem].name} has the same stem"))
                continue
            by_stem[img.stem] = img
        mask_by_stem: dict[str, Path] = {}
        for m in masks:
            stem = m.stem
            if self.mask_suffix:
                if not stem.endswith(self.mask_suffix):
                    problems.append(Problem(str(m), f"mask name lacks the suffix {self.mask_suffix!r}"))
                    continue
                stem = stem[: -len(self.mask_suffix)]
            if stem in mask_by_stem:
                problems.append(Problem(str(m), f"ambiguous: {mask_by_stem[stem].name} has the same stem"))
                continue
            mask_by_stem[stem] = m
        pairs: dict[str, Sample] = {}
        for stem, img in by_stem.items():
            mask = mask_by_stem.get(stem)
            if mask is None:
                expected = self.masks_dir / f"{stem}{self.mask_suffix}.png"
                problems.append(Problem(str(img), f"missing mask: expected {expected}"))
                continue
            pairs[stem] = Sample(img, mask, stem)
        for stem, m in mask_by_stem.items():
            if stem not in by_stem:
                problems.append(Problem(str(m), f"mask without image: no {stem}.* in {self.images_dir}"))
        return pairs, problems

    def _split_stems(self, split: str, stems: list[str]) -> list[str]:
        if split == "test" and self.test_list is not None:
            return _read_stems(self.test_list)
        listed = {"train": self.train_list, "val": self.val_list}.get(split)
        if listed is not None:
            return _read_stems(listed)
        if self.train_list is not None:  # val (or test) = everything not listed for training
            train = set(_read_stems(self.train_list))
            return [s for s in stems if s not in train]
        if self.val_list is not None:  # train = everything not listed for validation
            val = set(_read_stems(self.val_list))
            return [s for s in stems if s not in val]
        order = np.random.default_rng(self.seed).permutation(len(stems))
        n_val = round(len(stems) * self.val_ratio)
        if self.val_ratio > 0 and len(stems) >= 2:
            n_val = min(max(n_val, 1), len(stems) - 1)
        val_idx = set(order[:n_val].tolist())
        chosen = [s for i, s in enumerate(stems) if (i in val_idx) == (split != "train")]
        return chosen

    def list_split(self, split: str) -> tuple[list[Sample], list[Problem]]:
        """The pairs of ``split``; listed stems without a pair are reported as missing."""
        if split not in SPLITS:
            raise DatasetError(f"unknown split {split!r}; expected one of {SPLITS}")
        pairs, problems = self.pairs()
        stems = sorted(pairs)
        wanted = self._split_stems(split, stems)
        samples: list[Sample] = []
        for stem in wanted:
            if stem in pairs:
                samples.append(pairs[stem])
            elif not any(Path(p.path).stem == stem for p in problems):
                problems.append(
                    Problem(str(self.images_dir / stem), f"listed for split {split!r} but no image/mask pair")
                )
        return samples, problems


__all__ = ["FolderDataModule"]
