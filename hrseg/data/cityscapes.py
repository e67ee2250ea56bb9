"""Cityscapes (fine annotations) read straight from the distributed ``leftImg8bit/`` + ``gtFine/`` trees.

Labels come from ``*_gtFine_labelTrainIds.png`` when cityscapesScripts produced them, otherwise from
``*_gtFine_labelIds.png`` through the official labelId -> trainId table; no conversion step is needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from hrseg.data.checks import DatasetError, LabelSpec, Problem, Sample, require_dir
from hrseg.data.datamodule import SegmentationDataModule
from hrseg.data.metadata import (
    CITYSCAPES_CLASSES,
    CITYSCAPES_NUM_CLASSES,
    CITYSCAPES_PALETTE,
    IGNORE_INDEX,
    cityscapes_label_lut,
)

IMAGE_SUFFIX = "_leftImg8bit.png"
TRAIN_IDS_SUFFIX = "_gtFine_labelTrainIds.png"
LABEL_IDS_SUFFIX = "_gtFine_labelIds.png"
SPLITS = ("train", "val", "test", "trainval")


class CityscapesDataModule(SegmentationDataModule):
    """Cityscapes fine: 19 train ids, 255 ignored; train / val / test splits and a trainval option.

    Args:
        root: the folder holding ``leftImg8bit/`` and ``gtFine/``.
        batch_size: training batch size.
        num_workers: DataLoader workers; None = auto (0 on CPU, cores per GPU less one, up to 8).
        crop_size: training crop (H, W); the official recipe uses 512x1024.
        train_split: ``train`` or ``trainval`` (train + val, for test-server submissions).
        val_split: split used for validation.
        test_split: labelled split evaluated by ``test`` (the public test split has no labels).
        predict_split: split predicted when no ``predict_path`` is given (``test`` images by default).
        label_type: ``auto`` uses labelTrainIds files when present and labelIds otherwise (per image);
            ``trainIds`` / ``labelIds`` require that kind.
        **kwargs: the remaining :class:`SegmentationDataModule` arguments (eval_batch_size, scale_range, ...).
    """

    def __init__(
        self,
        root: str,
        batch_size: int = 8,
        num_workers: int | None = None,
        crop_size: tuple[int, int] | None = (512, 1024),
        train_split: Literal["train", "trainval"] = "train",
        val_split: Literal["train", "val"] = "val",
        test_split: Literal["train", "val"] = "val",
        predict_split: Literal["train", "val", "test"] = "test",
        label_type: Literal["auto", "trainIds", "labelIds"] = "auto",
        **kwargs: Any,
    ) -> None:
        """Validate the split and label-type options and register both label encodings."""
        super().__init__(
            num_classes=CITYSCAPES_NUM_CLASSES,
            class_names=CITYSCAPES_CLASSES,
            palette=CITYSCAPES_PALETTE,
            ignore_index=IGNORE_INDEX,
            batch_size=batch_size,
            num_workers=num_workers,
            crop_size=crop_size,
            **kwargs,
        )
        if label_type not in ("auto", "trainIds", "labelIds"):
            raise ValueError(f"label_type must be auto, trainIds or labelIds, got {label_type!r}")
        for name, value in (
            ("train_split", train_split),
            ("val_split", val_split),
            ("test_split", test_split),
            ("predict_split", predict_split),
        ):
            if value not in SPLITS:
                raise ValueError(f"{name} must be one of {SPLITS}, got {value!r}")
        self.root = Path(root).expanduser()
        self.train_split = train_split
        self.val_split = val_split
        self.test_split = test_split
        self.predict_split = predict_split
        self.label_type = label_type
        self.label_specs["trainIds"] = LabelSpec(
            CITYSCAPES_NUM_CLASSES, IGNORE_INDEX, encoding="Cityscapes labelTrainIds"
        )
        self.label_specs["labelIds"] = LabelSpec(
            CITYSCAPES_NUM_CLASSES, IGNORE_INDEX, lut=cityscapes_label_lut(), encoding="Cityscapes labelIds"
        )

    def split_is_labelled(self, split: str) -> bool:
        """The public test split ships without labels."""
        return split != "test"

    def describe_split(self, split: str) -> str:
        """Where the split's images (and labels) are expected."""
        parts = ["train", "val"] if split == "trainval" else [split]
        where = [f"{self.root / 'leftImg8bit' / p}/<city>/*{IMAGE_SUFFIX}" for p in parts]
        if split != "test":
            where += [f"{self.root / 'gtFine' / p}/<city>/*{LABEL_IDS_SUFFIX}" for p in parts]
        return " and ".join(where)

    def list_split(self, split: str) -> tuple[list[Sample], list[Problem]]:
        """Pair every ``*_leftImg8bit.png`` with its gtFine label.

        Images without labels and labels without images are reported as problems, not raised.

        Returns:
            The paired samples and the problems found.

        Raises:
            DatasetError: when ``root``, ``leftImg8bit/<split>`` or ``gtFine/<split>`` is missing.
        """
        if split not in SPLITS:
            raise DatasetError(f"unknown Cityscapes split {split!r}; expected one of {SPLITS}")
        if not self.root.is_dir():
            raise DatasetError(f"{self.root}: Cityscapes root directory not found")
        parts = ["train", "val"] if split == "trainval" else [split]
        samples: list[Sample] = []
        problems: list[Problem] = []
        for part in parts:
            s, p = self._list_part(part, labelled=self.split_is_labelled(split))
            samples += s
            problems += p
        return samples, problems

    def _list_part(self, part: str, labelled: bool) -> tuple[list[Sample], list[Problem]]:
        img_root = require_dir(self.root / "leftImg8bit" / part, f"Cityscapes images (leftImg8bit/{part})")
        images = sorted(img_root.glob(f"*/*{IMAGE_SUFFIX}"))
        samples: list[Sample] = []
        problems: list[Problem] = []
        if not labelled:
            return [Sample(p, None, p.name[: -len(IMAGE_SUFFIX)]) for p in images], problems
        gt_root = require_dir(self.root / "gtFine" / part, f"Cityscapes labels (gtFine/{part})")
        seen: set[tuple[str, str]] = set()
        for img in images:
            city, prefix = img.parent.name, img.name[: -len(IMAGE_SUFFIX)]
            seen.add((city, prefix))
            train_ids = gt_root / city / f"{prefix}{TRAIN_IDS_SUFFIX}"
            label_ids = gt_root / city / f"{prefix}{LABEL_IDS_SUFFIX}"
            if self.label_type in ("auto", "trainIds") and train_ids.is_file():
                samples.append(Sample(img, train_ids, prefix, "trainIds"))
            elif self.label_type in ("auto", "labelIds") and label_ids.is_file():
                samples.append(Sample(img, label_ids, prefix, "labelIds"))
            else:
                wanted = {
                    "auto": f"{train_ids} or {label_ids}",
                    "trainIds": str(train_ids),
                    "labelIds": str(label_ids),
                }[self.label_type]
                problems.append(Problem(str(img), f"missing label file: expected {wanted}"))
        for suffix in (LABEL_IDS_SUFFIX, TRAIN_IDS_SUFFIX):
            for mask in sorted(gt_root.glob(f"*/*{suffix}")):
                city, prefix = mask.parent.name, mask.name[: -len(suffix)]
                if (city, prefix) not in seen:
                    expected = img_root / city / f"{prefix}{IMAGE_SUFFIX}"
                    problems.append(Problem(str(mask), f"label without image: expected {expected}"))
                    seen.add((city, prefix))
        return samples, problems


__all__ = ["CityscapesDataModule"]
