"""segmentation-models-pytorch baselines: the open model family ``smp:<Arch>:<encoder>``."""

from __future__ import annotations

from typing import Any

from torch import nn

from hrseg.models.registry import get_head, list_heads, register_model_family

__all__ = ["build_smp"]


def _hrnet_only_options() -> list[str]:
    """The HRNet network's and every registered head's options: refused here, more clearly than by smp."""
    heads: list[tuple[str, ...]] = [getattr(get_head(h), "option_names", tuple)() for h in list_heads()]
    return sorted({"fuse_mode", "bn_momentum", "spec", *(o for names in heads for o in names)})


@register_model_family("smp", prefix="smp:", usage="smp:<Arch>:<encoder>")
def build_smp(name: str, num_classes: int, **options: Any) -> nn.Module:
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
    for opt in _hrnet_only_options():
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
