"""COCO-Stuff, 171 classes, in its two releases: 164k (``cocostuff``) and 10k (``cocostuff10k``).

- 164k: the COCO 2017 images ``train2017/*.jpg``, ``val2017/*.jpg`` beside the unpacked
  ``stuffthingmaps_trainval2017/{train2017,val2017}/*.png`` (same stems); PNG values are COCO category id - 1
  (0..181), 255 unlabelled; the label set's table maps the 171 ids in use to 0..170 and ignores the rest.
- 10k (the release the official HRNet results use): ``images/*.jpg``, per-image MATLAB ``annotations/*.mat``
  whose ``S`` variable is the label map (0 unlabelled, 1..182 = COCO category id) and the split lists
  ``imageLists/{train,test}.txt`` (one image name per line).

docs/reference/datasets.md "COCO-Stuff".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
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
from hrseg.labelsets.cocostuff import UNLABELLED
from hrseg.metadata import LabelSet, get_label_set

MAPS_DIR = "stuffthingmaps_trainval2017"
#: 164k split -> the COCO 2017 folder name of its images and stuff maps
SPLITS_164K = {"train": "train2017", "val": "val2017"}
#: the 10k release's split lists (``imageLists/<split>.txt``)
SPLITS_10K = ("train", "test")
#: the variable of a 10k ``.mat`` annotation that holds the label map
MAT_KEY = "S"

# Generated scene classes -> COCO-Stuff classes; everything else stays unlabelled.
_SCENE_TO_COCO = {
    "road": "road",
    "sidewalk": "pavement",
    "building": "building-other",
    "wall": "wall-other",
    "fence": "fence",
    "pole": "structural-other",
    "traffic light": "traffic light",
    "traffic sign": "stop sign",
    "vegetation": "tree",
    "terrain": "grass",
    "sky": "sky-other",
    "person": "person",
    "rider": "person",
    "car": "car",
    "truck": "truck",
    "bus": "bus",
    "train": "train",
    "motorcycle": "motorcycle",
    "bicycle": "bicycle",
}


def lookup_table_10k(labels: LabelSet) -> np.ndarray:
    """The 10k release's raw value -> train id table: its values are the 164k ones plus one, 0 unlabelled."""
    lut164 = labels.lookup_table()
    lut = np.full(len(lut164), -1, dtype=np.int32)
    lut[0] = labels.ignore_index
    lut[1 : UNLABELLED + 1] = lut164[:UNLABELLED]
    return lut


def _scene_raw_164k(mask: np.ndarray, labels: LabelSet) -> np.ndarray:
    """A generated scene in 164k values: the raw id of each class (first raw id of its train id)."""
    to_raw = labels.train_to_id()
    raw_of = {scene: int(to_raw[labels.class_names.index(coco)]) for scene, coco in _SCENE_TO_COCO.items()}
    raw = scene_to_raw(mask, raw_of, unlabelled=UNLABELLED)
    raw[:2, :] = raw[-2:, :] = UNLABELLED
    raw[:, :2] = raw[:, -2:] = UNLABELLED
    return raw


def write_cocostuff(
    out: str | Path,
    num_train: int,
    num_val: int,
    seed: int = 0,
    size: tuple[int, int] = (128, 256),
    progress: bool = True,
) -> dict[str, Any]:
    """Write generated scenes in the COCO-Stuff 164k layout: ``{train,val}2017/`` + the stuff-thing maps.

    Args:
        out: the dataset root (gets ``train2017/``, ``val2017/`` and ``stuffthingmaps_trainval2017/``).
        num_train: images in train2017.
        num_val: images in val2017.
        seed: scene seed.
        size: (H, W).
        progress: show a progress bar.

    Returns:
        The :class:`CocoStuffDataModule` keywords that read it.
    """
    root = Path(out)
    labels = get_label_set("cocostuff")
    counts = {"train": num_train, "val": num_val}
    with progress_bar(sum(counts.values()), "cocostuff", progress) as bar:
        for split, n in counts.items():
            folder = SPLITS_164K[split]
            img_dir, map_dir = root / folder, root / MAPS_DIR / folder
            img_dir.mkdir(parents=True, exist_ok=True)
            map_dir.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                stem = f"{(i + 1) * 9 + (0 if split == 'train' else 130):012d}"
                image, mask = generate_scene(scene_rng(seed, split, i), size)
                Image.fromarray(image).save(img_dir / f"{stem}.jpg", quality=92)
                Image.fromarray(_scene_raw_164k(mask, labels), mode="L").save(map_dir / f"{stem}.png")
                bar.update(1)
    return {"root": str(root)}


def write_cocostuff10k(
    out: str | Path,
    num_train: int,
    num_val: int,
    seed: int = 0,
    size: tuple[int, int] = (128, 256),
    progress: bool = True,
) -> dict[str, Any]:
    """Write generated scenes in the COCO-Stuff 10k layout: ``images/``, ``annotations/``, ``imageLists/``.

    Each ``.mat`` holds the label map as ``S`` (uint16, 0 unlabelled, COCO category ids), as in the release.

    Args:
        out: the dataset root.
        num_train: images listed in ``imageLists/train.txt``.
        num_val: images listed in ``imageLists/test.txt`` (the 10k release's evaluation split).
        seed: scene seed.
        size: (H, W).
        progress: show a progress bar.

    Returns:
        The :class:`CocoStuff10kDataModule` keywords that read it.
    """
    from scipy.io import savemat

    root = Path(out)
    labels = get_label_set("cocostuff")
    dirs = {k: root / k for k in ("images", "annotations", "imageLists")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    names: dict[str, list[str]] = {"train": [], "test": []}
    counts = {"train": num_train, "test": num_val}
    with progress_bar(sum(counts.values()), "cocostuff10k", progress) as bar:
        for split, n in counts.items():
            for i in range(n):
                name = f"COCO_{'train' if split == 'train' else 'val'}2014_{(i + 1) * 7:012d}"
                image, mask = generate_scene(scene_rng(seed, "train" if split == "train" else "val", i), size)
                raw = _scene_raw_164k(mask, labels).astype(np.uint16) + 1
                raw[raw == UNLABELLED + 1] = 0
                Image.fromarray(image).save(dirs["images"] / f"{name}.jpg", quality=92)
                savemat(str(dirs["annotations"] / f"{name}.mat"), {MAT_KEY: raw}, do_compression=True)
                names[split].append(name)
                bar.update(1)
    for split, items in names.items():
        (dirs["imageLists"] / f"{split}.txt").write_text("".join(f"{x}\n" for x in items))
    (dirs["imageLists"] / "all.txt").write_text("".join(f"{x}\n" for x in names["train"] + names["test"]))
    return {"root": str(root)}


@register_dataset("cocostuff", write_layout=write_cocostuff)
class CocoStuffDataModule(SegmentationDataModule):
    """COCO-Stuff 164k: 171 classes (COCO category id - 1 through the label set's table), 255 ignored.

    Args:
        root: the folder holding ``train2017/``, ``val2017/`` and ``stuffthingmaps_trainval2017/``.
        batch_size: training batch size.
        num_workers: DataLoader workers; None = auto (0 on CPU, cores per GPU less one, up to 8).
        crop_size: training crop (H, W); the official recipe uses 520x520.
        **kwargs: the remaining :class:`SegmentationDataModule` arguments (``list_files`` for official
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
        """Store the root; stuff-map values go through the COCO-Stuff table (171 ids -> 0..170)."""
        super().__init__(
            labels=get_label_set("cocostuff"),
            batch_size=batch_size,
            num_workers=num_workers,
            crop_size=crop_size,
            **kwargs,
        )
        self.root = Path(root).expanduser()
        self.label_specs[DEFAULT_ENCODING] = LabelSpec.of(
            self.labels, raw_ids=True, encoding="COCO-Stuff 164k stuffthingmaps"
        )

    def describe_split(self, split: str) -> str:
        """Where the split's images and stuff maps are expected."""
        folder = SPLITS_164K.get(split, split)
        return f"{self.root / folder}/*.jpg and {self.root / MAPS_DIR / folder}/*.png"

    def list_split(self, split: str) -> tuple[list[Sample], list[Problem]]:
        """Pair ``<split>2017/*.jpg`` with the stuff maps of the same stem; report unpaired files.

        Raises:
            DatasetError: unknown split, or the image or stuff-map folder is missing.
        """
        if split not in SPLITS_164K:
            raise DatasetError(
                f"unknown COCO-Stuff 164k split {split!r}; expected one of {tuple(SPLITS_164K)}"
            )
        folder = SPLITS_164K[split]
        img_dir = require_dir(self.root / folder, f"COCO {folder} images")
        map_dir = require_dir(self.root / MAPS_DIR / folder, f"COCO-Stuff stuff maps ({MAPS_DIR}/{folder})")
        return pair_folders(img_dir, ".jpg", map_dir, ".png")


@register_dataset("cocostuff10k", write_layout=write_cocostuff10k)
class CocoStuff10kDataModule(SegmentationDataModule):
    """COCO-Stuff 10k (v1.1): 171 classes from ``.mat`` label maps (0 ignored); ``train`` / ``test`` lists.

    Args:
        root: the unpacked release (holding ``images/``, ``annotations/`` and ``imageLists/``).
        batch_size: training batch size.
        num_workers: DataLoader workers; None = auto (0 on CPU, cores per GPU less one, up to 8).
        crop_size: training crop (H, W); the official recipe uses 520x520.
        **kwargs: the remaining :class:`SegmentationDataModule` arguments (``list_files`` for official
            ``.lst`` lists, whose labels may be ``.mat`` files or PNGs of the same values, ...).
    """

    train_split = "train"
    val_split = "test"
    test_split = "test"
    predict_split = "test"

    def __init__(
        self,
        root: str,
        batch_size: int = 8,
        num_workers: int | None = None,
        crop_size: tuple[int, int] | None = (520, 520),
        **kwargs: Any,
    ) -> None:
        """Store the root; label values go through the 10k table (0 ignored, the 164k ids + 1)."""
        super().__init__(
            labels=get_label_set("cocostuff"),
            batch_size=batch_size,
            num_workers=num_workers,
            crop_size=crop_size,
            **kwargs,
        )
        self.root = Path(root).expanduser()
        self.label_specs[DEFAULT_ENCODING] = LabelSpec(
            self.labels.num_classes,
            self.labels.ignore_index,
            lut=lookup_table_10k(self.labels),
            encoding="COCO-Stuff 10k",
            mat_key=MAT_KEY,
        )

    def describe_split(self, split: str) -> str:
        """Where the split's list is expected."""
        return f"{self.root / 'imageLists' / split}.txt naming images/<name>.jpg and annotations/<name>.mat"

    def list_split(self, split: str) -> tuple[list[Sample], list[Problem]]:
        """Resolve ``imageLists/<split>.txt`` to (``images/<name>.jpg``, ``annotations/<name>.mat``) pairs.

        Raises:
            DatasetError: the list file or the image / annotation folder is missing.
        """
        list_path = self.root / "imageLists" / f"{split}.txt"
        if not list_path.is_file():
            raise DatasetError(
                f"{list_path}: COCO-Stuff 10k split list not found (splits: {', '.join(SPLITS_10K)})"
            )
        img_dir = require_dir(self.root / "images", "COCO-Stuff 10k images")
        ann_dir = require_dir(self.root / "annotations", "COCO-Stuff 10k annotations")
        samples: list[Sample] = []
        problems: list[Problem] = []
        for number, line in enumerate(list_path.read_text().splitlines(), start=1):
            name = line.strip()
            if not name:
                continue
            image = img_dir / f"{Path(name).stem}.jpg"
            if not image.is_file():
                problems.append(Problem(f"{list_path}:{number}", f"image {image} not found"))
                continue
            mask = ann_dir / f"{image.stem}.mat"
            if not mask.is_file():
                problems.append(Problem(f"{list_path}:{number}", f"missing annotation: expected {mask}"))
                continue
            samples.append(Sample(image, mask, image.stem))
        return samples, problems


__all__ = [
    "CocoStuff10kDataModule",
    "CocoStuffDataModule",
    "lookup_table_10k",
    "write_cocostuff",
    "write_cocostuff10k",
]
