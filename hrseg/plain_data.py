"""Hyper-parameter groups that travel as plain data: ``to_dict`` / ``from_dict`` / ``coerce``, written once.

The task's groups (:class:`~hrseg.eval_protocol.EvalProtocol`, :class:`~hrseg.losses.LossConfig`,
:class:`~hrseg.optim.OptimizerConfig`) are frozen dataclasses: LightningCLI turns their fields into options,
and they validate themselves on construction. Checkpoints hold their dict form (``weights_only`` loading
refuses arbitrary classes), and ``load_from_checkpoint`` hands that dict back to the constructor, so each
group converts both ways the same way. Plain Python, no torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, is_dataclass
from typing import Any, ClassVar, Self

__all__ = ["PlainDataGroup"]


@dataclass(frozen=True)
class PlainDataGroup:
    """Base of a frozen dataclass: its plain-data form, read back strictly (a typo is never a default).

    A (field-less) dataclass itself, so jsonargparse still sees a pure dataclass and LightningCLI shows the
    group's fields as plain options (``--model.loss.terms``), not as a ``class_path`` / ``init_args`` pair.
    """

    #: how messages name the group ("eval protocol", "loss", "optimizer")
    group_name: ClassVar[str] = "settings"
    #: appended to the TypeError of :meth:`coerce` (what to pass instead)
    coerce_hint: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON / YAML data, as stored in checkpoints and model folders."""
        assert is_dataclass(self), f"{type(self).__name__} must be a dataclass"
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """Build from stored data; unknown keys are an error, None values mean "the default"."""
        assert is_dataclass(cls), f"{cls.__name__} must be a dataclass"
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown {cls.group_name} keys {unknown}; expected some of {sorted(known)}")
        return cls(**{k: v for k, v in data.items() if v is not None})

    @classmethod
    def coerce(cls, value: Self | Mapping[str, Any] | None) -> Self:
        """The group from itself, its dict form, or None (the defaults)."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, Mapping):
            return cls.from_dict(value)
        raise TypeError(
            f"expected a {cls.__name__} or a mapping, got {type(value).__name__} {value!r}{cls.coerce_hint}"
        )
