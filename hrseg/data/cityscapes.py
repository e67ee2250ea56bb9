"""Cityscapes (fine annotations) read straight from the distributed ``leftImg8bit/`` + ``gtFine/`` trees.

Labels come from ``*_gtFine_labelTrainIds.png`` when cityscapesScripts produced them, otherwise from
``*_gtFine_labelIds.png`` through the official labelId -> trainId table; no conversion step is needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from hrseg.data.checks import DatasetError, LabelSpec, Problem, Sample, require_dir
from hrseg.data.datamodule import SegmentationDataModule
from hrseg.data.layouts import progress_bar
from hrseg.data.registry import register_dataset
from hrseg.data.scenes import generate_scene, scene_rng
from hrseg.labelsets.cityscapes import LABELS
from hrseg.metadata import get_label_set

IMAGE_SUFFIX = "_leftImg8bit.png"
TRAIN_IDS_SUFFIX = "_gtFine_labelTrainIds.png"
LABEL_IDS_SUFFIX = "_gtFine_labelIds.png"
SPLITS = ("train", "val", "test", "trainval")


_CITIES = {"train": ("aachen", "bochum"), "val": ("frankfurt",), "test": ("berlin",)}


def _color_png(label_ids: np.ndarray) -> np.ndarray:
    """The ``*_gtFine_color.png`` of a labelIds map (RGBA, the official colours)."""
    table = np.zeros((256, 4), dtype=np.uint8)
    for lab in LABELS:
        if lab.id >= 0:
            table[lab.id] = (*lab.color, 255)
    return table[label_ids]


def write_cityscapes(
    out: str | Path,
    num_train: int,
    num_val: int,
    seed: int = 0,
    size: tuple[int, int] = (128, 256),
    progress: bool = True,
    num_test: int | None = None,
    train_ids: bool = False,
) -> dict[str, Any]:
    """Write generated scenes in the Cityscapes layout (leftImg8bit/ + gtFine/ with labelIds and colour PNGs).

    A 2-pixel frame is labelled "rectification border" (id 2, ignored), like the real masks' ignored regions.

    Args:
        out: dataset root (gets ``leftImg8bit/`` and ``gtFine/``).
        num_train: images in train (spread over two cities).
        num_val: images in val.
        seed: scene seed.
        size: (H, W).
        progress: show a progress bar.
        num_test: images in test (no labels, as in the real release); None = ``num_val``.
        train_ids: also write ``*_gtFine_labelTrainIds.png`` (as cityscapesScripts' createTrainIdLabelImgs).

    Returns:
        The :class:`CityscapesDataModule` keywords that read it.
    """
    root = Path(out)
    labels = get_label_set("cityscapes")
    to_label_id = labels.train_to_id().astype(np.uint8)
    counts = {"train": num_train, "val": num_val, "test": num_val if num_test is None else num_test}
    with progress_bar(sum(counts.values()), "cityscapes", progress) as bar:
        for split, n in counts.items():
            cities = _CITIES[split]
            for i in range(n):
                city = cities[i % len(cities)]
                stem = f"{city}_{i // len(cities):06d}_000019"
                image, mask = generate_scene(scene_rng(seed, split, i), size)
                img_dir = root / "leftImg8bit" / split / city
                img_dir.mkdir(parents=True, exist_ok=True)
                Image.fromarray(image).save(img_dir / f"{stem}{IMAGE_SUFFIX}")
                if split != "test":
                    gt_dir = root / "gtFine" / split / city
                    gt_dir.mkdir(parents=True, exist_ok=True)
                    label_ids = to_label_id[mask]
                    label_ids[:2, :] = label_ids[-2:, :] = 2
                    label_ids[:, :2] = label_ids[:, -2:] = 2
                    Image.fromarray(label_ids, mode="L").save(gt_dir / f"{stem}{LABEL_IDS_SUFFIX}")
                    Image.fromarray(_color_png(label_ids), mode="RGBA").save(
                        gt_dir / f"{stem}_gtFine_color.png"
                    )
                    if train_ids:
                        tid = mask.copy()
                        tid[label_ids == 2] = labels.ignore_index
                        Image.fromarray(tid, mode="L").save(gt_dir / f"{stem}{TRAIN_IDS_SUFFIX}")
                bar.update(1)
    return {"root": str(root)}


@register_dataset("cityscapes", write_layout=write_cityscapes)
class CityscapesDataModule(SegmentationDataModule):
    """Cityscapes fine: 19 train ids, the rest ignored; train / val / test splits and a trainval option.

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
            labels=get_label_set("cityscapes"),
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
        self.label_specs["trainIds"] = LabelSpec.of(self.labels, encoding="Cityscapes labelTrainIds")
        self.label_specs["labelIds"] = LabelSpec.of(self.labels, raw_ids=True, encoding="Cityscapes labelIds")

    def list_encoding(self, mask: Path) -> str:
        """A listed ``*_gtFine_labelTrainIds.png`` holds train ids; any other label file labelIds."""
        return "trainIds" if mask.name.endswith(TRAIN_IDS_SUFFIX) else "labelIds"

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
