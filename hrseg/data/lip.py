"""LIP (Look Into Person) human parsing, read from the distributed ``TrainVal_images`` + annotations trees.

Layout (the release's two archives extracted side by side, as the official HRNet ``lib/datasets/lip.py``
reads them)::

    TrainVal_images/train_id.txt, val_id.txt              one image id per line (``100034_483681``)
    TrainVal_images/{train,val}_images/<id>.jpg
    TrainVal_parsing_annotations/{train,val}_segmentations/<id>.png    values 0..19, 255 ignored

20 classes, 0 background is a class (:mod:`hrseg.labelsets.lip`). A training flip swaps the left and right
arm, leg and shoe in the mask (the label set's ``flip_pairs``); training images are resized to 473x473
before the random scale and crop (the official recipe: ``train_resize``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from hrseg.data.checks import DatasetError, Problem, Sample, pair_listed
from hrseg.data.datamodule import SegmentationDataModule
from hrseg.data.layouts import progress_bar
from hrseg.data.registry import register_dataset
from hrseg.data.scenes import SCENE_LABELS, generate_scene, scene_rng
from hrseg.data.voc import read_id_list
from hrseg.metadata import get_label_set

IMAGES_DIR = "TrainVal_images"
LABELS_DIR = "TrainVal_parsing_annotations"
SPLITS = ("train", "val")


def _to_lip(mask: np.ndarray) -> np.ndarray:
    """Generated scene classes -> LIP classes: people become clothes, arms, legs and shoes; others background.

    The person's side follows the image half it stands in, so left/right classes both occur; the
    lowest rows of a person are shoes.
    """
    labels = get_label_set("lip")
    ids = {name: i for i, name in enumerate(labels.class_names)}
    people = np.isin(mask, [SCENE_LABELS.class_names.index(c) for c in ("person", "rider")])
    h, w = mask.shape
    rows = np.arange(h)[:, None]
    left_half = np.arange(w)[None, :] < w // 2
    out = np.zeros(mask.shape, dtype=np.uint8)
    out[people] = ids["upper-clothes"]
    # the image's left half shows a person's right side (a person facing the camera)
    for part, cut in (("arm", rows < h * 0.6), ("leg", rows >= h * 0.6), ("shoe", rows >= h * 0.85)):
        out[people & cut & left_half] = ids[f"right-{part}"]
        out[people & cut & ~left_half] = ids[f"left-{part}"]
    return out


def write_lip(
    out: str | Path,
    num_train: int,
    num_val: int,
    seed: int = 0,
    size: tuple[int, int] = (128, 256),
    progress: bool = True,
) -> dict[str, Any]:
    """Write generated scenes in the LIP layout: ``TrainVal_images`` + ``TrainVal_parsing_annotations``.

    Images are JPEGs, masks greyscale PNGs of LIP class ids; people become clothes, arms, legs and shoes
    (left and right), everything else background.

    Returns:
        The :class:`LIPDataModule` keywords that read it.
    """
    root = Path(out)
    with progress_bar(num_train + num_val, "lip", progress) as bar:
        for split, n in (("train", num_train), ("val", num_val)):
            img_dir = root / IMAGES_DIR / f"{split}_images"
            seg_dir = root / LABELS_DIR / f"{split}_segmentations"
            img_dir.mkdir(parents=True, exist_ok=True)
            seg_dir.mkdir(parents=True, exist_ok=True)
            ids = []
            for i in range(n):
                image_id = f"{10000 + i}_{(seed * 7919 + i) % 1000000:06d}"
                image, mask = generate_scene(scene_rng(seed, split, i), size)
                Image.fromarray(image).save(img_dir / f"{image_id}.jpg", quality=92)
                Image.fromarray(_to_lip(mask), mode="L").save(seg_dir / f"{image_id}.png")
                ids.append(image_id)
                bar.update(1)
            (root / IMAGES_DIR / f"{split}_id.txt").write_text("".join(f"{x}\n" for x in ids))
    return {"root": str(root)}


@register_dataset("lip", write_layout=write_lip)
class LIPDataModule(SegmentationDataModule):
    """LIP: 20 human-parsing classes (0 background), 255 ignored; the flip swaps left and right parts.

    Args:
        root: the folder holding ``TrainVal_images/`` and ``TrainVal_parsing_annotations/``.
        batch_size: training batch size (official: 10 per GPU x 4).
        num_workers: DataLoader workers; None = auto (0 on CPU, cores per GPU less one, up to 8).
        crop_size: training crop (H, W); official 473x473.
        train_resize: every training image is resized to this (H, W) first, whatever its aspect ratio
            (official: 473x473, then the random scale and the crop).
        scale_range: training random-scale range (official: 0.5 + k / 10 for k in 0..11, so [0.5, 1.6]).
        train_split: ``train`` or ``val``.
        val_split: ``train`` or ``val``; also the test and prediction split.
        **kwargs: the remaining :class:`SegmentationDataModule` arguments (eval_size, hflip_prob, ...).
    """

    def __init__(
        self,
        root: str,
        batch_size: int = 10,
        num_workers: int | None = None,
        crop_size: tuple[int, int] | None = (473, 473),
        train_resize: tuple[int, int] | None = (473, 473),
        scale_range: tuple[float, float] | None = (0.5, 1.6),
        train_split: Literal["train", "val"] = "train",
        val_split: Literal["train", "val"] = "val",
        **kwargs: Any,
    ) -> None:
        """Store the root and splits; files are listed on first use."""
        super().__init__(
            labels=get_label_set("lip"),
            batch_size=batch_size,
            num_workers=num_workers,
            crop_size=crop_size,
            train_resize=train_resize,
            scale_range=scale_range,
            **kwargs,
        )
        for name, value in (("train_split", train_split), ("val_split", val_split)):
            if value not in SPLITS:
                raise ValueError(f"{name} must be one of {SPLITS}, got {value!r}")
        self.root = Path(root).expanduser()
        self.train_split = train_split
        self.val_split = val_split
        self.test_split = val_split
        self.predict_split = val_split

    def describe_split(self, split: str) -> str:
        """Where the split's id list is expected."""
        return str(self.root / IMAGES_DIR / f"{split}_id.txt")

    def list_split(self, split: str) -> tuple[list[Sample], list[Problem]]:
        """Resolve ``<split>_id.txt`` to ``<split>_images/<id>.jpg`` and ``<split>_segmentations/<id>.png``.

        Raises:
            DatasetError: unknown split, or a missing id list or folder.
        """
        if split not in SPLITS:
            raise DatasetError(f"unknown LIP split {split!r}; expected one of {SPLITS}")
        list_path = self.root / IMAGES_DIR / f"{split}_id.txt"
        if not list_path.is_file():
            raise DatasetError(f"{list_path}: LIP id list not found (root must hold {IMAGES_DIR}/)")
        img_dir = self.root / IMAGES_DIR / f"{split}_images"
        seg_dir = self.root / LABELS_DIR / f"{split}_segmentations"
        for folder in (img_dir, seg_dir):
            if not folder.is_dir():
                raise DatasetError(f"{folder}: LIP folder not found (needed by {list_path})")
        return pair_listed(read_id_list(list_path), img_dir, ".jpg", seg_dir, ".png", list_path)


__all__ = ["LIPDataModule", "write_lip"]
