"""ADE20K (the SceneParsing 2016 benchmark release) read from the distributed ``ADEChallengeData2016/`` tree.

``images/{training,validation}/ADE_{train,val}_%08d.jpg`` pair with ``annotations/{training,validation}/``
PNGs of the same stem; annotation values 0..150, 0 ("other") ignored and 1..150 -> train ids 0..149 (the
official ``reduce_zero_label``). docs/reference/datasets.md "ADE20K".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image

from hrseg.data.checks import (
    DEFAULT_ENCODING,
    DatasetError,
    LabelSpec,
    Problem,
    Sample,
    pair_folders,
    require_dir,
)
from hrseg.data.datamodule import SegmentationDataModule
from hrseg.data.layouts import progress_bar, scene_to_raw
from hrseg.data.registry import register_dataset
from hrseg.data.scenes import generate_scene, scene_rng
from hrseg.metadata import get_label_set

ROOT_NAME = "ADEChallengeData2016"
#: split -> (folder name under images/ and annotations/, file-name prefix)
SPLITS: dict[str, tuple[str, str]] = {"train": ("training", "ADE_train_"), "val": ("validation", "ADE_val_")}

# Generated scene classes -> ADE20K annotation values (class index + 1); unlabelled pixels -> 0 ("other").
_SCENE_TO_ADE = {
    "road": "road",
    "sidewalk": "sidewalk",
    "building": "building",
    "wall": "wall",
    "fence": "fence",
    "pole": "pole",
    "traffic light": "traffic light",
    "traffic sign": "signboard",
    "vegetation": "tree",
    "terrain": "grass",
    "sky": "sky",
    "person": "person",
    "rider": "person",
    "car": "car",
    "truck": "truck",
    "bus": "bus",
    "train": "bus",  # ADE20K has no train class
    "motorcycle": "minibike",
    "bicycle": "bicycle",
}


def find_ade_dir(root: str | Path) -> Path:
    """``ADEChallengeData2016`` from ``root``: the folder holding it, or the folder itself.

    Raises:
        DatasetError: naming both places looked at when neither holds ``images/``.
    """
    root = Path(root).expanduser()
    for cand in (root / ROOT_NAME, root):
        if (cand / "images").is_dir():
            return cand
    raise DatasetError(
        f"{root}: no ADE20K tree found (looked for {root / ROOT_NAME / 'images'} and {root / 'images'})"
    )


def write_ade20k(
    out: str | Path,
    num_train: int,
    num_val: int,
    seed: int = 0,
    size: tuple[int, int] = (128, 256),
    progress: bool = True,
) -> dict[str, Any]:
    """Write generated scenes in the ADE20K layout: ``ADEChallengeData2016/{images,annotations}/...``.

    Images are JPEGs, annotations greyscale PNGs of ADE20K values (scene classes mapped to the closest ADE20K
    class, a 2-pixel frame of 0 = "other", ignored like the real unlabelled pixels).

    Args:
        out: the folder that gets ``ADEChallengeData2016/``.
        num_train: images in ``training``.
        num_val: images in ``validation``.
        seed: scene seed.
        size: (H, W).
        progress: show a progress bar.

    Returns:
        The :class:`ADE20KDataModule` keywords that read it.
    """
    root = Path(out)
    labels = get_label_set("ade20k")
    raw_of = {scene: labels.class_names.index(ade) + 1 for scene, ade in _SCENE_TO_ADE.items()}
    ade = root / ROOT_NAME
    counts = {"train": num_train, "val": num_val}
    with progress_bar(sum(counts.values()), "ade20k", progress) as bar:
        for split, n in counts.items():
            folder, prefix = SPLITS[split]
            img_dir, ann_dir = ade / "images" / folder, ade / "annotations" / folder
            img_dir.mkdir(parents=True, exist_ok=True)
            ann_dir.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                stem = f"{prefix}{i + 1:08d}"
                image, mask = generate_scene(scene_rng(seed, split, i), size)
                raw = scene_to_raw(mask, raw_of, unlabelled=0)
                raw[:2, :] = raw[-2:, :] = 0
                raw[:, :2] = raw[:, -2:] = 0
                Image.fromarray(image).save(img_dir / f"{stem}.jpg", quality=92)
                Image.fromarray(raw, mode="L").save(ann_dir / f"{stem}.png")
                bar.update(1)
    return {"root": str(root)}


@register_dataset("ade20k", write_layout=write_ade20k)
class ADE20KDataModule(SegmentationDataModule):
    """ADE20K SceneParsing: 150 classes, annotation value 0 ignored; ``train`` and ``val`` splits.

    Args:
        root: the folder holding ``ADEChallengeData2016``, or that folder itself.
        batch_size: training batch size.
        num_workers: DataLoader workers; None = auto (0 on CPU, cores per GPU less one, up to 8).
        crop_size: training crop (H, W); the official recipe uses 520x520.
        **kwargs: the remaining :class:`SegmentationDataModule` arguments (``list_files`` for the official
            ``.lst`` lists, eval_batch_size, scale_range, ...).
    """

    def __init__(
        self,
        root: str,
        batch_size: int = 8,
        num_workers: int | None = None,
        crop_size: tuple[int, int] | None = (520, 520),
        **kwargs: Any,
    ) -> None:
        """Store the root; the annotations are read through the ADE20K table (0 ignored, v -> v - 1)."""
        super().__init__(
            labels=get_label_set("ade20k"),
            batch_size=batch_size,
            num_workers=num_workers,
            crop_size=crop_size,
            **kwargs,
        )
        self.root = Path(root).expanduser()
        self.label_specs[DEFAULT_ENCODING] = LabelSpec.of(
            self.labels, raw_ids=True, encoding="ADE20K annotation"
        )

    def describe_split(self, split: str) -> str:
        """Where the split's images and annotations are expected."""
        folder, prefix = SPLITS.get(split, (split, ""))
        ade = self.root / ROOT_NAME
        return f"{ade}/images/{folder}/{prefix}*.jpg and {ade}/annotations/{folder}/{prefix}*.png"

    def list_split(self, split: str) -> tuple[list[Sample], list[Problem]]:
        """Pair every image of the split with the annotation of the same stem; report unpaired files.

        Raises:
            DatasetError: unknown split, or the tree or one of the split's folders is missing.
        """
        if split not in SPLITS:
            raise DatasetError(f"unknown ADE20K split {split!r}; expected one of {tuple(SPLITS)}")
        ade = find_ade_dir(self.root)
        folder, _ = SPLITS[split]
        img_dir = require_dir(ade / "images" / folder, f"ADE20K images (images/{folder})")
        ann_dir = require_dir(ade / "annotations" / folder, f"ADE20K annotations (annotations/{folder})")
        return pair_folders(img_dir, ".jpg", ann_dir, ".png")


__all__ = ["ADE20KDataModule", "find_ade_dir", "write_ade20k"]
