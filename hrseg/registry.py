"""A registry: names to entries, a name taken by another definition refused; plain Python, the bottom layer.

Every registry of hrseg is one of these: label sets (:mod:`hrseg.metadata`), datasets
(:mod:`hrseg.data.registry`), heads and model families (:mod:`hrseg.models.registry`). A registry whose
built-in entries live in modules of their own discovers them on first use (``discover``), so looking a name
up never depends on what happened to be imported before.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["Registry"]

T = TypeVar("T")


def _origin(entry: object) -> str:
    """Who registered an entry: ``module.QualName`` of a class or function, else the value's ``repr``.

    The same definition imported twice, or an equal value registered again, has the same origin.
    """
    return f"{getattr(entry, '__module__', '?')}.{getattr(entry, '__qualname__', repr(entry))}"


class Registry(Generic[T]):
    """Names to entries, in registration order; a name taken by another definition is refused."""

    def __init__(self, kind: str, discover: Callable[[], object] | None = None) -> None:
        """Create an empty registry.

        Args:
            kind: names the entries in messages (``"head"``, ``"dataset"``, ``"label set"``).
            discover: registers the built-in entries; called once, before the first ``add``, look-up or
                listing (an ``add`` made while it runs does not call it again).
        """
        self.kind = kind
        self._discover = discover
        self._entries: dict[str, T] = {}
        self._origins: dict[str, str] = {}  # who registered each name: entries need not carry it themselves

    def _discovered(self) -> None:
        discover, self._discover = self._discover, None
        if discover is not None:
            discover()

    def add(self, name: str, entry: T, origin: object = None) -> None:
        """Register ``entry`` under ``name``.

        Args:
            name: the registered name.
            entry: what the name stands for.
            origin: the class or function that defines it (default: ``entry``). Registering the same
                definition again (its module re-imported, an equal value) replaces the entry; another one is
                refused.

        Raises:
            ValueError: ``name`` is empty or already registered by another definition.
        """
        if not name:
            raise ValueError(f"a {self.kind} needs a non-empty name")
        self._discovered()
        new = _origin(entry if origin is None else origin)
        if name in self._entries and self._origins[name] != new:
            old = self._origins[name]
            raise ValueError(f"{self.kind} {name!r} is already registered by {old}; {new} cannot take it")
        self._entries[name] = entry
        self._origins[name] = new

    def get(self, name: str) -> T:
        """The entry registered as ``name``.

        Raises:
            ValueError: no such name; the message lists the registered ones.
        """
        self._discovered()
        try:
            return self._entries[name]
        except KeyError:
            raise ValueError(
                f"unknown {self.kind} {name!r}; registered: {', '.join(self._entries) or 'none'}"
            ) from None

    def names(self) -> list[str]:
        """Registered names, in registration order."""
        self._discovered()
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        """Whether ``name`` is registered."""
        self._discovered()
        return name in self._entries
