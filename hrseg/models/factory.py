"""Build models by name: the HRNetV2 family and segmentation-models-pytorch baselines."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from hrseg.models.hrnet import HRNET_SPECS, HRNetSpec, get_spec
from hrseg.models.hrnetv2 import HRNetV2
from hrseg.models.ocr import HRNetOCR

__all__ = ["MODEL_CAPABILITIES", "build_model", "list_models"]

#: Attributes every model from :func:`build_model` carries, so callers never test names or classes:
#: ``num_classes``, ``in_channels``, ``align_corners`` (of the logits resize), ``output_stride`` (input size
#: over logits size: 4 for HRNetV2, 1 for smp), ``size_divisor`` (inputs must be multiples of it: 1 for
#: HRNetV2, the encoder's output stride for smp) and ``min_export_size`` (smallest height/width a
#: dynamic-shape export accepts). Wrappers (the fast inference path, exported graphs) copy them.
#: Training-only, not copied to inference wrappers: ``num_outputs`` (default 1 when absent; HRNet-OCR: 2):
#: in training mode such a model returns a list of that many logits, auxiliary first and the main one last,
#: and in eval mode the main logits alone; ``head_modules`` (the top-level modules of the segmentation head,
#: for the head learning rate and ``load_pretrained(..., ignore_head=True)``).
MODEL_CAPABILITIES = (
    "num_classes",
    "in_channels",
    "align_corners",
    "output_stride",
    "size_divisor",
    "min_export_size",
)

_HRNET_PREFIX = "hrnetv2_"
_HRNET_OPTIONS = {"in_channels", "fuse_mode", "align_corners", "bn_momentum", "spec"}
_OCR_SUFFIX = "_ocr"
_OCR_OPTIONS = {"ocr_mid_channels", "ocr_key_channels", "ocr_dropout"}


def list_models() -> list[str]:
    """Registered HRNetV2 names, then the HRNet-OCR ones (smp baselines ``smp:<Arch>:<enc>`` are open)."""
    plain = [_HRNET_PREFIX + k for k in HRNET_SPECS]
    return plain + [name + _OCR_SUFFIX for name in plain]


def _build_smp(name: str, num_classes: int, options: dict[str, Any]) -> nn.Module:
    """``smp:<Arch>:<encoder>``: random encoder weights unless ``encoder_weights`` names pretrained ones.

    ``model_options: {encoder_weights: imagenet}`` (any name smp knows for the encoder) lets smp fetch them
    through its own hub cache on first use; nothing is downloaded without that option.
    """
    parts = name.split(":")
    if len(parts) != 3 or not parts[1] or not parts[2]:
        raise ValueError(
            f"smp model names look like 'smp:<Arch>:<encoder>', e.g. 'smp:Unet:resnet18'; got {name!r}"
        )
    import segmentation_models_pytorch as smp  # heavy import, only when a baseline is requested

    arch, encoder = parts[1], parts[2]
    cls = getattr(smp, arch, None)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ValueError(f"unknown smp architecture {arch!r} in {name!r}")
    for opt in ("fuse_mode", "bn_momentum", "spec", *sorted(_OCR_OPTIONS)):
        if opt in options:
            raise ValueError(f"option {opt!r} applies to HRNetV2 only, not to {name!r}")
    # smp decoders resize internally; align_corners only describes how callers resize the (full-size) logits.
    align_corners = bool(options.pop("align_corners", False))
    options.setdefault("encoder_weights", None)
    try:
        model = cls(encoder_name=encoder, classes=num_classes, **options)
    except (OSError, RuntimeError) as err:  # a failed download: hub / network errors are OSErrors
        if options.get("encoder_weights") is None:
            raise
        raise ValueError(
            f"{name}: smp could not load encoder_weights={options['encoder_weights']!r} ({err}). Offline, "
            "run once where the hub is reachable to fill the cache (HF_HUB_CACHE / TORCH_HOME), or set "
            "encoder_weights: null and give a local file as weights."
        ) from err
    stride = int(getattr(model.encoder, "output_stride", 32))
    capabilities: dict[str, int | bool] = {
        "num_classes": num_classes,
        "in_channels": int(options.get("in_channels", 3)),
        "align_corners": align_corners,
        "output_stride": 1,
        "size_divisor": stride,
        "min_export_size": stride,
    }
    # setattr: nn.Module's __setattr__ is typed for tensors and modules only
    for attr, value in capabilities.items():
        setattr(model, attr, value)
    setattr(model, "head_modules", ("segmentation_head",))  # noqa: B010  # smp's output conv: the head
    return model


def build_model(name: str, num_classes: int = 19, **options: Any) -> nn.Module:
    """Build a segmentation network by name.

    Args:
        name: ``hrnetv2_w18_small_v1``, ``hrnetv2_w18_small_v2``, ``hrnetv2_w18``, ``hrnetv2_w32``,
            ``hrnetv2_w40``, ``hrnetv2_w48``, ``hrnetv2_w64``, ``hrnetv2`` / ``hrnetv2_custom`` together
            with ``spec=``; the same with the ``_ocr`` suffix for HRNet-OCR (``hrnetv2_w48_ocr``,
            ``hrnetv2_ocr`` with ``spec=``); or ``smp:<Arch>:<encoder>`` (e.g. ``smp:Unet:resnet18``).
        num_classes: output classes (comes from the dataset; nothing here assumes 19).
        **options: HRNetV2: ``in_channels``, ``fuse_mode`` (``"bilinear"``/``"nearest"``),
            ``align_corners``, ``bn_momentum``, ``spec`` (dict or :class:`HRNetSpec`; overrides the
            named variant's table row). HRNet-OCR also: ``ocr_mid_channels`` (512), ``ocr_key_channels``
            (256), ``ocr_dropout`` (0.05). smp: ``in_channels``, ``align_corners`` (recorded for resizing
            the logits) and any keyword of the smp class, e.g. ``encoder_weights="imagenet"`` (pretrained
            encoder, fetched by smp; default ``None``: random).

    Returns:
        The model, carrying the :data:`MODEL_CAPABILITIES` attributes.

    Raises:
        ValueError: unknown name or option (the message lists the valid ones).
    """
    opts = dict(options)
    if name.startswith("smp:"):
        return _build_smp(name, num_classes, opts)
    ocr = name.endswith(_OCR_SUFFIX)
    valid_options = _HRNET_OPTIONS | _OCR_OPTIONS if ocr else _HRNET_OPTIONS
    unknown = set(opts) - valid_options
    if unknown:
        raise ValueError(f"unknown option(s) {sorted(unknown)} for {name!r}; valid: {sorted(valid_options)}")
    cls: type[HRNetV2] | type[HRNetOCR] = HRNetOCR if ocr else HRNetV2
    base = name.removesuffix(_OCR_SUFFIX) if ocr else name
    spec_opt: HRNetSpec | Mapping[str, Any] | None = opts.pop("spec", None)
    if spec_opt is not None and base in ("hrnetv2", "hrnetv2_custom", *list_models()):
        return cls(get_spec(spec_opt), num_classes=num_classes, **opts)
    if name not in list_models():
        valid = [*list_models(), "hrnetv2 / hrnetv2_ocr (with spec=...)", "smp:<Arch>:<encoder>"]
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(valid)}")
    return cls(base.removeprefix(_HRNET_PREFIX), num_classes=num_classes, **opts)
