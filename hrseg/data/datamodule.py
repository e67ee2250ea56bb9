"""The DataModule base: splits -> datasets -> loaders, class metadata, prediction inputs and ``plot``.

Every concrete DataModule (Cityscapes, VOC, folder, demo) only says how to list a split and how raw mask
values become train ids; loaders, transforms, prediction inputs, plots and the official list-file layout
(``list_files``, read in place of any dataset's own listing) live here once.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader, Dataset

from hrseg.colors import denormalize
from hrseg.data.checks import (
    DEFAULT_ENCODING,
    CheckReport,
    DatasetError,
    LabelSpec,
    Problem,
    Sample,
    check_samples,
    format_problems,
)
from hrseg.data.dataset import SegmentationDataset
from hrseg.data.listfiles import read_list_file
from hrseg.data.loaders import PadCollate, auto_num_workers, seed_worker
from hrseg.data.resume import ResumableDataLoader, ResumableSampler, fit_position, global_seed
from hrseg.data.transforms import SegmentationTransform, build_eval_transform, build_train_transform
from hrseg.data.worker_signals import WorkerSignalDataLoader
from hrseg.images import list_images
from hrseg.metadata import IMAGENET_MEAN, IMAGENET_STD, LabelSet


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


class SegmentationDataModule(L.LightningDataModule):
    """Base class of the hrseg DataModules: loaders, transforms, metadata and ``plot``.

    Subclasses call ``__init__`` with their label set and implement :meth:`list_split` (file datasets) or
    override :meth:`build_dataset` (in-memory data); :func:`hrseg.data.registry.register_dataset` names them
    on the command line.

    Args:
        labels: the classes (:class:`~hrseg.metadata.LabelSet`: train ids ``0 .. num_classes - 1``, names,
            palette, the ignore value losses and metrics skip); the task is linked to it.
        batch_size: training batch size.
        eval_batch_size: validation / test batch size (eval images may differ in size; they are padded).
        num_workers: DataLoader worker processes (persistent when > 0); None = :func:`auto_num_workers`:
            none on CPU, the cores per device process less one (at most 8) on an accelerator.
        pin_memory: pin host memory; None = only when CUDA is available.
        crop_size: (H, W) training crop; None trains on whole images (no random scale).
        scale_range: training random-scale factor range.
        train_resize: (H, W) every training image is resized to before the random scale (the official LIP
            recipe: 473x473); None keeps the image size.
        hflip_prob: training horizontal-flip probability; a flip swaps the label set's ``flip_pairs`` in the
            mask (left and right arm...).
        photometric: training colour jitter.
        eval_size: (H, W) to resize evaluation / prediction images to (masks keep their size); None = as is.
        mean: normalization mean (RGB, [0, 1] units).
        std: normalization std.
        predict_path: folder, glob or file of images to predict; None predicts over the predict split.
        list_files: split name -> an official-style ``.lst`` file (one ``image [label]`` pair of paths per
            line, :mod:`hrseg.data.listfiles`), read in place of the dataset's own file discovery; the
            dataset's label mapping still applies. The splits it names are the ones ``hrseg data check``
            scans by default. Relative list-file paths are relative to the working directory.
        list_root: the folder the relative paths inside the list files are under; None: the dataset's
            ``root`` (as the official code joins ``DATASET.ROOT`` and each entry).
    """

    train_split: str | None = "train"
    val_split: str | None = "val"
    test_split: str | None = "val"
    predict_split: str | None = "val"

    def __init__(
        self,
        labels: LabelSet,
        batch_size: int = 8,
        eval_batch_size: int = 1,
        num_workers: int | None = None,
        pin_memory: bool | None = None,
        crop_size: tuple[int, int] | None = (512, 1024),
        scale_range: tuple[float, float] | None = (0.5, 2.0),
        train_resize: tuple[int, int] | None = None,
        hflip_prob: float = 0.5,
        photometric: bool = False,
        eval_size: tuple[int, int] | None = None,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        predict_path: str | None = None,
        list_files: dict[str, str] | None = None,
        list_root: str | None = None,
    ) -> None:
        super().__init__()
        if batch_size < 1 or eval_batch_size < 1:
            raise ValueError("batch_size and eval_batch_size must be >= 1")
        if num_workers is not None and num_workers < 0:
            raise ValueError(f"num_workers must be >= 0 or None (auto), got {num_workers}")
        #: the classes, linked into the task by the command line
        self.labels = LabelSet.coerce(labels)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.crop_size = tuple(crop_size) if crop_size is not None else None
        self.scale_range = tuple(scale_range) if scale_range is not None else None
        self.train_resize = tuple(train_resize) if train_resize is not None else None
        self.hflip_prob = hflip_prob
        self.photometric = photometric
        self.eval_size = tuple(eval_size) if eval_size is not None else None
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.predict_path = predict_path
        self.list_files = {str(k): str(v) for k, v in (list_files or {}).items()} or None
        self.list_root = list_root
        self.label_specs: dict[str, LabelSpec] = {DEFAULT_ENCODING: LabelSpec.of(self.labels)}
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
            ignore_index=self.labels.ignore_index,
            flip_permutation=self.labels.flip_permutation(),
            resize=self.train_resize,  # type: ignore[arg-type]
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

    def list_encoding(self, mask: Path) -> str:
        """The ``label_specs`` key of a label file named in a list file (one encoding unless overridden)."""
        return DEFAULT_ENCODING

    def list_samples(self, split: str) -> tuple[list[Sample], list[Problem]]:
        """List a split from its ``list_files`` entry when the option is set, else with :meth:`list_split`.

        Raises:
            DatasetError: the split has no list file, the list file or the data root does not exist.
        """
        if not self.list_files:
            return self.list_split(split)
        if split not in self.list_files:
            raise DatasetError(
                f"{type(self).__name__}: split {split!r} has no list file in list_files "
                f"(given: {', '.join(sorted(self.list_files))})"
            )
        root = self.list_root if self.list_root is not None else getattr(self, "root", None)
        if root is None:
            raise DatasetError(
                f"{type(self).__name__}: list_files needs list_root (the folder the listed paths are under)"
            )
        root_path = Path(root).expanduser()
        if not root_path.is_dir():
            raise DatasetError(f"{root_path}: data root of the list files not found")
        return read_list_file(Path(self.list_files[split]).expanduser(), root_path, self.list_encoding)

    def split_is_labelled(self, split: str) -> bool:
        """Whether ``split`` has masks (False e.g. for the Cityscapes test split)."""
        return True

    def _labelled(self, split: str, samples: list[Sample]) -> bool:
        """Whether a listed split has masks: a list file says so by its lines, a dataset by its splits."""
        if self.list_files:
            return bool(samples) and all(s.mask is not None for s in samples)
        return self.split_is_labelled(split)

    def describe_split(self, split: str) -> str:
        """Where the split's files are expected (for error messages)."""
        return split

    def _describe(self, split: str) -> str:
        if self.list_files and split in self.list_files:
            return f"the lines of {self.list_files[split]}"
        return self.describe_split(split)

    def samples(self, split: str) -> list[Sample]:
        """List a split strictly: raise DatasetError on any listing problem or when it is empty."""
        samples, problems = self.list_samples(split)
        if problems:
            raise DatasetError(
                format_problems(problems, header=f"{type(self).__name__}: split {split!r} is incomplete")
            )
        if not samples:
            raise DatasetError(
                f"{type(self).__name__}: split {split!r} has no samples (expected under "
                f"{self._describe(split)})"
            )
        return samples

    def build_dataset(self, split: str, train: bool, labelled: bool = True) -> Dataset:
        """Build the Dataset of ``split`` with the train or eval pipeline."""
        transform = self.train_transform() if train else self.eval_transform()
        samples = self.samples(split)
        labelled = labelled and self._labelled(split, samples)
        return SegmentationDataset(samples, self.label_specs, transform, labelled=labelled)

    def check(self, split: str, progress: bool = True) -> CheckReport:
        """Scan ``split`` without stopping at the first problem (backs ``hrseg data check``)."""
        samples, problems = self.list_samples(split)
        if not samples and not problems:
            problems = [Problem(f"split {split!r}", f"no samples found (expected {self._describe(split)})")]
        labelled = self._labelled(split, samples)
        if labelled:
            specs = self.label_specs
            groups: dict[str, list[Sample]] = {}
            for s in samples:
                groups.setdefault(s.encoding, []).append(s)
            report = CheckReport(
                split=split, class_names=list(self.labels.class_names), problems=list(problems)
            )
            report.histogram = np.zeros(self.labels.num_classes, dtype=np.int64)
            for key, group in groups.items():
                sub = check_samples(
                    group,
                    specs.get(key, specs[DEFAULT_ENCODING]),
                    split,
                    list(self.labels.class_names),
                    (),
                    progress,
                )
                report.problems += sub.problems
                report.num_samples += sub.num_samples
                report.num_labelled += sub.num_labelled
                report.ignored_pixels += sub.ignored_pixels
                assert sub.histogram is not None
                report.histogram += sub.histogram
            return report
        return check_samples(samples, None, split, list(self.labels.class_names), problems, progress)

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
            "collate_fn": PadCollate(self.labels.ignore_index),
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
        return WorkerSignalDataLoader(dataset, sampler=sampler, shuffle=False, drop_last=False, **common)

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
        return fit_position(self.trainer) if self.trainer is not None else None

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
            self.labels.palette,
            self.labels.ignore_index,
            class_names=list(self.labels.class_names) if show_legend else None,
            panel_size=4.0,
            title=suptitle,
        )


__all__ = ["SegmentationDataModule", "resolve_predict_inputs"]
