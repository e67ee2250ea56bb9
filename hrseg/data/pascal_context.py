"""PASCAL-Context (59 and 60 classes) on the VOC2010 images, read from ``VOCdevkit/VOC2010``.

Labels are PNGs of the 60-class values (0 background, 1..59 the classes of
:mod:`hrseg.labelsets.pascal_context_59`) in ``SegmentationClassContext/<id>.png``: what
``hrseg data convert --datamodule pascal_context_59`` writes from the per-image ``.mat`` release
(``trainval/<id>.mat``, a uint16 ``LabelMap`` of the full 459-class labelling), and what mmsegmentation's
converter writes from the Detail API's ``trainval_merged.json``. The 59-class dataset ignores background (the
official ``reduce_zero_label``), the 60-class one trains it as class 0. Split lists: mmsegmentation's
``ImageSets/SegmentationContext/<split>.txt`` when present, else VOC2010's own ``ImageSets/Main/<split>.txt``
(4,998 train and 5,105 val images: the PASCAL-Context images).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from hrseg.data.checks import (
    DEFAULT_ENCODING,
    ConversionReport,
    DatasetError,
    LabelSpec,
    Problem,
    Sample,
    pair_listed,
    read_mat_mask,
)
from hrseg.data.datamodule import SegmentationDataModule
from hrseg.data.layouts import progress_bar
from hrseg.data.registry import register_dataset
from hrseg.data.scenes import SCENE_LABELS, generate_scene, scene_rng
from hrseg.data.voc import find_voc_dir, read_id_list
from hrseg.images import save_png
from hrseg.labelsets.pascal_context_59 import CLASSES
from hrseg.metadata import LabelSet, get_label_set

#: classes of the full labelling (``labels.txt``: ``1: accordion`` .. ``459: ...``); 0 marks unlabelled pixels
NUM_SOURCE_CLASSES = 459
MASK_DIR = "SegmentationClassContext"
MAT_DIR = "trainval"
LABELS_FILE = "labels.txt"
#: split lists looked for in order: mmsegmentation's converter output, then VOC2010's main image sets
LIST_DIRS = ("ImageSets/SegmentationContext", "ImageSets/Main")


def source_lookup_table() -> np.ndarray:
    """459-class id -> 60-class value: the 59 classes -> 1..59, every other id and 0 (unlabelled) -> 0.

    Index ``NUM_SOURCE_CLASSES + 1`` and beyond are no ids of the release; callers refuse them.
    """
    lut = np.zeros(NUM_SOURCE_CLASSES + 1, dtype=np.uint8)
    for value, (_, source_id) in enumerate(CLASSES, start=1):
        lut[source_id] = value
    return lut


def read_source_labels(path: Path) -> dict[int, str]:
    """Read the release's ``labels.txt`` (``<id>: <name>`` per line) into ``{id: name}``.

    Raises:
        DatasetError: a line of another form, or ids outside 1..459.
    """
    names: dict[int, str] = {}
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        key, sep, name = line.partition(":")
        if not sep or not key.strip().isdigit() or not 1 <= int(key) <= NUM_SOURCE_CLASSES:
            raise DatasetError(
                f"{path}:{number}: expected '<id>: <name>' with an id in 1..{NUM_SOURCE_CLASSES}, "
                f"got {line!r}"
            )
        names[int(key)] = name.strip()
    return names


def _name_key(name: str) -> str:
    return "".join(c for c in name.lower() if c.isalnum())


def check_source_labels(path: Path) -> list[str]:
    """The 59 classes whose id names another class in ``labels.txt`` (empty: the expected release)."""
    names = read_source_labels(path)
    return [
        f"id {source_id} is {names.get(source_id)!r} in {path.name}, expected {name!r}"
        for name, source_id in CLASSES
        if _name_key(names.get(source_id, "")) != _name_key(name)
    ]


def read_label_map(path: Path) -> np.ndarray:
    """Read the 459-class ``LabelMap`` of one ``trainval/<id>.mat`` file.

    Raises:
        DatasetError: unreadable file, no 2-D integer ``LabelMap``, or ids above 459.
    """
    label_map = read_mat_mask(path, "LabelMap")
    top = int(label_map.max()) if label_map.size else 0
    if top > NUM_SOURCE_CLASSES or (label_map.size and int(label_map.min()) < 0):
        raise DatasetError(f"{path}: LabelMap ids outside 0..{NUM_SOURCE_CLASSES} (max {top})")
    return label_map


def convert_pascal_context(root: str, progress: bool = True, overwrite: bool = False) -> ConversionReport:
    """Convert the ``.mat`` release into the 60-class PNGs the DataModules read.

    Reads ``VOC2010/trainval/<id>.mat`` and writes ``VOC2010/SegmentationClassContext/<id>.png`` (8-bit,
    0 background, 1..59 the classes; :func:`source_lookup_table`). ``labels.txt`` (in ``VOC2010`` or in
    ``trainval``), when present, must name the 59 classes at their ids. Each PNG is written atomically, so a
    bad or interrupted input leaves no partial file; bad inputs are reported, the others converted.

    Args:
        root: the folder holding ``VOCdevkit``, ``VOCdevkit`` or ``VOC2010`` itself.
        progress: show a progress bar.
        overwrite: rewrite PNGs that exist already (default: keep them).

    Raises:
        DatasetError: no VOC2010 tree, no ``trainval`` folder of ``.mat`` files, or a ``labels.txt`` of
            another labelling.
    """
    voc = find_voc_dir(root, year="2010")
    mat_dir = voc / MAT_DIR
    mats = sorted(mat_dir.glob("*.mat")) if mat_dir.is_dir() else []
    if not mats:
        raise DatasetError(f"{mat_dir}: no PASCAL-Context .mat files (extract trainval.tar.gz into {voc})")
    for labels_txt in (voc / LABELS_FILE, mat_dir / LABELS_FILE):
        if labels_txt.is_file():
            wrong = check_source_labels(labels_txt)
            if wrong:
                raise DatasetError(
                    f"{labels_txt}: not the 459-class labelling expected: {'; '.join(wrong[:3])}"
                )
    out_dir = voc / MASK_DIR
    report = ConversionReport(output=str(out_dir))
    lut = source_lookup_table()
    with progress_bar(len(mats), "pascal_context", progress) as bar:
        for mat in mats:
            target = out_dir / f"{mat.stem}.png"
            if target.is_file() and not overwrite:
                report.kept += 1
            else:
                try:
                    values = lut[read_label_map(mat)]
                except DatasetError as exc:
                    report.problems.append(Problem(str(mat), str(exc).removeprefix(f"{mat}: ")))
                else:
                    save_png(Image.fromarray(values, mode="L"), target)
                    report.written += 1
            bar.update(1)
    return report


# Generated scene classes -> PASCAL-Context classes; "pole" has no class among the 59: id 300 stands for one
# of the 400 others (background after conversion), as the real files hold.
_SCENE_TO_CONTEXT = {
    "road": "road", "sidewalk": "sidewalk", "building": "building", "wall": "wall", "fence": "fence",
    "traffic light": "light", "traffic sign": "sign", "vegetation": "tree", "terrain": "grass", "sky": "sky",
    "person": "person", "rider": "person", "car": "car", "truck": "truck", "bus": "bus", "train": "train",
    "motorcycle": "motorbike", "bicycle": "bicycle",
}  # fmt: skip
_UNMAPPED_ID = 300


def _to_source_ids(mask: np.ndarray) -> np.ndarray:
    """Generated scene train ids -> 459-class ids (uint16), with a 2-pixel unlabelled (0) frame."""
    ids = dict(CLASSES)
    lut = np.full(256, _UNMAPPED_ID, dtype=np.uint16)
    for scene_class, context_class in _SCENE_TO_CONTEXT.items():
        lut[SCENE_LABELS.class_names.index(scene_class)] = ids[context_class]
    lut[SCENE_LABELS.ignore_index] = 0
    out = lut[mask]
    out[:2, :] = out[-2:, :] = 0
    out[:, :2] = out[:, -2:] = 0
    return out


def write_pascal_context(
    out: str | Path,
    num_train: int,
    num_val: int,
    seed: int = 0,
    size: tuple[int, int] = (128, 256),
    progress: bool = True,
) -> dict[str, Any]:
    """Write generated scenes as the PASCAL-Context downloads: VOC2010 images + the ``.mat`` release.

    Layout under ``out/VOCdevkit/VOC2010``: ``JPEGImages/<id>.jpg``,
    ``ImageSets/Main/{train,val,trainval}.txt`` and ``trainval/<id>.mat`` (uint16 ``LabelMap`` of 459-class
    ids, 0 unlabelled) with ``labels.txt`` (the 59 classes under their ids, ``class_<id>`` for the other
    400). No PNG masks: ``hrseg data convert --datamodule pascal_context_59 --root <out>`` writes them, as for
    the real download.

    Returns:
        The DataModule keywords that read it (after the conversion).
    """
    import scipy.io

    voc = Path(out) / "VOCdevkit" / "VOC2010"
    dirs = {k: voc / k for k in ("JPEGImages", MAT_DIR, "ImageSets/Main")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    names = {source_id: name for name, source_id in CLASSES}
    (voc / LABELS_FILE).write_text(
        "".join(f"{i}: {names.get(i, f'class_{i}')}\n" for i in range(1, NUM_SOURCE_CLASSES + 1))
    )
    ids: dict[str, list[str]] = {"train": [], "val": []}
    counts = {"train": num_train, "val": num_val}
    year = {"train": 2008, "val": 2010}
    with progress_bar(num_train + num_val, "pascal_context", progress) as bar:
        for split, n in counts.items():
            for i in range(n):
                image_id = f"{year[split]}_{i + 1:06d}"
                image, mask = generate_scene(scene_rng(seed, split, i), size)
                Image.fromarray(image).save(dirs["JPEGImages"] / f"{image_id}.jpg", quality=92)
                scipy.io.savemat(str(dirs[MAT_DIR] / f"{image_id}.mat"), {"LabelMap": _to_source_ids(mask)})
                ids[split].append(image_id)
                bar.update(1)
    for name, items in (
        ("train", ids["train"]),
        ("val", ids["val"]),
        ("trainval", ids["train"] + ids["val"]),
    ):
        (dirs["ImageSets/Main"] / f"{name}.txt").write_text("".join(f"{x}\n" for x in items))
    return {"root": str(out)}


class PascalContextDataModule(SegmentationDataModule):
    """PASCAL-Context on ``VOCdevkit/VOC2010``: the base of the 59- and 60-class datasets.

    Args:
        root: the folder holding ``VOCdevkit``, or ``VOCdevkit``, or ``VOCdevkit/VOC2010`` itself.
        labels: the label set (``pascal_context_59`` or ``pascal_context_60``); the files are the same.
        batch_size: training batch size.
        num_workers: DataLoader workers; None = auto (0 on CPU, cores per GPU less one, up to 8).
        crop_size: training crop (H, W); the official recipe uses 520x520.
        train_split: list name used for training.
        val_split: list used for validation (and test, and prediction when no ``predict_path``).
        **kwargs: the remaining :class:`SegmentationDataModule` arguments.
    """

    def __init__(
        self,
        root: str,
        labels: LabelSet,
        batch_size: int = 4,
        num_workers: int | None = None,
        crop_size: tuple[int, int] | None = (520, 520),
        train_split: str = "train",
        val_split: str = "val",
        **kwargs: Any,
    ) -> None:
        """Store the root and split options; the VOC2010 tree is located on first use (:attr:`voc_dir`)."""
        super().__init__(
            labels=labels, batch_size=batch_size, num_workers=num_workers, crop_size=crop_size, **kwargs
        )
        # the files hold 60-class values: the 59-class set maps them (background ignored), 60 reads them
        self.label_specs[DEFAULT_ENCODING] = LabelSpec.of(
            self.labels, raw_ids=bool(self.labels.id_to_train), encoding="PASCAL-Context 60-class"
        )
        self.root = Path(root).expanduser()
        self.train_split = train_split
        self.val_split = val_split
        self.test_split = val_split
        self.predict_split = val_split
        self._voc_dir: Path | None = None

    @property
    def voc_dir(self) -> Path:
        """The resolved ``VOC2010`` folder."""
        if self._voc_dir is None:
            self._voc_dir = find_voc_dir(self.root, year="2010")
        return self._voc_dir

    def describe_split(self, split: str) -> str:
        """Where the split's id list is expected."""
        return " or ".join(str(self.root / "VOCdevkit/VOC2010" / d / f"{split}.txt") for d in LIST_DIRS)

    def list_split(self, split: str) -> tuple[list[Sample], list[Problem]]:
        """Resolve a split's ids to (JPEGImages, SegmentationClassContext) pairs; report missing files.

        Raises:
            DatasetError: when the VOC2010 tree, the list file or the mask folder is missing.
        """
        voc = self.voc_dir
        lists = [voc / d / f"{split}.txt" for d in LIST_DIRS]
        list_path = next((p for p in lists if p.is_file()), None)
        if list_path is None:
            raise DatasetError(f"{lists[0]}: PASCAL-Context split list not found (nor {lists[1]})")
        mask_dir = voc / MASK_DIR
        if not mask_dir.is_dir():
            hint = ""
            if (voc / MAT_DIR).is_dir():
                command = f"hrseg data convert --datamodule {self.labels.name} --root {self.root}"
                hint = f"; convert the .mat release with: {command}"
            raise DatasetError(f"{mask_dir}: PASCAL-Context label folder not found{hint}")
        return pair_listed(read_id_list(list_path), voc / "JPEGImages", ".jpg", mask_dir, ".png", list_path)


@register_dataset("pascal_context_59", write_layout=write_pascal_context, convert=convert_pascal_context)
class PascalContext59DataModule(PascalContextDataModule):
    """PASCAL-Context, 59 classes: background (value 0 of the files) ignored, 1..59 -> train ids 0..58.

    Args:
        root: the folder holding ``VOCdevkit``, or ``VOCdevkit``, or ``VOCdevkit/VOC2010`` itself.
        **kwargs: the :class:`PascalContextDataModule` arguments (batch_size, crop_size, splits, ...).
    """

    def __init__(self, root: str, **kwargs: Any) -> None:
        """Read the 60-class files through the 59-class label set."""
        super().__init__(root, get_label_set("pascal_context_59"), **kwargs)


@register_dataset("pascal_context_60", write_layout=write_pascal_context, convert=convert_pascal_context)
class PascalContext60DataModule(PascalContextDataModule):
    """PASCAL-Context, 60 classes: background (every other class, unlabelled pixels) is class 0.

    Args:
        root: the folder holding ``VOCdevkit``, or ``VOCdevkit``, or ``VOCdevkit/VOC2010`` itself.
        **kwargs: the :class:`PascalContextDataModule` arguments (batch_size, crop_size, splits, ...).
    """

    def __init__(self, root: str, **kwargs: Any) -> None:
        """Read the 60-class files as train ids."""
        super().__init__(root, get_label_set("pascal_context_60"), **kwargs)


__all__ = [
    "PascalContext59DataModule",
    "PascalContext60DataModule",
    "PascalContextDataModule",
    "convert_pascal_context",
    "source_lookup_table",
    "write_pascal_context",
]
