"""The dataset registry: a name for each DataModule, with the writer of its generated on-disk layout.

A dataset is one module that defines its DataModule (which reads the layout and checks it:
:meth:`~hrseg.data.datamodule.SegmentationDataModule.check`) and a function that writes generated scenes in
that exact layout, and ties them together where they are defined::

    @register_dataset("cityscapes", write_layout=write_cityscapes)
    class CityscapesDataModule(SegmentationDataModule): ...

A dataset whose labels are distributed in a form its DataModule does not read (PASCAL-Context's per-image
``.mat`` files) also names a converter (``convert=``), which ``hrseg data convert --datamodule NAME`` runs.

``hrseg fit --data cityscapes``, ``hrseg data check --datamodule cityscapes``, ``hrseg data synth
--layout cityscapes`` and ``hrseg data convert --datamodule NAME`` resolve the name here. The built-in
datasets are the modules of :mod:`hrseg.data` that register one, imported on the first look-up; a dataset
outside hrseg registers itself when its module is imported (``HRSEG_PLUGINS`` or the ``hrseg.plugins``
entry points make the command line import it).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from hrseg.registry import Registry

__all__ = ["Converter", "DatasetEntry", "LayoutWriter", "get_dataset", "list_datasets", "register_dataset"]

#: ``write_layout(out, num_train, num_val, seed, size, progress, **options)`` writes generated scenes in the
#: dataset's on-disk layout under ``out`` and returns the DataModule keywords that read them back.
LayoutWriter = Callable[..., Mapping[str, Any]]

#: ``convert(root, progress, **options)`` turns the distributed label files under ``root`` into the files the
#: DataModule reads and returns a :class:`hrseg.data.checks.ConversionReport`: what it wrote and every bad
#: input file (each named, none leaving a partial output file).
Converter = Callable[..., Any]

_T = TypeVar("_T", bound=type)


@dataclass(frozen=True)
class DatasetEntry:
    """A registered dataset.

    Attributes:
        name: the command-line name (``cityscapes``).
        datamodule: the DataModule class.
        write_layout: the generated-layout writer (:data:`LayoutWriter`).
        convert: the label converter (:data:`Converter`); None: the DataModule reads the distributed files.
    """

    name: str
    datamodule: type
    write_layout: LayoutWriter
    convert: Converter | None = None


def _builtin_datasets() -> None:
    """Import every module of :mod:`hrseg.data`: the dataset modules register themselves."""
    for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__package__}.{info.name}")


_DATASETS: Registry[DatasetEntry] = Registry("dataset", discover=_builtin_datasets)


def register_dataset(
    name: str, *, write_layout: LayoutWriter, convert: Converter | None = None
) -> Callable[[_T], _T]:
    """Class decorator: register a DataModule as dataset ``name`` with its generated-layout writer.

    Args:
        name: the command-line name.
        write_layout: writes generated scenes in the dataset's distributed layout (:data:`LayoutWriter`).
        convert: turns distributed label files into those the DataModule reads (:data:`Converter`).

    Raises:
        ValueError: the name is taken by another class.
    """

    def register(cls: _T) -> _T:
        _DATASETS.add(name, DatasetEntry(name, cls, write_layout, convert), origin=cls)
        return cls

    return register


def get_dataset(name: str) -> DatasetEntry:
    """The dataset registered as ``name``.

    Raises:
        ValueError: unknown name (the message lists the registered ones).
    """
    return _DATASETS.get(name)


def list_datasets() -> list[str]:
    """Names of the registered datasets, sorted."""
    return sorted(_DATASETS.names())
