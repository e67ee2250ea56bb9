"""PASCAL VOC 2012 segmentation, optionally with the SBD "aug" training set, read from ``VOCdevkit/VOC2012``.

Masks are palette PNGs whose pixel values are the class indices (0..20, 255 = border / difficult); they are
read as indices, never as colours. With ``aug=True`` training uses ``SegmentationClassAug`` and the trainaug
list, while validation stays on the original VOC val masks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from hrseg.data.checks import DatasetError, Problem, Sample
from hrseg.data.datamodule import SegmentationDataModule
from hrseg.data.metadata import IGNORE_INDEX, VOC_CLASSES, VOC_NUM_CLASSES, VOC_PALETTE

AUG_SPLIT = "trainaug"
_AUG_LISTS = (
    "ImageSets/Segmentation/trainaug.txt",
    "ImageSets/Segmentation/train_aug.txt",
    "ImageSets/SegmentationAug/trainaug.txt",
    "ImageSets/SegmentationAug/train_aug.txt",
    "trainaug.txt",
    "train_aug.txt",
)


def find_voc_dir(root: str | Path) -> Path:
    """Find ``VOC2012`` from ``root``: the folder holding ``VOCdevkit``, ``VOCdevkit`` or ``VOC2012`` itself.

    Raises:
        DatasetError: naming every place looked at when none holds ``JPEGImages``.
    """
    root = Path(root).expanduser()
    candidates = [root / "VOCdevkit" / "VOC2012", root / "VOC2012", root]
    kinds = ("the folder holding VOCdevkit", "the VOCdevkit folder", "the VOC2012 folder itself")
    for cand, kind in zip(candidates, kinds, strict=True):
        if (cand / "JPEGImages").is_dir():
            rank_zero_info(f"VOCDataModule: root {root} is {kind}; reading {cand}")
            return cand
    tried = ", ".join(str(c / "JPEGImages") for c in candidates)
    raise DatasetError(f"{root}: no PASCAL VOC 2012 tree found (looked for {tried})")


def read_id_list(path: Path) -> list[str]:
    """Read an image-id list; duplicates are dropped, order kept.

    Args:
        path: a text file of plain ids, or of DeepLab-style ``/JPEGImages/x.jpg /SegmentationClassAug/x.png``
            lines (the first token's stem is the id).

    Returns:
        The image ids in file order.
    """
    ids: list[str] = []
    seen: set[str] = set()
    for line in path.read_text().splitlines():
        tokens = line.split()
        if not tokens:
            continue
        token = tokens[0]
        image_id = Path(token).stem if ("/" in token or Path(token).suffix) else token
        if image_id not in seen:
            seen.add(image_id)
            ids.append(image_id)
    return ids


class VOCDataModule(SegmentationDataModule):
    """PASCAL VOC 2012: 21 classes (background + 20), 255 ignored; ``aug=True`` adds the SBD training set.

    Args:
        root: the folder holding ``VOCdevkit``, or ``VOCdevkit``, or ``VOCdevkit/VOC2012`` itself.
        aug: train on ``SegmentationClassAug`` with ``trainaug.txt`` (or ``train.txt`` + ``aug.txt``).
        batch_size: training batch size.
        num_workers: DataLoader workers; None = auto (0 on CPU, cores per GPU less one, up to 8).
        crop_size: training crop (H, W); 512x512 is the usual recipe.
        train_split: list name under ``ImageSets/Segmentation`` used when ``aug`` is False.
        val_split: list used for validation (and test, and prediction when no ``predict_path``).
        **kwargs: the remaining :class:`SegmentationDataModule` arguments.
    """

    def __init__(
        self,
        root: str,
        aug: bool = False,
        batch_size: int = 8,
        num_workers: int | None = None,
        crop_size: tuple[int, int] | None = (512, 512),
        train_split: str = "train",
        val_split: str = "val",
        **kwargs: Any,
    ) -> None:
        """Store the root and split options; the VOC tree is located on first use (:attr:`voc_dir`)."""
        super().__init__(
            num_classes=VOC_NUM_CLASSES,
            class_names=VOC_CLASSES,
            palette=VOC_PALETTE,
            ignore_index=IGNORE_INDEX,
            batch_size=batch_size,
            num_workers=num_workers,
            crop_size=crop_size,
            **kwargs,
        )
        self.root = Path(root).expanduser()
        self.aug = aug
        self.train_split = AUG_SPLIT if aug else train_split
        self.val_split = val_split
        self.test_split = val_split
        self.predict_split = val_split
        self._voc_dir: Path | None = None

    @property
    def voc_dir(self) -> Path:
        """The resolved ``VOC2012`` folder (logged once, so users see which layout was recognised)."""
        if self._voc_dir is None:
            self._voc_dir = find_voc_dir(self.root)
        return self._voc_dir

    def describe_split(self, split: str) -> str:
        """Where the split's id list is expected."""
        if split == AUG_SPLIT:
            return f"{self.root}: one of {', '.join(_AUG_LISTS)} or ImageSets/Segmentation/aug.txt"
        return str(self.root / "VOCdevkit/VOC2012/ImageSets/Segmentation" / f"{split}.txt")

    def _aug_ids(self) -> tuple[list[str], Path]:
        voc = self.voc_dir
        for rel in _AUG_LISTS:
            if (voc / rel).is_file():
                return read_id_list(voc / rel), voc / rel
        seg = voc / "ImageSets" / "Segmentation"
        if (seg / "aug.txt").is_file() and (seg / "train.txt").is_file():
            ids = read_id_list(seg / "train.txt")
            known = set(ids)
            ids += [i for i in read_id_list(seg / "aug.txt") if i not in known]
            return ids, seg / "aug.txt"
        raise DatasetError(
            f"{voc}: aug=True but no augmented training list found; expected one of "
            f"{', '.join(str(voc / r) for r in _AUG_LISTS)} or {seg / 'train.txt'} + {seg / 'aug.txt'}"
        )

    def list_split(self, split: str) -> tuple[list[Sample], list[Problem]]:
        """Resolve a split's ids to (JPEGImages, SegmentationClass[Aug]) pairs; report missing files.

        Raises:
            DatasetError: when the VOC tree, the list file or the mask folder is missing.
        """
        voc = self.voc_dir
        if split == AUG_SPLIT:
            ids, list_path = self._aug_ids()
            mask_dir = voc / "SegmentationClassAug"
            val_list = voc / "ImageSets" / "Segmentation" / f"{self.val_split}.txt"
            if val_list.is_file():
                overlap = set(ids) & set(read_id_list(val_list))
                if overlap:
                    rank_zero_warn(
                        f"VOCDataModule: {len(overlap)} ids of {list_path} are also in {val_list} "
                        "(validation images used for training)"
                    )
        else:
            list_path = voc / "ImageSets" / "Segmentation" / f"{split}.txt"
            if not list_path.is_file():
                raise DatasetError(f"{list_path}: VOC split list not found")
            ids = read_id_list(list_path)
            mask_dir = voc / "SegmentationClass"
        if not mask_dir.is_dir():
            raise DatasetError(f"{mask_dir}: VOC mask directory not found (needed by {list_path})")
        samples: list[Sample] = []
        problems: list[Problem] = []
        for image_id in ids:
            image = voc / "JPEGImages" / f"{image_id}.jpg"
            if not image.is_file():
                alt = [p for p in (voc / "JPEGImages").glob(f"{image_id}.*") if p.is_file()]
                if len(alt) == 1:
                    image = alt[0]
                else:
                    problems.append(Problem(str(image), f"image listed in {list_path.name} not found"))
                    continue
            mask = mask_dir / f"{image_id}.png"
            if not mask.is_file():
                problems.append(Problem(str(mask), f"missing mask for {image} (listed in {list_path.name})"))
                continue
            samples.append(Sample(image, mask, image_id))
        return samples, problems


__all__ = ["VOCDataModule", "find_voc_dir", "read_id_list"]
