"""Segmentation losses: (class-weighted) cross-entropy, OHEM cross-entropy, Dice, Focal, Lovasz, their sums.

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

Every loss compiles as one graph (``torch.compile(fullgraph=True)``, forward and backward;
``tests/test_compile.py``): ignored pixels are masked out, never removed by boolean indexing, and nothing
reads a tensor's value on the host (no ``.item()``, no Python branch on data), so shapes stay fixed from
batch to batch and the step never waits for the device. That is why Focal and Lovasz are implemented here
rather than taken from segmentation-models-pytorch (whose versions drop ignored pixels and skip absent
classes in Python); they compute the same values as smp's multiclass losses.
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
    "TERM_OPTIONS",
    "CrossEntropy",
    "FocalLoss",
    "LossConfig",
    "LovaszSoftmax",
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


def _one_hot(target: Tensor, num_classes: int, dtype: torch.dtype) -> Tensor:
    """``(B, C, H, W)`` one-hot of a ``(B, H, W)`` mask; an ignored pixel (any value >= C) is all zeros."""
    classes = torch.arange(num_classes, device=target.device).view(1, num_classes, 1, 1)
    return (target.unsqueeze(1) == classes).to(dtype)


class FocalLoss(nn.Module):
    """Multiclass focal loss: per class, the binary focal loss of "this class or not", averaged over classes.

    The same value as segmentation-models-pytorch's ``FocalLoss(mode="multiclass")``: for each class the mean
    over labelled pixels of ``(1 - p_t) ** gamma * BCE``, then the mean over classes. All classes are computed
    at once on masked tensors (fixed shapes), and a batch without a labelled pixel gives zero, not NaN.

    Args:
        ignore_index: mask value that never contributes.
        alpha: weight of the positive ("this class") term, ``1 - alpha`` of the negative; None: no weighting.
        gamma: focusing power.
        normalized: divide each class's loss by its summed focal factors (normalized focal loss).
        reduced_threshold: reduced focal loss: the factor is 1 where ``p_t`` is below this, else
            ``((1 - p_t) / reduced_threshold) ** gamma``.
        eps: lower bound of the normalizer.
    """

    def __init__(
        self,
        ignore_index: int = IGNORE_INDEX,
        alpha: float | None = None,
        gamma: float = 2.0,
        normalized: bool = False,
        reduced_threshold: float | None = None,
        eps: float = 1e-6,
    ) -> None:
        """Validate the options."""
        super().__init__()
        if gamma < 0:
            raise ValueError(f"focal gamma must be >= 0, got {gamma}")
        if alpha is not None and not 0.0 <= alpha <= 1.0:
            raise ValueError(f"focal alpha must be in [0, 1], got {alpha}")
        if reduced_threshold is not None and not 0.0 < reduced_threshold <= 1.0:
            raise ValueError(f"focal reduced_threshold must be in (0, 1], got {reduced_threshold}")
        self.ignore_index = ignore_index
        self.alpha = None if alpha is None else float(alpha)
        self.gamma = float(gamma)
        self.normalized = bool(normalized)
        self.reduced_threshold = None if reduced_threshold is None else float(reduced_threshold)
        self.eps = float(eps)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Mean over classes of each class's mean focal loss over the labelled pixels."""
        valid = (target != self.ignore_index).unsqueeze(1).to(logits.dtype)
        positive = _one_hot(target, logits.shape[1], logits.dtype)
        bce = F.binary_cross_entropy_with_logits(logits, positive, reduction="none")
        pt = torch.exp(-bce)
        if self.reduced_threshold is None:
            factor = (1.0 - pt).pow(self.gamma)
        else:
            reduced = ((1.0 - pt) / self.reduced_threshold).pow(self.gamma)
            factor = torch.where(pt < self.reduced_threshold, torch.ones_like(pt), reduced)
        loss = factor * bce
        if self.alpha is not None:
            loss = loss * (self.alpha * positive + (1.0 - self.alpha) * (1.0 - positive))
        per_class = (loss * valid).sum(dim=(0, 2, 3))
        if self.normalized:
            per_class = per_class / (factor * valid).sum(dim=(0, 2, 3)).clamp(min=self.eps)
        return (per_class / valid.sum().clamp(min=1)).mean()


class LovaszSoftmax(nn.Module):
    """Multiclass Lovasz-Softmax loss (Berman et al. 2018) over the classes present in the labels.

    The same value as segmentation-models-pytorch's ``LovaszLoss(mode="multiclass")``. Instead of dropping
    ignored pixels and looping over the present classes, every class is sorted at once (one sort over a
    fixed-size tensor) with ignored pixels ranked last at zero error, and absent classes are masked out of the
    mean; so the shapes never depend on the labels.

    Args:
        ignore_index: mask value that never contributes.
        per_image: the loss of each image (over the classes present in it), averaged over the images that
            have a labelled pixel; False: one loss over the whole batch.
    """

    def __init__(self, ignore_index: int = IGNORE_INDEX, per_image: bool = False) -> None:
        """Store the options."""
        super().__init__()
        self.ignore_index = ignore_index
        self.per_image = bool(per_image)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Mean over present classes of the Lovasz extension of the per-class Jaccard loss."""
        num_classes = logits.shape[1]
        valid = target != self.ignore_index
        fg = _one_hot(target, num_classes, logits.dtype)
        errors = (fg - logits.softmax(dim=1)).abs()
        # an ignored pixel sorts after every labelled one (errors are >= 0) and adds nothing below
        errors = torch.where(valid.unsqueeze(1), errors, torch.full_like(errors, -1.0))
        groups = logits.shape[0] if self.per_image else 1
        # (groups, C, pixels): each row is one class of one image (or of the whole batch)
        errors = errors.movedim(1, 0).reshape(num_classes, groups, -1).transpose(0, 1)
        fg = fg.movedim(1, 0).reshape(num_classes, groups, -1).transpose(0, 1)
        errors_sorted, order = torch.sort(errors, dim=-1, descending=True)
        fg_sorted = fg.gather(-1, order)
        # gradient of the Lovasz extension of the Jaccard loss at the sorted errors
        positives = fg_sorted.sum(dim=-1, keepdim=True)
        intersection = positives - fg_sorted.cumsum(dim=-1)
        union = positives + (1.0 - fg_sorted).cumsum(dim=-1)
        jaccard = 1.0 - intersection / union
        grad = torch.cat([jaccard[..., :1], jaccard[..., 1:] - jaccard[..., :-1]], dim=-1)
        per_class = (errors_sorted.clamp(min=0) * grad).sum(dim=-1)  # (groups, C)
        present = (positives.squeeze(-1) > 0).to(per_class.dtype)
        per_group = (per_class * present).sum(dim=-1) / present.sum(dim=-1).clamp(min=1)
        if not self.per_image:
            return per_group[0]
        labelled = valid.flatten(1).any(dim=1).to(per_group.dtype)
        return (per_group * labelled).sum() / labelled.sum().clamp(min=1)


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


#: the options each loss term accepts (besides ``name`` and ``weight``)
TERM_OPTIONS: dict[str, tuple[str, ...]] = {
    "ce": (),
    "ohem": ("thresh", "min_kept"),
    "dice": ("classes", "log_loss", "smooth", "eps", "class_weights"),
    "focal": ("alpha", "gamma", "normalized", "reduced_threshold", "eps"),
    "lovasz": ("per_image",),
}


def _build_term(
    name: str, options: dict[str, Any], ignore_index: int, class_weights: Tensor | None
) -> nn.Module:
    """One loss term; smp is imported lazily because only its Dice loss is used here."""
    unknown = set(options) - set(TERM_OPTIONS[name])
    if unknown:
        raise ValueError(
            f"unknown option {sorted(unknown)} for loss {name!r}; valid: {sorted(TERM_OPTIONS[name])}"
        )
    if name == "ce":
        return CrossEntropy(ignore_index=ignore_index, class_weights=class_weights)
    if name == "ohem":
        return OhemCrossEntropy(ignore_index=ignore_index, class_weights=class_weights, **options)
    if name == "focal":
        return FocalLoss(ignore_index=ignore_index, **options)
    if name == "lovasz":
        return LovaszSoftmax(ignore_index=ignore_index, **options)
    # smp's Dice masks ignored pixels and keeps fixed shapes: it compiles as it is
    from segmentation_models_pytorch import losses as smp_losses

    return smp_losses.DiceLoss(mode="multiclass", ignore_index=ignore_index, **options)


def build_loss(
    spec: LossSpec,
    labels: LabelSet,
    class_weights: str | Sequence[float] | None = None,
) -> WeightedSum:
    """Build the criterion described by ``spec``.

    Args:
        spec: see :func:`normalize_loss_spec`. Options in a term are that loss's keywords
            (:data:`TERM_OPTIONS`): ``thresh`` / ``min_kept`` for ``ohem`` (:class:`OhemCrossEntropy`),
            :class:`FocalLoss`'s and :class:`LovaszSoftmax`'s arguments, smp ``DiceLoss``'s for ``dice``.
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
            sum; ``thresh`` / ``min_kept`` for OHEM, see :data:`TERM_OPTIONS` for the others), see
            :func:`build_loss`.
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
