"""The dataset registry: a name for each DataModule, with the writer of its generated on-disk layout.

A dataset is one module that defines its DataModule (which reads the layout and checks it:
:meth:`~hrseg.data.datamodule.SegmentationDataModule.check`) and a function that writes generated scenes in
that exact layout, and ties them together where they are defined::

    @register_dataset("cityscapes", write_layout=write_cityscapes)
    class CityscapesDataModule(SegmentationDataModule): ...

``hrseg fit --data cityscapes``, ``hrseg data check --datamodule cityscapes`` and ``hrseg data synth
--layout cityscapes`` resolve the name here. The built-in datasets are the modules of :mod:`hrseg.data` that
register one, imported on the first look-up; a dataset outside hrseg registers itself when its module is
imported (``HRSEG_PLUGINS`` or the ``hrseg.plugins`` entry points make the command line import it).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["DatasetEntry", "LayoutWriter", "get_dataset", "list_datasets", "register_dataset"]

#: ``write_layout(out, num_train, num_val, seed, size, progress, **options)`` writes generated scenes in the
#: dataset's on-disk layout under ``out`` and returns the DataModule keywords that read them back.
LayoutWriter = Callable[..., Mapping[str, Any]]

_T = TypeVar("_T", bound=type)


@dataclass(frozen=True)
class DatasetEntry:
    """A registered dataset.

    Attributes:
        name: the command-line name (``cityscapes``).
        datamodule: the DataModule class.
        write_layout: the generated-layout writer (:data:`LayoutWriter`).
    """

    name: str
    datamodule: type
    write_layout: LayoutWriter

    @property
    def summary(self) -> str:
        """The first line of the DataModule's docstring."""
        return (self.datamodule.__doc__ or self.datamodule.__name__).strip().splitlines()[0]


_DATASETS: dict[str, DatasetEntry] = {}
_BUILTINS_LOADED = False


def register_dataset(name: str, *, write_layout: LayoutWriter) -> Callable[[_T], _T]:
    """Class decorator: register a DataModule as dataset ``name`` with its generated-layout writer.

    Raises:
        ValueError: the name is taken by another class.
    """

    def register(cls: _T) -> _T:
        known = _DATASETS.get(name)
        if known is not None and known.datamodule.__qualname__ != cls.__qualname__:
            raise ValueError(f"dataset {name!r} is already registered ({known.datamodule.__qualname__})")
        _DATASETS[name] = DatasetEntry(name, cls, write_layout)
        return cls

    return register


def _load_builtins() -> None:
    """Import every module of :mod:`hrseg.data` once: the dataset modules register themselves."""
    global _BUILTINS_LOADED
    if _BUILTINS_LOADED:
        return
    _BUILTINS_LOADED = True
    package = Path(__file__).parent
    for info in pkgutil.iter_modules([str(package)]):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__package__}.{info.name}")


def get_dataset(name: str) -> DatasetEntry:
    """The dataset registered as ``name``.

    Raises:
        ValueError: unknown name (the message lists the registered ones).
    """
    _load_builtins()
    try:
        return _DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; registered: {', '.join(list_datasets())}") from None


def list_datasets() -> list[str]:
    """Names of the registered datasets, sorted."""
    _load_builtins()
    return sorted(_DATASETS)
