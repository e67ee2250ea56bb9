"""PASCAL VOC 2012 segmentation, optionally with the SBD "aug" training set, read from ``VOCdevkit/VOC2012``.

Masks are palette PNGs whose pixel values are the class indices (0..20, 255 = border / difficult); they are
read as indices, never as colours. With ``aug=True`` training uses ``SegmentationClassAug`` and the trainaug
list, while validation stays on the original VOC val masks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from PIL import Image

from hrseg.data.checks import DatasetError, Problem, Sample
from hrseg.data.datamodule import SegmentationDataModule
from hrseg.data.layouts import progress_bar
from hrseg.data.registry import register_dataset
from hrseg.data.scenes import SCENE_LABELS, generate_scene, scene_rng
from hrseg.metadata import LabelSet, get_label_set

AUG_SPLIT = "trainaug"
_AUG_LISTS = (
    "ImageSets/Segmentation/trainaug.txt",
    "ImageSets/Segmentation/train_aug.txt",
    "ImageSets/SegmentationAug/trainaug.txt",
    "ImageSets/SegmentationAug/train_aug.txt",
    "trainaug.txt",
    "train_aug.txt",
)


def find_voc_dir(root: str | Path, year: str = "2012") -> Path:
    """Find ``VOC<year>`` from ``root``: the folder holding ``VOCdevkit``, ``VOCdevkit`` or ``VOC<year>``.

    Args:
        root: where the user says the dataset is.
        year: ``"2012"`` (PASCAL VOC segmentation) or ``"2010"`` (the PASCAL-Context images).

    Raises:
        DatasetError: naming every place looked at when none holds ``JPEGImages``.
    """
    root = Path(root).expanduser()
    voc = f"VOC{year}"
    candidates = [root / "VOCdevkit" / voc, root / voc, root]
    kinds = ("the folder holding VOCdevkit", "the VOCdevkit folder", f"the {voc} folder itself")
    for cand, kind in zip(candidates, kinds, strict=True):
        if (cand / "JPEGImages").is_dir():
            rank_zero_info(f"root {root} is {kind}; reading {cand}")
            return cand
    tried = ", ".join(str(c / "JPEGImages") for c in candidates)
    raise DatasetError(f"{root}: no PASCAL VOC {year} tree found (looked for {tried})")


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


# Generated scene classes -> VOC classes (everything else is background).
_SCENE_TO_VOC = {
    "person": "person",
    "rider": "person",
    "car": "car",
    "truck": "car",
    "bus": "bus",
    "train": "train",
    "motorcycle": "motorbike",
    "bicycle": "bicycle",
}


def _voc_borders(labels: np.ndarray, ignore_index: int, width: int = 1) -> np.ndarray:
    """Mark object outlines with the ignore value like the VOC annotations (pixels next to another label)."""
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
    out[edge] = ignore_index
    return out


def _to_voc(mask: np.ndarray, labels: LabelSet) -> np.ndarray:
    """Generated scene classes -> VOC classes (person, car, bus, ...; everything else is background)."""
    lut = np.zeros(256, dtype=np.uint8)
    for scene_class, voc_class in _SCENE_TO_VOC.items():
        lut[SCENE_LABELS.class_names.index(scene_class)] = labels.class_names.index(voc_class)
    lut[SCENE_LABELS.ignore_index] = labels.ignore_index
    return lut[mask]


def _save_palette_png(indices: np.ndarray, palette: list[tuple[int, int, int]], path: Path) -> None:
    img = Image.fromarray(indices.astype(np.uint8), mode="P")
    img.putpalette([c for rgb in palette for c in rgb])
    img.save(path)


def write_voc(
    out: str | Path,
    num_train: int,
    num_val: int,
    seed: int = 0,
    size: tuple[int, int] = (128, 256),
    progress: bool = True,
    num_aug: int | None = None,
) -> dict[str, Any]:
    """Write generated scenes in the PASCAL VOC 2012 layout, plus the SBD "aug" extension.

    Layout: ``VOCdevkit/VOC2012/`` with ``JPEGImages``, ``SegmentationClass``, ``SegmentationClassAug`` and
    ``ImageSets/Segmentation``.
    SegmentationClass masks are palette PNGs with ignored outlines; SegmentationClassAug masks are greyscale
    (train, val and ``num_aug`` extra images, default ``num_train``); lists train / val / trainval /
    trainaug / aug. Scene classes map to VOC: person, car, bus, ...; everything else is background.

    Returns:
        The :class:`VOCDataModule` keywords that read it (with the aug training set).
    """
    labels = get_label_set("voc")
    num_aug = num_train if num_aug is None else num_aug
    voc = Path(out) / "VOCdevkit" / "VOC2012"
    dirs = {k: voc / k for k in ("JPEGImages", "SegmentationClass", "SegmentationClassAug")}
    lists_dir = voc / "ImageSets" / "Segmentation"
    for d in [*dirs.values(), lists_dir]:
        d.mkdir(parents=True, exist_ok=True)
    ids: dict[str, list[str]] = {"train": [], "val": [], "aug": []}
    counts = {"train": num_train, "val": num_val, "aug": num_aug}
    year = {"train": 2007, "val": 2008, "aug": 2011}
    with progress_bar(sum(counts.values()), "voc", progress) as bar:
        for split, n in counts.items():
            for i in range(n):
                image_id = f"{year[split]}_{i + 1:06d}"
                image, mask = generate_scene(scene_rng(seed, "test" if split == "aug" else split, i), size)
                voc_mask = _to_voc(mask, labels)
                Image.fromarray(image).save(dirs["JPEGImages"] / f"{image_id}.jpg", quality=92)
                if split != "aug":
                    _save_palette_png(
                        _voc_borders(voc_mask, labels.ignore_index),
                        list(labels.palette),
                        dirs["SegmentationClass"] / f"{image_id}.png",
                    )
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
    return {"root": str(out), "aug": True}


@register_dataset("voc", write_layout=write_voc)
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
            labels=get_label_set("voc"),
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
