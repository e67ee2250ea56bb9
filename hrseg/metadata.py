"""What a dataset and a model know about their classes and inputs: one home, at the bottom of the layers.

- :class:`LabelSet`: the classes of a dataset or a model head (names, palette, ignore index, the dataset's
  raw id -> train id table where its files store other ids, the left/right class pairs a horizontal flip
  swaps, named class weights). Registered by name (:func:`register_label_set`, :func:`get_label_set`), so
  ``--classes cityscapes`` and ``class_weights: cityscapes`` mean the same table everywhere.
- :class:`ModelMeta`: a model's metadata built on it (architecture, label set, input normalisation,
  ``align_corners``, the evaluation protocol), the value checkpoints, exports, hub folders, ``Segmenter`` and
  the server pass around.

DataModules declare a label set, the task and every checkpoint carry it, plots and writers read it; the
ignore value and the ImageNet statistics are written here and nowhere else. The built-in tables are plain
data in :mod:`hrseg.labelsets` (one module each), read on the first look-up by name.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch
from torch import Tensor

from hrseg.eval_protocol import EvalProtocol
from hrseg.registry import Registry

__all__ = [
    "IGNORE_INDEX",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MAX_LABEL_ID",
    "Color",
    "LabelSet",
    "ModelMeta",
    "black_pixel",
    "default_palette",
    "get_label_set",
    "list_label_sets",
    "register_label_set",
    "voc_colormap",
]

IGNORE_INDEX = 255
"""The default ignore value: the label losses and metrics skip (the Cityscapes and VOC convention)."""

MAX_LABEL_ID = 65535
"""The largest label value a label PNG holds (16 bit): class ids, raw ids and the ignore value stay within."""

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
"""Per-channel mean of ImageNet RGB in [0, 1]: the input normalisation of every published HRNet weight."""

IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
"""Per-channel standard deviation matching :data:`IMAGENET_MEAN`."""

Color = tuple[int, int, int]


def voc_colormap(n: int = 256) -> list[Color]:
    """Return the PASCAL VOC bit-interleaved colour map (1 -> (128, 0, 0), ..., 255 -> (224, 224, 192)).

    The three lowest bits of the index feed the top bit of R, G and B, the next three the next bit, and so
    on; indices up to 2**24 get distinct colours.

    Args:
        n: number of colours.

    Returns:
        ``n`` RGB triples.
    """
    colors: list[Color] = []
    for k in range(n):
        r = g = b = 0
        c = k
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        colors.append((r, g, b))
    return colors


def default_palette(num_classes: int) -> list[Color]:
    """Return the palette of a label set that brings no colours: the VOC colour map.

    Distinct for any class count a segmentation model has (see :func:`voc_colormap`), familiar for the first
    21 classes, and the same in plots, ``Segmenter`` outputs and prediction PNGs.
    """
    return voc_colormap(num_classes)


def _pairs(
    value: Iterable[Sequence[Any]] | Mapping[Any, Any] | None, what: str
) -> tuple[tuple[Any, Any], ...]:
    items = value.items() if isinstance(value, Mapping) else (value or ())
    out = []
    for item in items:
        pair = tuple(item)
        if len(pair) != 2:
            raise ValueError(f"{what} must be pairs, got {item!r}")
        out.append((int(pair[0]), None if pair[1] is None else int(pair[1])))
    return tuple(out)


@dataclass(frozen=True)
class LabelSet:
    """The classes of a dataset or a model head, checked on construction.

    Attributes:
        class_names: one name per train id ``0 .. num_classes - 1``.
        palette: one RGB colour per class (a longer table is kept whole); empty: :func:`default_palette`.
        ignore_index: the label value losses and metrics skip; never a class id.
        name: the registered name (``"cityscapes"``); empty for an unregistered set.
        id_to_train: ``(raw id, train id)`` pairs for datasets whose files store other ids than the train ids
            (Cityscapes ``labelIds``, ADE20K's shifted ids); a train id of None means "ignored". Raw values
            absent from the table are not labels of the dataset (:meth:`lookup_table` marks them -1).
        flip_pairs: ``(left, right)`` class pairs a horizontal flip swaps (e.g. a left and a right arm).
        class_weights: the dataset's published per-class loss weights (``class_weights: <name>``).
    """

    class_names: tuple[str, ...]
    palette: tuple[Color, ...] = ()
    ignore_index: int = IGNORE_INDEX
    name: str = ""
    id_to_train: tuple[tuple[int, int | None], ...] = ()
    flip_pairs: tuple[tuple[int, int], ...] = ()
    class_weights: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        """Normalise the containers to tuples and reject what does not fit."""
        names = tuple(str(n) for n in self.class_names)
        n = len(names)
        if n < 1:
            raise ValueError("a label set needs at least one class name")
        # checked before any table of that size is made (palette, lookup tables, a head of n outputs)
        if n > MAX_LABEL_ID + 1:
            raise ValueError(
                f"{n:,} classes: a label PNG holds ids up to {MAX_LABEL_ID} "
                f"(at most {MAX_LABEL_ID + 1:,} classes)"
            )
        ignore = int(self.ignore_index)
        if ignore > MAX_LABEL_ID:
            raise ValueError(
                f"ignore_index {ignore} is above {MAX_LABEL_ID}, the largest value of a label PNG"
            )
        if 0 <= ignore < n:
            raise ValueError(f"ignore_index {ignore} collides with a class id ({n} classes)")
        if self.palette:
            if len(self.palette) < n or any(len(rgb) != 3 for rgb in self.palette):
                raise ValueError(f"palette must hold {n} RGB triples, got {len(self.palette)} entries")
            palette = tuple((int(c[0]), int(c[1]), int(c[2])) for c in self.palette)
        else:
            palette = tuple(default_palette(n))
        id_to_train = _pairs(self.id_to_train, "id_to_train")
        raw_out = [raw for raw, _ in id_to_train if not 0 <= raw <= MAX_LABEL_ID]
        if raw_out:
            raise ValueError(
                f"id_to_train raw ids {sorted(set(raw_out))[:5]} outside 0..{MAX_LABEL_ID} (label PNG values)"
            )
        bad = [t for _, t in id_to_train if t is not None and not 0 <= t < n]
        if bad:
            raise ValueError(f"id_to_train maps to train ids {sorted(set(bad))} outside 0..{n - 1}")
        flip_pairs = _pairs(self.flip_pairs, "flip_pairs")
        swapped = [c for pair in flip_pairs for c in pair]
        if any(c is None or not 0 <= c < n for c in swapped) or len(set(swapped)) != len(swapped):
            raise ValueError(f"flip_pairs must name distinct class ids in 0..{n - 1}, got {list(flip_pairs)}")
        weights = tuple(float(w) for w in self.class_weights)
        if weights and len(weights) != n:
            raise ValueError(f"{len(weights)} class weights for {n} classes")
        for name, value in (
            ("class_names", names),
            ("palette", palette),
            ("ignore_index", ignore),
            ("name", str(self.name)),
            ("id_to_train", id_to_train),
            ("flip_pairs", flip_pairs),
            ("class_weights", weights),
        ):
            object.__setattr__(self, name, value)  # frozen: normalised once, here

    @classmethod
    def generic(cls, num_classes: int, ignore_index: int = IGNORE_INDEX) -> LabelSet:
        """A label set of ``num_classes`` classes named ``class_<i>``, in the default palette."""
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        return cls(tuple(f"class_{i}" for i in range(int(num_classes))), ignore_index=ignore_index)

    @property
    def num_classes(self) -> int:
        """Number of train ids."""
        return len(self.class_names)

    def lookup_table(self) -> np.ndarray:
        """The raw value -> train id table of the dataset's label files (int32, at least 256 entries).

        Without :attr:`id_to_train` the files store train ids: classes map to themselves and the ignore
        value to itself. Mapped raw values that are "ignored" become :attr:`ignore_index`; every value that is
        no label of the dataset becomes -1, so readers can refuse it instead of silently ignoring it.
        """
        size = max(256, self.num_classes, self.ignore_index + 1, *(raw + 1 for raw, _ in self.id_to_train))
        lut = np.full(size, -1, dtype=np.int32)
        if self.id_to_train:
            for raw, train in self.id_to_train:
                lut[raw] = self.ignore_index if train is None else train
        else:
            lut[: self.num_classes] = np.arange(self.num_classes)
            if self.ignore_index >= 0:  # a negative ignore value is no file value
                lut[self.ignore_index] = self.ignore_index
        return lut

    def train_to_id(self) -> np.ndarray:
        """The train id -> raw id table (first raw id of each class; ignored -> the first ignored raw id)."""
        inverse = np.zeros(max(self.ignore_index, self.num_classes) + 1, dtype=np.int64)
        ignored = [raw for raw, train in self.id_to_train if train is None]
        if ignored:
            inverse[self.ignore_index] = ignored[0]
        for raw, train in reversed(self.id_to_train):
            if train is not None:
                inverse[train] = raw
        return inverse

    def flip_permutation(self) -> list[int] | None:
        """Class order after a horizontal flip (None when no class swaps), for logits and label maps."""
        if not self.flip_pairs:
            return None
        order = list(range(self.num_classes))
        for left, right in self.flip_pairs:
            order[left], order[right] = right, left
        return order

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON / YAML data (lists, not tuples), as checkpoints, configs and model folders store it."""
        data: dict[str, Any] = {
            "name": self.name,
            "class_names": list(self.class_names),
            "palette": [list(c) for c in self.palette],
            "ignore_index": self.ignore_index,
        }
        if self.id_to_train:
            data["id_to_train"] = [list(p) for p in self.id_to_train]
        if self.flip_pairs:
            data["flip_pairs"] = [list(p) for p in self.flip_pairs]
        if self.class_weights:
            data["class_weights"] = list(self.class_weights)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LabelSet:
        """Build from :meth:`to_dict` data; unknown keys are an error (a typo is never a default)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown label set keys {unknown}; expected some of {sorted(known)}")
        if "class_names" not in data:
            raise ValueError(f"a label set needs class_names; got keys {sorted(data)}")
        return cls(**{k: v for k, v in data.items() if v is not None})

    @classmethod
    def coerce(cls, value: LabelSet | Mapping[str, Any] | str | Sequence[str]) -> LabelSet:
        """A label set from itself, its dict form, a registered name or a list of class names."""
        if isinstance(value, LabelSet):
            return value
        if isinstance(value, str):
            return get_label_set(value)
        if isinstance(value, Mapping):
            return cls.from_dict(value)
        if isinstance(value, Sequence):
            return cls(tuple(str(v) for v in value))
        raise TypeError(
            f"expected a LabelSet, its dict form, a registered name ({', '.join(list_label_sets())}) or a "
            f"list of class names; got {type(value).__name__}"
        )


def _builtin_label_sets() -> None:
    """Register the tables of :mod:`hrseg.labelsets` (plain-data modules, imported by name)."""
    package = importlib.import_module("hrseg.labelsets")
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        register_label_set(
            LabelSet.from_dict(importlib.import_module(f"{package.__name__}.{info.name}").LABEL_SET)
        )


_LABEL_SETS: Registry[LabelSet] = Registry("label set", discover=_builtin_label_sets)


def register_label_set(labels: LabelSet) -> LabelSet:
    """Register ``labels`` under its :attr:`~LabelSet.name` and return it (a dataset module calls this once).

    Raises:
        ValueError: no name, or the name is taken by a different label set (the same one again is fine).
    """
    _LABEL_SETS.add(labels.name, labels)
    return labels


def get_label_set(name: str) -> LabelSet:
    """The label set registered as ``name``.

    Raises:
        ValueError: unknown name (the message lists the registered ones).
    """
    return _LABEL_SETS.get(name)


def list_label_sets() -> list[str]:
    """Names of the registered label sets, sorted."""
    return sorted(_LABEL_SETS.names())


def black_pixel(mean: Sequence[float], std: Sequence[float]) -> list[float]:
    """``-mean / std`` per channel: the value a black pixel (0) has after the input normalisation."""
    return [-float(m) / float(s) for m, s in zip(mean, std, strict=True)]


@dataclass
class ModelMeta:
    """Everything needed to rebuild and use a model: architecture, label set, input normalisation, protocol.

    The JSON of an exported bundle and the part of a Lightning checkpoint's hyper-parameters that inference
    needs, so a bundle is self-describing and never needs the training code's config.
    """

    model: str
    labels: LabelSet
    model_options: dict[str, Any] = field(default_factory=dict)
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))
    align_corners: bool = False
    #: how the model was validated; Segmenter / hrseg predict use it unless told otherwise
    eval_protocol: EvalProtocol = field(default_factory=EvalProtocol)
    format_version: int = 1

    def __post_init__(self) -> None:
        """Coerce the label set and the protocol, and validate the normalisation."""
        self.labels = LabelSet.coerce(self.labels)
        self.eval_protocol = EvalProtocol.coerce(self.eval_protocol)
        self.model_options = dict(self.model_options or {})
        self.mean = [float(v) for v in self.mean]
        self.std = [float(v) for v in self.std]
        if (
            len(self.std) != len(self.mean)
            or any(v > 1.0 for v in self.mean)
            or not all(0.0 < v <= 1.0 for v in self.std)
        ):
            raise ValueError(
                f"mean {self.mean} and std {self.std} must be per-channel values in [0, 1] units (as for "
                "images in [0, 1]; divide 0..255 values by 255), one std > 0 per mean"
            )

    @property
    def num_classes(self) -> int:
        """The head's class count (of :attr:`labels`)."""
        return self.labels.num_classes

    def build_options(self) -> dict[str, Any]:
        """Keywords for :func:`hrseg.build_model` (``model_options`` plus the metadata's ``align_corners``).

        As in ``SegmentationTask``, ``align_corners`` comes from the metadata unless the options set it.
        """
        options = dict(self.model_options)
        options.setdefault("align_corners", self.align_corners)
        return options

    def normalize(self, images: Tensor) -> Tensor:
        """The network input for float images in [0, 1]: ``(images - mean) / std`` per channel.

        The one normalisation of the inference side: every image enters as uint8 or float in [0, 1] and is
        brought to a float ``(N, C, H, W)`` tensor in [0, 1] by :func:`hrseg.images.to_image_tensor`; this
        method makes the model input of it (the first C of the metadata's mean / std, on the images' device).

        Raises:
            ValueError: not a float ``(N, C, H, W)`` tensor, or more channels than the metadata has values.
        """
        if images.ndim != 4 or not images.is_floating_point():
            raise ValueError(
                f"normalize takes float (N, C, H, W) images in [0, 1], got {images.dtype} of shape "
                f"{tuple(images.shape)} (hrseg.images.to_image_tensor converts uint8 and other inputs)"
            )
        c = images.shape[1]
        if c > len(self.mean):
            raise ValueError(f"{c}-channel images, but the model metadata has {len(self.mean)} mean values")
        mean = torch.tensor(self.mean[:c], dtype=images.dtype, device=images.device).view(1, c, 1, 1)
        std = torch.tensor(self.std[:c], dtype=images.dtype, device=images.device).view(1, c, 1, 1)
        return (images - mean) / std

    def black_pixel(self) -> list[float]:
        """A black pixel in the normalised input, ``-mean / std`` per channel: the official code's padding.

        The official pipeline (``EvalProtocol(mode="official")``) pads small images and border windows with
        it (``base_dataset.py``: ``padvalue = -1.0 * mean / std``), not with the mean colour.
        """
        return black_pixel(self.mean, self.std)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (the label set and the protocol in their dict forms)."""
        return {
            "model": self.model,
            "labels": self.labels.to_dict(),
            "model_options": dict(self.model_options),
            "mean": list(self.mean),
            "std": list(self.std),
            "align_corners": self.align_corners,
            "eval_protocol": self.eval_protocol.to_dict(),
            "format_version": self.format_version,
        }

    def to_json(self) -> str:
        """Stable, human-readable JSON."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelMeta:
        """Build from a bundle JSON dict or a task's hyper-parameters (keys of neither are ignored)."""
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known and v is not None}
        if "model" not in kwargs or "labels" not in kwargs:
            raise ValueError(f"model metadata needs 'model' and 'labels'; got keys {sorted(data)}")
        if not isinstance(kwargs["model"], str):
            raise ValueError(f"'model' must be a model name (str), got {type(kwargs['model']).__name__}")
        return cls(**kwargs)
