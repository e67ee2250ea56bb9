"""Import pretrained weights: official HRNet seg / ImageNet checkpoints, timm, Lightning, safetensors.

Files are read by :func:`hrseg.checkpoint.read_state_dict` (on the CPU, ``weights_only=True``: no arbitrary
code from pickles); this module matches their keys to a model, and every mismatch fails loudly with the file
and the keys involved: the official loader silently skipped a missing
pretrained file, which made published numbers impossible to reproduce.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from torch import Tensor, nn

from hrseg.checkpoint import CheckpointError, read_state_dict
from hrseg.hub.references import HubFile, parse_reference, resolve_weights
from hrseg.models.hrnet import CheckpointRemap

__all__ = ["CheckpointMismatchError", "LoadReport", "load_pretrained"]

Source = Literal["official-seg", "classification", "safetensors", "lightning", "plain"]

# Written by every Lightning checkpoint; official training checkpoints also carry "epoch", so it is no marker.
_LIGHTNING_MARKERS = ("pytorch-lightning_version", "lightning_version")


@dataclass
class LoadReport:
    """What :func:`load_pretrained` did.

    Attributes:
        source: detected format: ``official-seg``, ``classification``, ``safetensors``, ``lightning``
            or ``plain``.
        loaded: model keys that received checkpoint values.
        dropped: checkpoint keys that were deliberately not loaded (loss weights, classification heads,
            the seg head with ``ignore_head=True``, or mismatches with ``strict=False``).
        missing: model keys left at their current values (e.g. ``last_layer.*`` from an ImageNet checkpoint).
        path: the file that was read.
        notes: key mappings applied, e.g. an HRNetV2 ``last_layer`` loaded into HRNet-OCR's ``aux_head``.
        hub: where a hub reference came from (repository, revision, commit, file); ``None`` for a local path.
    """

    source: Source
    loaded: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    path: str = ""
    notes: list[str] = field(default_factory=list)
    hub: HubFile | None = None

    def __str__(self) -> str:
        """One-line summary for logs (plus the mappings applied); hub files name repository and revision."""
        where = f"{self.hub.describe()} ({self.path})" if self.hub is not None else self.path
        text = (
            f"{where} [{self.source}]: loaded {len(self.loaded)}, dropped {len(self.dropped)}, "
            f"missing {len(self.missing)}"
        )
        return "; ".join([text, *self.notes])


def _prefixes(modules: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """``("last_layer",)`` -> ``("last_layer.",)``: key prefixes of top-level modules."""
    return tuple(f"{m}." for m in modules)


def _unwrap(obj: dict[str, Any], path: Path) -> tuple[dict[str, Tensor], bool]:
    """Return the tensor dict inside common wrappers and whether it came from a Lightning checkpoint."""
    lightning = any(k in obj for k in _LIGHTNING_MARKERS)
    for key in ("state_dict", "model_state_dict", "model", "state_dict_ema"):
        inner = obj.get(key)
        if isinstance(inner, Mapping) and inner and all(isinstance(v, Tensor) for v in inner.values()):
            obj = dict(inner)
            break
    tensors = {k: v for k, v in obj.items() if isinstance(v, Tensor)}
    if not tensors:
        raise CheckpointError(f"checkpoint {path} holds no tensors (keys: {sorted(obj)[:10]})")
    if len(tensors) != len(obj):
        extra = sorted(k for k in obj if k not in tensors)
        raise CheckpointError(
            f"checkpoint {path}: non-tensor entries where weights were expected: {extra[:10]}"
        )
    return tensors, lightning


def _strip_prefixes(sd: dict[str, Tensor], model_keys: set[str]) -> tuple[dict[str, Tensor], list[str], bool]:
    """Strip the ``module.`` (DDP) and ``model.`` (official FullModel / Lightning task) prefixes.

    Keys outside the ``model.`` wrapper prefix (``loss.criterion.weight`` ...) belong to the wrapper, not
    to the network: they are returned as dropped.
    """
    dropped: list[str] = []
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k.removeprefix("module."): v for k, v in sd.items()}
    prefixed = False
    if any(k.startswith("model.") for k in sd) and not any(k.startswith("model.") for k in model_keys):
        prefixed = True
        dropped = sorted(k for k in sd if not k.startswith("model."))
        sd = {k.removeprefix("model."): v for k, v in sd.items() if k.startswith("model.")}
        if all(k.startswith("module.") for k in sd):
            sd = {k.removeprefix("module."): v for k, v in sd.items()}
    return sd, dropped, prefixed


class CheckpointMismatchError(CheckpointError):
    """Checkpoint keys or shapes that do not fit the model.

    ``str()`` lists every disagreement (for the Python API and its logs); :meth:`one_line` counts them with a
    few examples each, as ``hrseg`` prints it: a W48 checkpoint in a W18 model disagrees on a thousand keys.

    Attributes:
        path: the checkpoint file.
        model_name: the model class it was loaded into.
        mismatched: ``"key: checkpoint (shape) vs model (shape)"`` per key present in both with other shapes.
        unexpected: checkpoint keys the model does not have.
        missing: model keys the checkpoint does not fill (and should).
        head_only: every shape mismatch is in the segmentation head (another class count).
    """

    def __init__(
        self,
        path: Path,
        model_name: str,
        mismatched: list[str],
        unexpected: list[str],
        missing: list[str],
        head_only: bool = False,
    ) -> None:
        """Keep the lists; the message is built from them."""
        self.path, self.model_name, self.head_only = path, model_name, head_only
        self.mismatched, self.unexpected, self.missing = mismatched, unexpected, missing
        problems: list[str] = []
        if mismatched:
            problems.append("shape mismatch: " + "; ".join(mismatched))
        if unexpected:
            problems.append(f"unexpected keys in checkpoint ({len(unexpected)}): {', '.join(unexpected)}")
        if missing:
            problems.append(f"keys missing from checkpoint ({len(missing)}): {', '.join(missing)}")
        super().__init__(f"{self._headline()}:\n  " + "\n  ".join(problems))

    def _headline(self) -> str:
        hint = (
            " (another class count? ignore_head=True, --model.weights_ignore_head true on the command line)"
            if self.mismatched and self.head_only
            else ""
        )
        return f"checkpoint {self.path} does not fit {self.model_name}{hint}"

    def counts(self, examples: int = 2) -> str:
        """``3 tensors of another shape (a: ...; b: ...; ...), 2 missing (c; d)``: counted, a few shown."""

        def few(items: list[str]) -> str:
            return "; ".join(items[:examples]) + ("; ..." if len(items) > examples else "")

        parts = []
        if self.mismatched:
            parts.append(f"{len(self.mismatched)} tensors of another shape ({few(self.mismatched)})")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected ({few(self.unexpected)})")
        if self.missing:
            parts.append(f"{len(self.missing)} missing ({few(self.missing)})")
        return ", ".join(parts)

    def one_line(self) -> str:
        """The message on one line: what does not fit, counted, with a few examples."""
        return f"{self._headline()}: {self.counts()}"


def load_pretrained(
    model: nn.Module,
    path: str | Path,
    strict: bool = True,
    ignore_head: bool = False,
    trusted: bool = False,
) -> LoadReport:
    """Load weights from ``path`` into ``model`` (in place) and report what happened.

    Accepted files: official HRNet segmentation checkpoints (``model.``-prefixed keys, optionally inside
    ``{"state_dict": ...}``; ``loss.criterion.weight`` is dropped), official or timm ImageNet classification
    checkpoints (their ``incre_modules``/``downsamp_modules``/``final_layer``/``classifier`` are dropped and
    the model's ``last_layer.*`` is reported as missing, which is expected), safetensors files, Lightning
    checkpoints of :class:`~hrseg.task.SegmentationTask` (keys ``model.<official>``), and plain state dicts.

    What is a head and how another network's checkpoint maps is the model's own knowledge (see
    :class:`hrseg.models.hrnetv2.HRNetSegmentationNet`): HRNet-OCR loads official HRNet-OCR checkpoints as
    they are, and from an HRNetV2 segmentation checkpoint its ``remap_checkpoint_keys`` lets ``last_layer.*``
    initialise the identically laid out ``aux_head.*`` (listed in ``notes``) while the rest of the OCR head
    is reported as missing; from an ImageNet checkpoint the whole head is missing, which is expected.

    Policy: by default every disagreement is an error, including a ``last_layer.3`` of another class
    count; pass ``ignore_head=True`` to skip the checkpoint's segmentation head (the model family's
    ``head_modules``: fine-tuning on a new dataset: they are listed in ``dropped`` and the model's head in
    ``missing``), or ``strict=False`` to load whatever fits and report the rest instead of raising.

    Args:
        model: the network (HRNetV2, HRNet backbone or any ``nn.Module``).
        path: checkpoint file, or a Hugging Face Hub reference (``timm/hrnet_w48.ms_in1k``,
            ``hf-hub:org/name@revision``: timm ImageNet weights or an hrseg model; cached, and read from the
            cache alone with ``HF_HUB_OFFLINE=1``; see :mod:`hrseg.hub`). A local path always wins.
        strict: raise on unexpected, missing or shape-mismatched keys.
        ignore_head: do not load the segmentation head (the family's ``head_modules``) from the checkpoint.
        trusted: allow full pickle loading (``weights_only=False``) for files you trust.

    Returns:
        A :class:`LoadReport`.

    Raises:
        FileNotFoundError: ``path`` does not exist (for a hub reference: not cached and the hub unreachable
            or off, :class:`hrseg.hub.HubNotFoundError`, whose message says how to work offline).
        CheckpointError: unreadable file, or (with ``strict``) keys/shapes that do not fit; the message names
            the path and each offending key (with both shapes for mismatches).
    """
    ref = parse_reference(path)
    hub_file = resolve_weights(ref, original=str(path)) if ref is not None else None
    p = hub_file.path if hub_file is not None else Path(path)
    obj, is_st = read_state_dict(p, trusted=trusted)
    sd, lightning = _unwrap(obj, p)
    model_sd = model.state_dict()
    model_keys = set(model_sd)
    sd, dropped, prefixed = _strip_prefixes(sd, model_keys)

    # What the model knows about its checkpoints (hrseg.models.hrnetv2.HRNetSegmentationNet): its
    # head modules, those of its family's checkpoints, and the classifier modules of its ImageNet backbone.
    cls_heads = _prefixes(getattr(model, "classification_head_modules", ()))
    family_heads = getattr(model, "checkpoint_head_modules", None)
    head_prefixes = _prefixes(
        family_heads() if callable(family_heads) else getattr(model, "head_modules", ())
    )
    is_cls = bool(cls_heads) and any(k.startswith(cls_heads) for k in sd)
    source: Source
    if is_st:
        source = "safetensors"
    elif lightning:
        source = "lightning"
    elif is_cls:
        source = "classification"
    elif prefixed:
        source = "official-seg"
    else:
        source = "plain"

    if is_cls:
        dropped += [k for k in sd if k.startswith(cls_heads)]
        sd = {k: v for k, v in sd.items() if not k.startswith(cls_heads)}
    if ignore_head and head_prefixes:
        dropped += [k for k in sd if k.startswith(head_prefixes)]
        sd = {k: v for k, v in sd.items() if not k.startswith(head_prefixes)}

    remap_keys = getattr(model, "remap_checkpoint_keys", None)
    remap = remap_keys(sd) if callable(remap_keys) else CheckpointRemap(sd)
    sd, notes = remap.state, list(remap.notes)
    fresh = _prefixes(remap.fresh_modules)  # head modules the checkpoint cannot fill: expected missing

    unexpected = sorted(k for k in sd if k not in model_keys)
    mismatched = sorted(k for k in sd if k in model_keys and sd[k].shape != model_sd[k].shape)
    head_optional = is_cls or ignore_head
    missing = sorted(k for k in model_keys if k not in sd)
    # Old checkpoints predate BN's num_batches_tracked; an absent counter is harmless.
    bad_missing = [
        k
        for k in missing
        if not k.endswith("num_batches_tracked")
        and not (head_optional and head_prefixes and k.startswith(head_prefixes))
        and not (fresh and k.startswith(fresh))
    ]

    if strict and (mismatched or unexpected or bad_missing):
        raise CheckpointMismatchError(
            p,
            type(model).__name__,
            [f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(model_sd[k].shape)}" for k in mismatched],
            unexpected,
            bad_missing,
            head_only=bool(head_prefixes) and all(k.startswith(head_prefixes) for k in mismatched),
        )

    to_load = {k: v for k, v in sd.items() if k in model_keys and k not in mismatched}
    dropped += unexpected + mismatched
    model.load_state_dict(to_load, strict=False)
    return LoadReport(
        source=source,
        loaded=sorted(to_load),
        dropped=sorted(set(dropped)),
        missing=missing,
        path=str(p),
        notes=notes,
        hub=hub_file,
    )
