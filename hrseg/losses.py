"""Segmentation losses: (class-weighted) cross-entropy, OHEM cross-entropy, smp losses, weighted sums.

What a task minimises is one value, :class:`LossConfig` (``SegmentationTask(loss=...)``, ``--model.loss.*``):
the loss terms of the main output, the class weights, and the weight of each training output. The terms are a
small spec that reads naturally in YAML:

.. code-block:: yaml

    loss:
      terms: ce                     # one name: ce | ohem | dice | focal | lovasz (or "ce+dice")
    loss:
      terms:                        # or a weighted sum; extra keys are options of that term
        - {name: ohem, weight: 1.0, thresh: 0.7, min_kept: 100000}
        - {name: dice, weight: 0.5}
      class_weights: cityscapes     # CE / OHEM class weights: a list or a named table
      output_weights: [0.4, 1.0]    # models with auxiliary outputs (HRNet-OCR): auxiliary first, main last

Every loss takes full-resolution logits ``(B, C, H, W)`` and an int64 mask ``(B, H, W)`` in which
``ignore_index`` marks pixels that never contribute.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hrseg.metadata import IGNORE_INDEX, LabelSet, get_label_set, list_label_sets
from hrseg.plain_data import PlainDataGroup

__all__ = [
    "LOSS_NAMES",
    "CrossEntropy",
    "LossConfig",
    "OhemCrossEntropy",
    "WeightedSum",
    "build_loss",
    "normalize_loss_spec",
    "resolve_class_weights",
]

#: Names accepted in a loss spec.
LOSS_NAMES = ("ce", "ohem", "dice", "focal", "lovasz")

LossSpec = str | Sequence[Mapping[str, Any]]

#: The official Cityscapes OHEM settings, :class:`OhemCrossEntropy`'s defaults.
OHEM_THRESH = 0.9
OHEM_MIN_KEPT = 131072

#: Default weight of each auxiliary output (HRNet-OCR: 0.4 x aux + 1.0 x main, the official weights).
AUX_LOSS_WEIGHT = 0.4


def resolve_class_weights(weights: str | Sequence[float] | None, labels: LabelSet) -> Tensor | None:
    """Turn ``None``, a label set's name (its published weights) or a list into a ``(num_classes,)`` tensor.

    Raises:
        ValueError: unknown name, a label set without published weights, or a length other than the class
            count of ``labels`` (a silent mismatch would weight the wrong classes).
    """
    if weights is None:
        return None
    if isinstance(weights, str):
        values: Sequence[float] = _named_weights(weights)
    else:
        values = list(weights)
    if len(values) != labels.num_classes:
        raise ValueError(
            f"class weights have {len(values)} entries, the dataset has {labels.num_classes} classes"
        )
    tensor = torch.tensor([float(v) for v in values], dtype=torch.float32)
    if (tensor < 0).any():
        raise ValueError("class weights must be non-negative")
    return tensor


def _named_weights(name: str) -> tuple[float, ...]:
    """The published class weights of the label set ``name`` (``class_weights: cityscapes``)."""
    weighted = [n for n in list_label_sets() if get_label_set(n).class_weights]
    if name not in weighted:
        raise ValueError(f"no class-weight table {name!r}; use a list or one of: {', '.join(weighted)}")
    return get_label_set(name).class_weights


class CrossEntropy(nn.Module):
    """Pixel-wise cross-entropy with ``ignore_index`` and optional per-class weights.

    With weights the mean is normalised by the summed weights of the labelled pixels (PyTorch semantics),
    matching the official HRNet weighted CE. A batch with no labelled pixel gives a zero loss that still
    carries gradients, instead of PyTorch's NaN.
    """

    class_weights: Tensor | None  # non-persistent buffer, declared for type checkers

    def __init__(self, ignore_index: int = IGNORE_INDEX, class_weights: Tensor | None = None) -> None:
        """Store the ignore label; weights become a buffer so they follow the module's device."""
        super().__init__()
        self.ignore_index = ignore_index
        self.register_buffer("class_weights", class_weights, persistent=False)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Mean loss over labelled pixels."""
        per_pixel = F.cross_entropy(
            logits, target, weight=self.class_weights, ignore_index=self.ignore_index, reduction="none"
        )
        valid = target != self.ignore_index
        if self.class_weights is None:
            return per_pixel.sum() / valid.sum().clamp(min=1)
        safe_target = torch.where(valid, target, torch.zeros_like(target))
        denom = (self.class_weights[safe_target] * valid).sum()
        return per_pixel.sum() / denom.clamp(min=1e-12)


class OhemCrossEntropy(nn.Module):
    """Online hard example mining cross-entropy (HRNet's Cityscapes OHEM variant).

    Per batch, the pixels whose predicted probability of the ground-truth class is below ``thresh`` are
    kept; when fewer than ``min_kept`` pixels qualify, the ``min_kept`` lowest-probability labelled pixels
    are kept instead (all of them when fewer are labelled). Ignored pixels are never kept. The loss is the
    mean of the (optionally class-weighted) per-pixel CE over the kept pixels, as in the official code.
    Everything stays on the device: the selection uses a rank computed by sorting, not ``.item()``.
    """

    class_weights: Tensor | None  # non-persistent buffer, declared for type checkers

    def __init__(
        self,
        ignore_index: int = IGNORE_INDEX,
        thresh: float = OHEM_THRESH,
        min_kept: int = OHEM_MIN_KEPT,
        class_weights: Tensor | None = None,
    ) -> None:
        """Validate the selection parameters."""
        super().__init__()
        if not 0.0 < thresh <= 1.0:
            raise ValueError(f"OHEM thresh must be in (0, 1], got {thresh}")
        if min_kept < 0:
            raise ValueError(f"OHEM min_kept must be >= 0, got {min_kept}")
        self.ignore_index = ignore_index
        self.thresh = float(thresh)
        self.min_kept = int(min_kept)
        self.register_buffer("class_weights", class_weights, persistent=False)

    @torch.no_grad()
    def select(self, logits: Tensor, target: Tensor) -> Tensor:
        """Boolean mask ``(B, H, W)`` of the pixels that enter the loss."""
        valid = target != self.ignore_index
        safe_target = torch.where(valid, target, torch.zeros_like(target))
        prob = logits.float().softmax(dim=1).gather(1, safe_target.unsqueeze(1)).squeeze(1)
        prob = torch.where(valid, prob, torch.full_like(prob, float("inf")))  # ignored pixels rank last
        flat = prob.flatten()
        below = (flat < self.thresh) & valid.flatten()
        num_kept = torch.clamp(valid.sum(), max=self.min_kept)
        rank = torch.empty_like(flat, dtype=torch.long)
        order = torch.argsort(flat, stable=True)
        rank[order] = torch.arange(flat.numel(), device=flat.device)
        lowest = rank < num_kept
        keep = torch.where(below.sum() >= num_kept, below, lowest)
        return keep.view_as(target)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Mean CE over the kept pixels."""
        keep = self.select(logits, target)
        per_pixel = F.cross_entropy(
            logits, target, weight=self.class_weights, ignore_index=self.ignore_index, reduction="none"
        )
        return (per_pixel * keep).sum() / keep.sum().clamp(min=1)


class WeightedSum(nn.Module):
    """``sum_i weight_i * loss_i(logits, target)``; logits are cast to float32 once for stable losses."""

    def __init__(self, terms: Mapping[str, nn.Module], weights: Mapping[str, float]) -> None:
        """Keep terms in order under unique names (``ce``, ``dice``, ``dice_1`` ...)."""
        super().__init__()
        if not terms:
            raise ValueError("a loss needs at least one term")
        self.terms = nn.ModuleDict(dict(terms))
        self.weights = dict(weights)

    def components(self, logits: Tensor, target: Tensor) -> dict[str, Tensor]:
        """Each unweighted term, for logging."""
        logits = logits.float()
        return {name: term(logits, target) for name, term in self.terms.items()}

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """The weighted total."""
        parts = self.components(logits, target)
        names = list(parts)
        total = self.weights[names[0]] * parts[names[0]]
        for name in names[1:]:
            total = total + self.weights[name] * parts[name]
        return total


def normalize_loss_spec(spec: LossSpec) -> list[dict[str, Any]]:
    """Canonical form ``[{"name": ..., "weight": ..., **options}, ...]`` of a loss spec.

    Accepts a single name (``"ce"``), a ``+``-joined string (``"ce+dice"``, unit weights) or a list of
    mappings with ``name`` and optional ``weight`` (default 1.0).

    Raises:
        ValueError: an empty spec, a term without a name, or an unknown loss name.
    """
    items: list[dict[str, Any]]
    if isinstance(spec, str):
        names = [part.strip() for part in spec.split("+") if part.strip()]
        items = [{"name": n, "weight": 1.0} for n in names]
    else:
        items = []
        for i, term in enumerate(spec):
            if not isinstance(term, Mapping) or "name" not in term:
                raise ValueError(f"loss term {i} must be a mapping with a 'name' key, got {term!r}")
            item = dict(term)
            item["weight"] = float(item.get("weight", 1.0))
            items.append(item)
    if not items:
        raise ValueError("empty loss spec; use e.g. 'ce', 'ohem' or [{name: ce, weight: 1.0}]")
    for item in items:
        item["name"] = str(item["name"]).lower()
        if item["name"] not in LOSS_NAMES:
            raise ValueError(f"unknown loss {item['name']!r}; choose from {', '.join(LOSS_NAMES)}")
    return items


def _build_term(
    name: str, options: dict[str, Any], ignore_index: int, class_weights: Tensor | None
) -> nn.Module:
    """One loss term; smp is imported lazily because only its losses need it here."""
    if name in ("ce", "ohem"):
        allowed = {"thresh", "min_kept"} if name == "ohem" else set()
        unknown = set(options) - allowed
        if unknown:
            raise ValueError(f"unknown option {sorted(unknown)} for loss {name!r}; valid: {sorted(allowed)}")
        if name == "ce":
            return CrossEntropy(ignore_index=ignore_index, class_weights=class_weights)
        return OhemCrossEntropy(ignore_index=ignore_index, class_weights=class_weights, **options)
    from segmentation_models_pytorch import losses as smp_losses

    if name == "dice":
        return smp_losses.DiceLoss(mode="multiclass", ignore_index=ignore_index, **options)
    if name == "focal":
        return smp_losses.FocalLoss(mode="multiclass", ignore_index=ignore_index, **options)
    return smp_losses.LovaszLoss(mode="multiclass", ignore_index=ignore_index, **options)


def build_loss(
    spec: LossSpec,
    labels: LabelSet,
    class_weights: str | Sequence[float] | None = None,
) -> WeightedSum:
    """Build the criterion described by ``spec``.

    Args:
        spec: see :func:`normalize_loss_spec`. Options in a term are that loss's keywords (``thresh`` /
            ``min_kept`` for ``ohem``, :class:`OhemCrossEntropy`'s defaults otherwise; any smp keyword for
            ``dice`` / ``focal`` / ``lovasz``).
        labels: the classes (the class-weight length, the ignore value that never contributes).
        class_weights: per-class weights for ``ce`` and ``ohem``: a list or a label set's name
            (``"cityscapes"``: its published weights).

    Returns:
        A :class:`WeightedSum` (also for a single term, so callers can always log ``components``).
    """
    weights = resolve_class_weights(class_weights, labels)
    terms: dict[str, nn.Module] = {}
    term_weights: dict[str, float] = {}
    for item in normalize_loss_spec(spec):
        options = {k: v for k, v in item.items() if k not in ("name", "weight")}
        name = item["name"]
        key, n = name, 1
        while key in terms:
            key, n = f"{name}_{n}", n + 1
        term = _build_term(name, options, labels.ignore_index, weights)
        terms[key] = term
        term_weights[key] = item["weight"]
    return WeightedSum(terms, term_weights)


@dataclass(frozen=True)
class LossConfig(PlainDataGroup):
    """What training minimises: the loss terms of the main output, class weights, and per-output weights.

    Args:
        terms: the main output's loss: a name (``"ce"``, ``"ohem"``, ``"dice"``, ``"focal"``, ``"lovasz"``),
            a ``+``-joined sum (``"ce+dice"``) or a list of ``{name, weight, **options}`` mappings (a weighted
            sum; ``thresh`` / ``min_kept`` for OHEM, smp keywords for the others), see :func:`build_loss`.
        class_weights: per-class CE / OHEM weights: a list, or ``"cityscapes"`` for the official table.
        output_weights: one weight per training output of the model, auxiliary ones first and the main one
            last (models with ``num_outputs > 1``; HRNet-OCR: ``[0.4, 1.0]``, the official weights). None:
            0.4 per auxiliary output and 1.0 for the main one. ``terms`` apply to the main output; auxiliary
            outputs take plain (class-weighted) cross-entropy, as the official HRNet-OCR criterion does.

    Example:
        >>> LossConfig([{"name": "ohem", "thresh": 0.7}], class_weights="cityscapes").terms[0]["name"]
        'ohem'
    """

    group_name: ClassVar[str] = "loss"
    coerce_hint: ClassVar[str] = " (a loss name or term list goes in LossConfig(terms=...))"

    terms: str | list[dict[str, Any]] = "ce"
    class_weights: str | list[float] | None = None
    output_weights: list[float] | None = None

    def __post_init__(self) -> None:
        """Reject an unknown loss name, a bad term option or an unknown weight table at construction."""
        normalize_loss_spec(self.terms)
        if isinstance(self.class_weights, str):
            _named_weights(self.class_weights)
        if self.output_weights is not None and any(float(w) < 0 for w in self.output_weights):
            raise ValueError(f"loss output_weights must be >= 0, got {list(self.output_weights)}")

    def build(self, labels: LabelSet) -> WeightedSum:
        """The main output's criterion (:func:`build_loss` of ``terms`` with the class weights)."""
        return build_loss(self.terms, labels, self.class_weights)

    def weights_for(self, num_outputs: int) -> list[float]:
        """One weight per training output (the configured ones, or 0.4 per auxiliary output and 1.0 main).

        Raises:
            ValueError: ``output_weights`` has another length than the model has training outputs.
        """
        if self.output_weights is None:
            return [AUX_LOSS_WEIGHT] * (num_outputs - 1) + [1.0]
        if len(self.output_weights) != num_outputs:
            raise ValueError(
                f"loss output_weights has {len(self.output_weights)} entries, the model has {num_outputs} "
                "training output(s) (auxiliary first, main last)"
            )
        return [float(w) for w in self.output_weights]
