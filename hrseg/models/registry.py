"""Registries of segmentation heads and model families: a name is registered where its thing is defined.

The bottom of :mod:`hrseg.models` (both registries are :class:`hrseg.registry.Registry`), so a head module,
the backbone and the model factory can all import it. A head registers its class with :func:`register_head`
(heads live one per file in :mod:`hrseg.models.heads`, which imports every file of its folder); a model
family (the HRNet variants times the heads, the smp baselines) registers its builder with
:func:`register_model_family`, a single model with :func:`register_model`. :func:`list_models` and
:func:`resolve_model` read the registries, so the CLI and :func:`hrseg.build_model` know every registered
name and parse none.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from torch import nn

from hrseg.registry import Registry

__all__ = [
    "ModelFamily",
    "get_head",
    "list_heads",
    "list_models",
    "register_head",
    "register_model",
    "register_model_family",
    "resolve_model",
]

HeadClass = TypeVar("HeadClass", bound=type[nn.Module])
Builder = TypeVar("Builder", bound=Callable[..., nn.Module])


# --------------------------------------------------------------------------------------------------
# Heads
# --------------------------------------------------------------------------------------------------
_HEADS: Registry[type[nn.Module]] = Registry("head")


def register_head(name: str) -> Callable[[HeadClass], HeadClass]:
    """Class decorator: register a segmentation head as ``name`` (see :mod:`hrseg.models.heads`).

    The class is a :class:`~hrseg.models.heads.SegmentationHead`; its ``head_modules`` name its top-level
    modules (the network's checkpoint key prefixes). The name is also written to the class (``head_name``).

    Raises:
        TypeError: not an ``nn.Module`` class, or no ``head_modules``.
        ValueError: the name is taken by another head.
    """

    def decorate(cls: HeadClass) -> HeadClass:
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            raise TypeError(f"register_head({name!r}) decorates an nn.Module class, got {cls!r}")
        modules = getattr(cls, "head_modules", ())
        if not modules or not all(isinstance(m, str) and m for m in modules):
            raise TypeError(f"head {cls.__qualname__} must name its top-level modules in head_modules")
        _HEADS.add(name, cls)
        cls.head_name = name  # type: ignore[attr-defined]  # every registered head has one
        return cls

    return decorate


def get_head(name: str) -> type[nn.Module]:
    """The head class registered as ``name`` (``ValueError`` listing the registered heads if none)."""
    return _HEADS.get(name)


def list_heads() -> list[str]:
    """Registered head names, in registration order."""
    return _HEADS.names()


# --------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------
def _no_names() -> list[str]:
    return []


@dataclass(frozen=True)
class ModelFamily:
    """Model names and how to build them.

    Attributes:
        key: the family's registry name.
        build: ``build(name, num_classes, **options) -> nn.Module``.
        names: the names it lists (called on each listing, so a family may follow other registries: the
            HRNet family grows with every registered head).
        hidden_names: names it builds but does not list (``hrnetv2``, which needs ``spec=``).
        prefix: non-empty for an open family: every name starting with it is the family's (``smp:``).
        usage: how its unlisted names look, for the unknown-name message (``smp:<Arch>:<encoder>``).
    """

    key: str
    build: Callable[..., nn.Module]
    names: Callable[[], Iterable[str]] = _no_names
    hidden_names: Callable[[], Iterable[str]] = _no_names
    prefix: str = ""
    usage: str = field(default="")


_FAMILIES: Registry[ModelFamily] = Registry("model family")


def register_model_family(
    key: str,
    *,
    names: Callable[[], Iterable[str]] = _no_names,
    hidden_names: Callable[[], Iterable[str]] = _no_names,
    prefix: str = "",
    usage: str = "",
) -> Callable[[Builder], Builder]:
    """Decorator: register ``build(name, num_classes, **options)`` as the builder of a model family.

    Args:
        key: the family's name in the registry.
        names: returns the model names it lists.
        hidden_names: returns the names it builds without listing them.
        prefix: claim every name that starts with it (an open family such as ``smp:``).
        usage: how its unlisted names look, shown when a name is unknown.
    """

    def decorate(build: Builder) -> Builder:
        family = ModelFamily(key, build, names, hidden_names, prefix, usage)
        _FAMILIES.add(key, family, origin=build)
        return build

    return decorate


def register_model(name: str) -> Callable[[Builder], Builder]:
    """Decorator: register ``build(num_classes, **options)`` as the one model ``name`` (a family of one)."""

    def decorate(build: Builder) -> Builder:
        def build_named(_name: str, num_classes: int, **options: Any) -> nn.Module:
            return build(num_classes, **options)

        family = ModelFamily(name, build_named, lambda: [name])
        _FAMILIES.add(name, family, origin=build)
        return build

    return decorate


def list_models() -> list[str]:
    """Every listed model name, family by family in registration order (open families list none)."""
    found: list[str] = []
    for key in _FAMILIES.names():
        found += [n for n in _FAMILIES.get(key).names() if n not in found]
    return found


def resolve_model(name: str) -> ModelFamily:
    """The family that builds ``name``: a listed or hidden name first, then the longest matching prefix.

    Raises:
        ValueError: no family builds it; the message lists the registered names and the open families.
    """
    families = [_FAMILIES.get(key) for key in _FAMILIES.names()]
    for family in families:
        if name in family.names() or name in family.hidden_names():
            return family
    claims = [f for f in families if f.prefix and name.startswith(f.prefix)]
    if claims:
        return max(claims, key=lambda f: len(f.prefix))
    usage = [f.usage for f in families if f.usage]
    raise ValueError(f"unknown model {name!r}; registered: {', '.join([*list_models(), *usage])}")
