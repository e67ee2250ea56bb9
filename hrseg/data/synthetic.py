"""The demo DataModule: generated street scenes (:mod:`hrseg.data.scenes`), in memory or cached as PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from hrseg.data.checks import CheckReport, Problem, check_samples
from hrseg.data.datamodule import SegmentationDataModule
from hrseg.data.dataset import ArraySegmentationDataset
from hrseg.data.registry import register_dataset
from hrseg.data.scenes import GENERATOR_VERSION, SCENE_LABELS, generate_scene, generate_split, scene_rng


def write_demo(
    out: str | Path,
    num_train: int,
    num_val: int,
    seed: int = 0,
    size: tuple[int, int] = (128, 256),
    progress: bool = True,
) -> dict[str, Any]:
    """Write the demo's scene cache under ``out`` (what ``DemoDataModule(cache_dir=out)`` reads back).

    Returns:
        The :class:`DemoDataModule` keywords that read it.
    """
    kwargs: dict[str, Any] = {
        "num_train": num_train,
        "num_val": num_val,
        "image_size": (int(size[0]), int(size[1])),
        "seed": seed,
        "cache_dir": str(out),
    }
    dm = DemoDataModule(**kwargs)
    for split in ("train", "val", "test"):
        dm.scenes(split)
    return kwargs


@register_dataset("demo", write_layout=write_demo)
class DemoDataModule(SegmentationDataModule):
    """Generated street scenes labelled with the 19 Cityscapes train ids, in memory or cached as PNG.

    Args:
        num_train: training scenes.
        num_val: validation scenes.
        num_test: test scenes (None = ``num_val``); predictions run over them too.
        image_size: (H, W) of the scenes.
        crop_size: training crop (H, W); None trains on whole scenes with flips only.
        seed: scenes are a pure function of (seed, split, index).
        cache_dir: when set, scenes are saved there as PNG on first use and read back afterwards.
        batch_size: training batch size.
        num_workers: DataLoader workers (default 0: the scenes are in memory, workers only add start-up).
        scale_range: random scale when ``crop_size`` is set.
        **kwargs: the remaining :class:`SegmentationDataModule` arguments (eval_batch_size, hflip_prob, ...).
    """

    test_split = "test"
    predict_split = "test"

    def __init__(
        self,
        num_train: int = 200,
        num_val: int = 40,
        num_test: int | None = None,
        image_size: tuple[int, int] = (128, 256),
        crop_size: tuple[int, int] | None = None,
        seed: int = 0,
        cache_dir: str | None = None,
        batch_size: int = 8,
        num_workers: int = 0,
        scale_range: tuple[float, float] | None = (0.5, 2.0),
        **kwargs: Any,
    ) -> None:
        """Check the scene counts; scenes are generated (or read from the cache) on first use."""
        super().__init__(
            labels=SCENE_LABELS,
            batch_size=batch_size,
            num_workers=num_workers,
            crop_size=crop_size,
            scale_range=scale_range,
            **kwargs,
        )
        if num_train < 1 or num_val < 1:
            raise ValueError(f"num_train and num_val must be >= 1, got {num_train}, {num_val}")
        self.num_train = num_train
        self.num_val = num_val
        self.num_test = num_val if num_test is None else num_test
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.seed = seed
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self._scenes: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {}

    def _count(self, split: str) -> int:
        return {"train": self.num_train, "val": self.num_val, "test": self.num_test}[split]

    def scenes(self, split: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """The (images, masks) of ``split``, generated once (or read from / written to the cache)."""
        if split not in self._scenes:
            n = self._count(split)
            if self.cache_dir is None:
                self._scenes[split] = generate_split(n, split, self.seed, self.image_size)
            else:
                self._scenes[split] = self._cached(split, n)
        return self._scenes[split]

    def _cached(self, split: str, n: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
        assert self.cache_dir is not None
        hh, ww = self.image_size
        folder = self.cache_dir / f"demo-v{GENERATOR_VERSION}-seed{self.seed}-{hh}x{ww}" / split
        folder.mkdir(parents=True, exist_ok=True)
        images, masks = [], []
        for i in range(n):
            ip, mp = folder / f"{split}_{i:05d}_image.png", folder / f"{split}_{i:05d}_mask.png"
            if ip.is_file() and mp.is_file():
                images.append(np.asarray(Image.open(ip).convert("RGB")))
                masks.append(np.asarray(Image.open(mp)))
                continue
            img, msk = generate_scene(scene_rng(self.seed, split, i), self.image_size)
            Image.fromarray(img).save(ip)
            Image.fromarray(msk, mode="L").save(mp)
            images.append(img)
            masks.append(msk)
        return images, masks

    def build_dataset(self, split: str, train: bool, labelled: bool = True) -> Dataset:
        """In-memory dataset of generated scenes."""
        images, masks = self.scenes(split)
        names = [f"demo_{split}_{i:05d}" for i in range(len(images))]
        transform = self.train_transform() if train else self.eval_transform()
        return ArraySegmentationDataset(images, masks if labelled else None, names, transform)

    def check(self, split: str, progress: bool = True) -> CheckReport:
        """Validate the generated scenes' labels and report the class histogram."""
        _, masks = self.scenes(split)
        labels = self.labels
        report = check_samples([], None, split, list(labels.class_names))
        report.num_samples = report.num_labelled = len(masks)
        hist = np.zeros(labels.num_classes, dtype=np.int64)
        for i, m in enumerate(masks):
            bad = (m >= labels.num_classes) & (m != labels.ignore_index)
            if bad.any():
                report.problems.append(Problem(f"demo_{split}_{i:05d}", "label values out of range"))
            hist += np.bincount(m[m < labels.num_classes].ravel(), minlength=labels.num_classes)
            report.ignored_pixels += int((m == labels.ignore_index).sum())
        report.histogram = hist
        return report


__all__ = ["DemoDataModule", "write_demo"]
