"""Shared DataModule behaviour: datasets, loaders, collate, class metadata and plotting.

Every concrete DataModule (Cityscapes, VOC, folder, demo) only says how to list a split and how raw mask
values become train ids; loaders, transforms, prediction inputs and plots live here once.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import lightning as L
import numpy as np
import torch
from lightning.fabric.utilities.data import suggested_max_num_workers
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from hrseg.colors import IGNORE_INDEX, IMAGENET_MEAN, IMAGENET_STD, Color, default_palette, denormalize
from hrseg.data.checks import (
    CheckReport,
    DatasetError,
    LabelSpec,
    Problem,
    Sample,
    check_samples,
    format_problems,
    load_sample,
    read_image,
)
from hrseg.data.transforms import (
    SegmentationTransform,
    build_eval_transform,
    build_train_transform,
)
from hrseg.images import list_images

DEFAULT_ENCODING = "default"


# ------------------------------------------------------------------------------------------- exact resume
def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The augmentation seed of sample ``index`` in ``epoch`` of a run seeded with ``seed``.

    A pure function of the three numbers (NumPy's ``SeedSequence`` mixes them), so the augmentation of
    every sample is the same whichever process, worker, batch position or resumed run draws it.
    """
    state = np.random.SeedSequence([int(seed) % 2**32, int(epoch), int(index)]).generate_state(1)
    return int(state[0])


def _apply_sample_seed(transform: Any, key: int | tuple[int, int]) -> int:
    """Dataset key -> index; an ``(index, seed)`` key (:class:`ResumableSampler`) reseeds ``transform``."""
    if isinstance(key, tuple | list):
        index, seed = int(key[0]), int(key[1])
        if hasattr(transform, "reseed"):
            transform.reseed(seed)
        return index
    return int(key)


def global_seed(default: int = 0) -> int:
    """The run's seed: ``PL_GLOBAL_SEED`` (set by ``seed_everything`` on every rank), else ``default``."""
    value = os.environ.get("PL_GLOBAL_SEED")
    return int(value) if value not in (None, "") else int(default)


class ResumableSampler(DistributedSampler):
    """Training order and augmentation seeds as a pure function of (seed, epoch), sharded over processes.

    A :class:`~torch.utils.data.DistributedSampler` (so Lightning keeps it as is and calls ``set_epoch``)
    that yields ``(index, sample_seed(seed, epoch, index))`` keys: the datasets reseed their augmentation
    pipeline from the key, so neither the worker count nor a restart changes what a sample looks like.
    :meth:`skip` starts the next iteration part-way into an epoch (mid-epoch resume).

    Args:
        dataset: the training dataset.
        num_replicas: processes sharing the epoch (1 without DDP).
        rank: this process's rank.
        seed: base seed of the permutation and of the augmentations (the same on every rank).
        shuffle: permute the indices every epoch.
    """

    def __init__(
        self, dataset: Dataset, num_replicas: int = 1, rank: int = 0, seed: int = 0, shuffle: bool = True
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)
        self._skip = 0

    def skip(self, epoch: int, samples: int) -> None:
        """Make the next iteration run ``epoch`` from its ``samples``-th element of this rank's share.

        Idempotent: the same position requested again (the DataModule and Lightning's loop may both
        restore it) is applied once.
        """
        position = (int(epoch), max(0, int(samples)))
        if position == getattr(self, "_restored", None):
            return
        self._restored = position
        self.epoch, self._skip = position

    def __iter__(self) -> Iterator[tuple[int, int]]:
        indices = list(super().__iter__())
        skip, self._skip = self._skip, 0
        return iter([(i, sample_seed(self.seed, self.epoch, i)) for i in indices[skip:]])


def _fit_position(trainer: Any) -> tuple[int, int] | None:
    """(epoch, training batches consumed in it) from the trainer's progress counters, or None.

    Counted by the loops rather than by the loader: Lightning fetches one batch ahead, so the loader has
    always produced one batch more than the training loop has used when a checkpoint is written.
    """
    fit_loop = getattr(trainer, "fit_loop", None)
    if fit_loop is None or getattr(getattr(trainer, "state", None), "fn", None) != "fit":
        return None
    epochs = fit_loop.epoch_progress.current
    epoch = max(int(epochs.started) - 1, 0)
    if epochs.started == 0 or epochs.processed >= epochs.started:
        return int(epochs.processed), 0  # between epochs: the next one starts from its beginning
    return epoch, int(fit_loop.epoch_loop.batch_progress.current.processed)


class ResumableDataLoader(DataLoader):
    """A training DataLoader whose position Lightning saves in checkpoints and restores on resume.

    Lightning calls ``state_dict`` when it writes a checkpoint and ``load_state_dict`` before the first
    ``iter`` of a resumed fit (any loader with both methods counts as stateful). The state is the sampler's
    seed, the epoch and how many batches of it the training loop had consumed; on load, the sampler skips
    those batches, so the resumed run sees exactly the batches (and augmentations) the interrupted run would
    have seen. Requires a :class:`ResumableSampler` and ``batch_size`` batching.

    Args:
        *args: :class:`~torch.utils.data.DataLoader` arguments.
        position: returns (epoch, batches consumed) of the current fit (the trainer's progress), or None to
            count the batches this loader's iterators yielded.
        **kwargs: :class:`~torch.utils.data.DataLoader` arguments.
    """

    def __init__(
        self, *args: Any, position: Callable[[], tuple[int, int] | None] | None = None, **kwargs: Any
    ):
        super().__init__(*args, **kwargs)
        if not isinstance(self.sampler, ResumableSampler) or self.batch_size is None:
            raise TypeError("ResumableDataLoader needs a ResumableSampler and a batch_size")
        self.position = position
        self._yielded = 0

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]  # a generator over the base iterator
        sampler = cast(ResumableSampler, self.sampler)
        epoch = sampler.epoch
        self._yielded = sampler._skip // int(self.batch_size or 1)
        self._epoch = epoch
        for batch in super().__iter__():
            self._yielded += 1
            yield batch

    def state_dict(self) -> dict[str, Any]:
        """``{"seed", "epoch", "batches", "batch_size"}``: where the next batch of this fit comes from."""
        sampler: ResumableSampler = self.sampler  # type: ignore[assignment]
        pos = self.position() if self.position is not None else None
        if pos is None:
            pos = (getattr(self, "_epoch", sampler.epoch), self._yielded)
        epoch, batches = pos
        if batches >= len(self):
            epoch, batches = epoch + 1, 0
        return {
            "seed": int(sampler.seed),
            "epoch": int(epoch),
            "batches": int(batches),
            "batch_size": self.batch_size,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from a :meth:`state_dict`: same seed, same epoch, its consumed batches skipped."""
        sampler: ResumableSampler = self.sampler  # type: ignore[assignment]
        sampler.seed = int(state.get("seed", sampler.seed))
        batch_size = int(state.get("batch_size", self.batch_size))
        if batch_size != self.batch_size:
            rank_zero_warn(
                f"resuming with batch_size={self.batch_size} from a checkpoint written with {batch_size}: "
                "the rest of the interrupted epoch is approximated"
            )
        sampler.skip(int(state.get("epoch", 0)), int(state.get("batches", 0)) * batch_size)


class SegmentationDataset(Dataset):
    """Image / mask files -> ``{"image", "mask", "name"}`` samples, validated on every read.

    Bad files raise :class:`DatasetError` from ``__getitem__`` with the path and the problem, so the message
    survives the DataLoader worker re-raise.

    Args:
        samples: the split's items.
        specs: label rules per ``Sample`` encoding key (``"default"`` unless a DataModule uses several).
        transform: pipeline returning tensors.
        labelled: False yields ``{"image", "name", "path", "error"}`` (prediction) and never reads masks.
            An unreadable image does not stop a prediction run: its item carries the message in ``error``
            (empty otherwise) and a 1x1 placeholder image, so the writer reports it by name at the end.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        specs: Mapping[str, LabelSpec] | None,
        transform: SegmentationTransform,
        labelled: bool = True,
    ) -> None:
        self.samples = list(samples)
        self.specs = dict(specs or {})
        self.transform = transform
        self.labelled = labelled

    def __len__(self) -> int:
        return len(self.samples)

    def spec_for(self, sample: Sample) -> LabelSpec:
        """Return the label rules of ``sample`` (by its encoding key)."""
        return self.specs.get(sample.encoding) or self.specs[DEFAULT_ENCODING]

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray | None, str]:
        """Decode sample ``index`` without transforms: RGB uint8 image, train-id mask (or None), name."""
        sample = self.samples[index]
        if not self.labelled:
            return read_image(sample.image), None, sample.name
        if sample.mask is None:
            raise DatasetError(f"{sample.image}: no mask for this image in a labelled split")
        image, mask = load_sample(sample, self.spec_for(sample))
        return image, mask, sample.name

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index = _apply_sample_seed(self.transform, key)
        if not self.labelled:
            sample = self.samples[index]
            try:
                image, _, name = self.load(index)
            except DatasetError as exc:  # reported by the prediction writer; the other images go on
                return {
                    "image": torch.zeros(3, 1, 1),
                    "name": sample.name,
                    "path": str(sample.image),
                    "error": str(exc),
                }
            img_t, _ = self.transform(image, None)
            return {"image": img_t, "name": name, "path": str(sample.image), "error": ""}
        image, mask, name = self.load(index)
        img_t, mask_t = self.transform(image, mask)
        return {"image": img_t, "mask": mask_t, "name": name}


class ArraySegmentationDataset(Dataset):
    """In-memory (image, mask) arrays -> the same samples as :class:`SegmentationDataset`.

    Args:
        images: RGB uint8 arrays (H, W, 3).
        masks: train-id arrays (H, W), or None for prediction.
        names: one name per item.
        transform: pipeline returning tensors.
    """

    def __init__(
        self,
        images: Sequence[np.ndarray],
        masks: Sequence[np.ndarray] | None,
        names: Sequence[str],
        transform: SegmentationTransform,
    ) -> None:
        if masks is not None and len(masks) != len(images):
            raise ValueError(f"{len(images)} images but {len(masks)} masks")
        self.images = list(images)
        self.masks = list(masks) if masks is not None else None
        self.names = list(names)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray | None, str]:
        """Return the raw image, mask (or None) and name of item ``index``."""
        mask = self.masks[index] if self.masks is not None else None
        return self.images[index], mask, self.names[index]

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index = _apply_sample_seed(self.transform, key)
        image, mask, name = self.load(index)
        img_t, mask_t = self.transform(image, mask)
        if mask_t is None:
            return {"image": img_t, "name": name, "path": name, "error": ""}
        return {"image": img_t, "mask": mask_t, "name": name}


def pad_collate(batch: Sequence[Mapping[str, Any]], ignore_index: int = IGNORE_INDEX) -> dict[str, Any]:
    """Collate samples that may differ in size: pad images with 0 and masks with ``ignore_index``.

    Padding goes at the bottom / right so pixel coordinates are unchanged; same-size batches are just
    stacked. Non-tensor values (names, paths) become lists.
    """
    out: dict[str, Any] = {}
    keys = batch[0].keys()
    for key in keys:
        values = [b[key] for b in batch]
        if isinstance(values[0], torch.Tensor):
            shapes = {tuple(v.shape) for v in values}
            if len(shapes) == 1:
                out[key] = torch.stack(values)
                continue
            h = max(v.shape[-2] for v in values)
            w = max(v.shape[-1] for v in values)
            fill = ignore_index if key == "mask" else 0
            padded = values[0].new_full((len(values), *values[0].shape[:-2], h, w), fill)
            for i, v in enumerate(values):
                padded[i, ..., : v.shape[-2], : v.shape[-1]] = v
            out[key] = padded
        else:
            out[key] = values
    return out


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: give each worker's augmentation pipeline its own seed.

    Albumentations keeps its own generator, which forked workers would otherwise share (identical
    augmentations in every worker); ``worker_info.seed`` derives from the torch seed, so runs under
    ``seed_everything`` stay reproducible.
    """
    info = torch.utils.data.get_worker_info()
    transform = getattr(info.dataset, "transform", None) if info is not None else None
    if info is not None and transform is not None and hasattr(transform, "reseed"):
        transform.reseed(info.seed)


class _PadCollate:
    """Picklable collate callable bound to an ignore index (lambdas break spawn-started workers)."""

    def __init__(self, ignore_index: int) -> None:
        self.ignore_index = ignore_index

    def __call__(self, batch: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        return pad_collate(batch, self.ignore_index)


def resolve_predict_inputs(predict_path: str) -> list[Path]:
    """Expand ``predict_path`` (a folder, a glob pattern or one image file) into sorted image paths.

    :func:`hrseg.images.list_images`, with its errors as :class:`DatasetError`.
    """
    try:
        return list_images(predict_path)
    except FileNotFoundError as err:
        raise DatasetError(f"predict_path {err}") from None


def _label_map(value: Any) -> np.ndarray | None:
    """Reduce a mask / prediction to one (H, W) label map.

    Integer maps (H, W) or (B, H, W) give their first element; float logits (C, H, W) or (B, C, H, W) are
    arg-maxed.
    """
    if value is None:
        return None
    t = value.detach().cpu() if isinstance(value, torch.Tensor) else torch.as_tensor(np.asarray(value))
    if t.is_floating_point():
        if t.ndim == 4:
            t = t[0]
        if t.ndim == 3:
            t = t.argmax(0)
    elif t.ndim == 3:
        t = t[0]
    if t.ndim != 2:
        raise ValueError(f"expected a (H, W) label map or logits, got shape {tuple(t.shape)}")
    return t.long().numpy()


#: upper bound of :func:`auto_num_workers` per device process
MAX_AUTO_WORKERS = 8


def auto_num_workers(device_type: str, processes_per_node: int = 1) -> int:
    """DataLoader workers for ``num_workers=None``: 0 on CPU, else Lightning's suggestion, at most 8.

    Lightning's ``suggested_max_num_workers`` gives the cores per device process minus one (for the process
    itself). On CPU the workers would compete with the training threads for the same cores (on the 2-core dev
    machine two workers were slower than loading in-process). On a GPU one worker decodes and augments ~11
    Cityscapes samples/s while an H200 trains HRNetV2 at 18-40 samples/s (see benchmarks/README.md).
    """
    if device_type == "cpu":
        return 0
    return min(MAX_AUTO_WORKERS, suggested_max_num_workers(max(1, processes_per_node)))


class SegmentationDataModule(L.LightningDataModule):
    """Base class of the hrseg DataModules: loaders, transforms, metadata and ``plot``.

    Subclasses call ``__init__`` with their class metadata and implement :meth:`list_split` (file datasets)
    or override :meth:`build_dataset` (in-memory data).

    Args:
        num_classes: number of train ids (0 .. num_classes - 1).
        class_names: one name per class.
        palette: one RGB colour per class.
        ignore_index: mask value skipped by losses and metrics.
        batch_size: training batch size.
        eval_batch_size: validation / test batch size (eval images may differ in size; they are padded).
        num_workers: DataLoader worker processes (persistent when > 0); None = :func:`auto_num_workers`:
            none on CPU, the cores per device process less one (at most 8) on an accelerator.
        pin_memory: pin host memory; None = only when CUDA is available.
        crop_size: (H, W) training crop; None trains on whole images (no random scale).
        scale_range: training random-scale factor range.
        hflip_prob: training horizontal-flip probability.
        photometric: training colour jitter.
        eval_size: (H, W) to resize evaluation / prediction images to (masks keep their size); None = as is.
        mean: normalization mean (RGB, [0, 1] units).
        std: normalization std.
        predict_path: folder, glob or file of images to predict; None predicts over the predict split.
    """

    train_split: str | None = "train"
    val_split: str | None = "val"
    test_split: str | None = "val"
    predict_split: str | None = "val"

    def __init__(
        self,
        num_classes: int,
        class_names: Sequence[str] | None = None,
        palette: Sequence[Sequence[int]] | None = None,
        ignore_index: int = IGNORE_INDEX,
        batch_size: int = 8,
        eval_batch_size: int = 1,
        num_workers: int | None = None,
        pin_memory: bool | None = None,
        crop_size: tuple[int, int] | None = (512, 1024),
        scale_range: tuple[float, float] | None = (0.5, 2.0),
        hflip_prob: float = 0.5,
        photometric: bool = False,
        eval_size: tuple[int, int] | None = None,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        predict_path: str | None = None,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if 0 <= ignore_index < num_classes:
            raise ValueError(
                f"ignore_index {ignore_index} collides with a class id (num_classes={num_classes})"
            )
        names = list(class_names) if class_names is not None else [f"class_{i}" for i in range(num_classes)]
        if len(names) != num_classes:
            raise ValueError(f"{len(names)} class names given for num_classes={num_classes}")
        colors: list[tuple[int, ...]] = (
            [tuple(int(c) for c in rgb) for rgb in palette]
            if palette is not None
            else list(default_palette(num_classes))
        )
        if len(colors) != num_classes or any(len(c) != 3 for c in colors):
            raise ValueError(f"palette must hold {num_classes} RGB triples, got {len(colors)} entries")
        if batch_size < 1 or eval_batch_size < 1:
            raise ValueError("batch_size and eval_batch_size must be >= 1")
        if num_workers is not None and num_workers < 0:
            raise ValueError(f"num_workers must be >= 0 or None (auto), got {num_workers}")
        self.num_classes = int(num_classes)
        self.class_names: list[str] = names
        self.palette: list[Color] = colors  # type: ignore[assignment]
        self.ignore_index = int(ignore_index)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.crop_size = tuple(crop_size) if crop_size is not None else None
        self.scale_range = tuple(scale_range) if scale_range is not None else None
        self.hflip_prob = hflip_prob
        self.photometric = photometric
        self.eval_size = tuple(eval_size) if eval_size is not None else None
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.predict_path = predict_path
        self.label_specs: dict[str, LabelSpec] = {
            DEFAULT_ENCODING: LabelSpec(num_classes=self.num_classes, ignore_index=self.ignore_index)
        }
        self.train_dataset: Dataset | None = None
        self._train_loader: ResumableDataLoader | None = None
        self._train_loader_state: dict[str, Any] | None = None
        self.val_dataset: Dataset | None = None
        self.test_dataset: Dataset | None = None
        self.predict_dataset: Dataset | None = None

    # ----------------------------------------------------------------- transforms
    def train_transform(self) -> SegmentationTransform:
        """The training pipeline built from this module's augmentation arguments.

        Its seed is drawn from torch's generator, so ``seed_everything`` makes augmentations reproducible.
        """
        transform = build_train_transform(
            crop_size=self.crop_size,  # type: ignore[arg-type]
            scale_range=self.scale_range,  # type: ignore[arg-type]
            hflip_prob=self.hflip_prob,
            photometric=self.photometric,
            mean=self.mean,
            std=self.std,
            ignore_index=self.ignore_index,
        )
        transform.reseed(int(torch.randint(0, 2**31 - 1, ()).item()))
        return transform

    def eval_transform(self) -> SegmentationTransform:
        """The evaluation / prediction pipeline."""
        return build_eval_transform(self.eval_size, self.mean, self.std)  # type: ignore[arg-type]

    # ----------------------------------------------------------------- listing
    def list_split(self, split: str) -> tuple[list[Sample], list[Problem]]:
        """List a split's samples and the listing problems (missing pairs...) without raising.

        Raises:
            DatasetError: when the split's directory or list file does not exist at all.
        """
        raise NotImplementedError(f"{type(self).__name__} does not list files")

    def split_is_labelled(self, split: str) -> bool:
        """Whether ``split`` has masks (False e.g. for the Cityscapes test split)."""
        return True

    def describe_split(self, split: str) -> str:
        """Where the split's files are expected (for error messages)."""
        return split

    def samples(self, split: str) -> list[Sample]:
        """List a split strictly: raise DatasetError on any listing problem or when it is empty."""
        samples, problems = self.list_split(split)
        if problems:
            raise DatasetError(
                format_problems(problems, header=f"{type(self).__name__}: split {split!r} is incomplete")
            )
        if not samples:
            raise DatasetError(
                f"{type(self).__name__}: split {split!r} has no samples (expected under "
                f"{self.describe_split(split)})"
            )
        return samples

    def build_dataset(self, split: str, train: bool, labelled: bool = True) -> Dataset:
        """Build the Dataset of ``split`` with the train or eval pipeline."""
        transform = self.train_transform() if train else self.eval_transform()
        labelled = labelled and self.split_is_labelled(split)
        return SegmentationDataset(self.samples(split), self.label_specs, transform, labelled=labelled)

    def check(self, split: str, progress: bool = True) -> CheckReport:
        """Scan ``split`` without stopping at the first problem (backs ``hrseg data check``)."""
        samples, problems = self.list_split(split)
        if not samples and not problems:
            problems = [
                Problem(f"split {split!r}", f"no samples found (expected {self.describe_split(split)})")
            ]
        labelled = self.split_is_labelled(split)
        if labelled:
            specs = self.label_specs
            groups: dict[str, list[Sample]] = {}
            for s in samples:
                groups.setdefault(s.encoding, []).append(s)
            report = CheckReport(split=split, class_names=self.class_names, problems=list(problems))
            report.histogram = np.zeros(self.num_classes, dtype=np.int64)
            for key, group in groups.items():
                sub = check_samples(
                    group, specs.get(key, specs[DEFAULT_ENCODING]), split, self.class_names, (), progress
                )
                report.problems += sub.problems
                report.num_samples += sub.num_samples
                report.num_labelled += sub.num_labelled
                report.ignored_pixels += sub.ignored_pixels
                assert sub.histogram is not None
                report.histogram += sub.histogram
            return report
        return check_samples(samples, None, split, self.class_names, problems, progress)

    # ----------------------------------------------------------------- Lightning hooks
    def setup(self, stage: str | None = None) -> None:
        """Build the datasets a stage needs; listing problems raise here, before any training starts."""
        if stage in ("fit", None):
            if self.train_split is None:
                raise DatasetError(f"{type(self).__name__}: no training split configured")
            self.train_dataset = self.build_dataset(self.train_split, train=True)
        if stage in ("fit", "validate", None) and self.val_split is not None:
            self.val_dataset = self.build_dataset(self.val_split, train=False)
        if stage in ("test", None) and self.test_split is not None:
            self.test_dataset = self.build_dataset(self.test_split, train=False)
        if stage in ("predict", None):
            self.predict_dataset = self._build_predict_dataset()

    def _build_predict_dataset(self) -> Dataset:
        if self.predict_path is not None:
            files = resolve_predict_inputs(self.predict_path)
            samples = [Sample(p, None, p.stem) for p in files]
            return SegmentationDataset(samples, None, self.eval_transform(), labelled=False)
        split = self.predict_split or self.test_split or self.val_split
        if split is None:
            raise DatasetError(f"{type(self).__name__}: set predict_path to predict (no split to predict on)")
        try:
            return self.build_dataset(split, train=False, labelled=False)
        except DatasetError as exc:
            if self.val_split is None or split == self.val_split:
                raise
            # e.g. a Cityscapes download without the test images: predicting over val is the useful default
            rank_zero_warn(
                f"{type(self).__name__}: cannot predict over split {split!r} ({exc}); "
                f"predicting over {self.val_split!r} instead (set predict_path to choose images)"
            )
            return self.build_dataset(self.val_split, train=False, labelled=False)

    @property
    def loader_workers(self) -> int:
        """The worker count the loaders use.

        ``num_workers``, or :func:`auto_num_workers` for the trainer's device (without a trainer: CUDA if
        available) and its processes per node.
        """
        if self.num_workers is not None:
            return int(self.num_workers)
        trainer = self.trainer
        if trainer is not None:
            return auto_num_workers(trainer.strategy.root_device.type, trainer.num_devices)
        return auto_num_workers("cuda" if torch.cuda.is_available() else "cpu")

    def _distributed_kwargs(self) -> dict[str, int] | None:
        """``num_replicas`` / ``rank`` when the trainer shards data over processes, else None."""
        trainer = self.trainer
        if trainer is None or trainer.world_size <= 1:
            return None
        connector = getattr(trainer, "_accelerator_connector", None)
        if not getattr(connector, "use_distributed_sampler", True):
            return None  # the user shards the data themselves
        kwargs = trainer.distributed_sampler_kwargs
        return {"num_replicas": int(kwargs["num_replicas"]), "rank": int(kwargs["rank"])} if kwargs else None

    def _loader(self, dataset: Dataset | None, stage: str, batch_size: int, shuffle: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__}: call setup() before {stage}_dataloader()")
        workers = self.loader_workers
        common: dict[str, Any] = {
            "batch_size": batch_size,
            "num_workers": workers,
            "pin_memory": self.pin_memory,
            "persistent_workers": workers > 0,
            "collate_fn": _PadCollate(self.ignore_index),
            "worker_init_fn": seed_worker if workers > 0 else None,
        }
        dist = self._distributed_kwargs()
        if shuffle:
            # Exact resume: the order is a function of (seed, epoch), each sample's augmentation of
            # (seed, epoch, index), and the position inside the epoch is saved in checkpoints.
            shard = dist or {"num_replicas": 1, "rank": 0}
            resumable = ResumableSampler(
                dataset, num_replicas=shard["num_replicas"], rank=shard["rank"], seed=global_seed()
            )
            n = resumable.num_samples
            drop_last = n >= batch_size
            if not drop_last:
                rank_zero_warn(
                    f"{type(self).__name__}: only {n} training samples per process for "
                    f"batch_size={batch_size}; "
                    "keeping the partial batch instead of dropping it"
                )
            loader = ResumableDataLoader(
                dataset, sampler=resumable, drop_last=drop_last, position=self._fit_position, **common
            )
            if self._train_loader_state is not None:
                loader.load_state_dict(self._train_loader_state)
                self._train_loader_state = None
            self._train_loader = loader
            return loader
        sampler: UnrepeatedDistributedSampler | None = None
        if dist is not None and stage in ("val", "test"):
            # Lightning would pad the split with repeated images so every process runs as many batches;
            # the unrepeated sampler gives each image to exactly one process (shares differ by at most one),
            # so the summed confusion matrix counts every image once: metrics equal those of one process.
            sampler = UnrepeatedDistributedSampler(
                dataset, num_replicas=dist["num_replicas"], rank=dist["rank"], shuffle=False
            )
        return DataLoader(dataset, sampler=sampler, shuffle=False, drop_last=False, **common)

    def state_dict(self) -> dict[str, Any]:
        """Checkpointed state: the training loader's position (seed, epoch, batches consumed)."""
        return {"train_loader": self._train_loader.state_dict()} if self._train_loader is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the training loader's position (applied to the next ``train_dataloader()``).

        Lightning restores the DataModule before it first builds the training loader, whereas its own
        loader-state restore comes too late when the task asks for ``estimated_stepping_batches`` (which
        builds and starts the loader while the optimizers are configured).
        """
        self._train_loader_state = dict(state_dict.get("train_loader") or {}) or None

    def _fit_position(self) -> tuple[int, int] | None:
        return _fit_position(self.trainer) if self.trainer is not None else None

    def train_dataloader(self) -> DataLoader:
        """Shuffled, resumable training batches of ``batch_size`` (incomplete last batch dropped).

        The order depends on (seed, epoch) only and each sample's augmentation on (seed, epoch, index)
        (:class:`ResumableSampler`, seed from ``seed_everything``); Lightning saves the loader's position in
        every checkpoint and resumes mid-epoch exactly (:class:`ResumableDataLoader`).
        """
        return self._loader(self.train_dataset, "train", self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        """Validation batches of ``eval_batch_size`` (padded when sizes differ).

        Under DDP each image goes to exactly one process, so the synced metrics equal those of one process.
        """
        return self._loader(self.val_dataset, "val", self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        """Test batches of ``eval_batch_size`` over the labelled test split (unrepeated under DDP)."""
        return self._loader(self.test_dataset, "test", self.eval_batch_size, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        """Batch-1 ``{"image", "name", "path", "error"}`` over ``predict_path`` or the predict split."""
        return self._loader(self.predict_dataset, "predict", 1, shuffle=False)

    # ----------------------------------------------------------------- display
    def plot(
        self,
        sample: Mapping[str, Any],
        prediction: torch.Tensor | np.ndarray | None = None,
        show_legend: bool = True,
        suptitle: str | None = None,
    ) -> Any:
        """Draw image / ground truth / prediction with the class palette (:func:`hrseg.viz.plot_panels`).

        Args:
            sample: a dataset item or a batch (the first element is shown) with ``image`` and optionally
                ``mask`` and ``prediction`` / ``pred``.
            prediction: label map (H, W) or logits (C, H, W); overrides the sample's prediction.
            show_legend: list the classes present under the panels.
            suptitle: figure title (defaults to the sample name).

        Returns:
            matplotlib.figure.Figure (not registered with pyplot, so nothing leaks in loops).
        """
        from hrseg.viz import plot_panels

        image = sample["image"]
        image = image.detach().cpu().float().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
        if image.ndim == 4:  # a batch: show its first element
            image = image[0]
        # uint8 arrays are pictures already; anything else is a normalized (3, H, W) tensor
        rgb = image if image.dtype == np.uint8 else denormalize(image, self.mean, self.std)
        pred = prediction if prediction is not None else sample.get("prediction", sample.get("pred"))
        name = sample.get("name")
        if suptitle is None and name is not None:
            suptitle = name[0] if isinstance(name, list | tuple) else str(name)
        return plot_panels(
            [rgb],
            [_label_map(sample.get("mask"))],
            [_label_map(pred)],
            self.palette,
            self.ignore_index,
            class_names=self.class_names if show_legend else None,
            panel_size=4.0,
            title=suptitle,
        )


__all__ = [
    "ArraySegmentationDataset",
    "ResumableDataLoader",
    "ResumableSampler",
    "SegmentationDataModule",
    "SegmentationDataset",
    "auto_num_workers",
    "global_seed",
    "pad_collate",
    "resolve_predict_inputs",
    "sample_seed",
]
