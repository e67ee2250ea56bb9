"""Inference: whole image, sliding window, multi-scale + flip, a fast inference path and the ``Segmenter``.

Everything here works on plain ``nn.Module`` s (no Lightning import): a Lightning checkpoint is read as the
dict it is, so the same code serves validation/test (through the task), ``hrseg predict``, ``hrseg export``
and a deployment that only has the exported bundle.

The evaluation protocol follows the official HRNet code (REFERENCE.md section 4): every scale's image is
run whole or by a sliding window (windows batched, the last one aligned to the border, overlaps averaged
through a count map), optionally also horizontally flipped, and the per-scale outputs are resized to the
input size and accumulated before the argmax. The accumulation is an average rather than a bare sum: the
argmax is the same, and a single pass returns the plain forward bit for bit.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from hrseg.models import build_model, upsample_logits
from hrseg.palette import voc_colormap

__all__ = [
    "CONFIG_METADATA_KEY",
    "ExportedModel",
    "ModelMeta",
    "Segmenter",
    "colorize_mask",
    "fold_batchnorm",
    "infer",
    "load_checkpoint",
    "load_image",
    "prepare_for_inference",
    "sliding_window_starts",
    "to_image_tensor",
]

Mode = Literal["whole", "slide", "multiscale"]
Output = Literal["logits", "probs"]
ImageInput = str | Path | Image.Image | np.ndarray | Tensor

CONFIG_METADATA_KEY = "hrseg_config"
"""Key under which exports embed the :class:`ModelMeta` JSON (safetensors header, ONNX metadata, .pt2)."""

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


# --------------------------------------------------------------------------------------------------
# Whole / sliding window / multi-scale + flip
# --------------------------------------------------------------------------------------------------
def _pair(value: int | Sequence[int] | None, what: str) -> tuple[int, int] | None:
    """``512 -> (512, 512)``; ``(h, w)`` unchanged; validates positivity so bad settings fail early."""
    if value is None:
        return None
    pair = (int(value), int(value)) if isinstance(value, int | float) else tuple(int(v) for v in value)
    if len(pair) != 2 or min(pair) < 1:
        raise ValueError(f"{what} must be a positive int or (height, width), got {value!r}")
    return pair  # type: ignore[return-value]


def sliding_window_starts(length: int, window: int, stride: int) -> list[int]:
    """Window offsets along one axis: every ``stride``, the last one aligned to the border.

    A window at least as long as the axis gives the single offset 0.
    """
    if length <= window:
        return [0]
    steps = math.ceil((length - window) / stride) + 1
    starts = sorted({min(i * stride, length - window) for i in range(steps)})
    return starts


def _flip_forward(
    model: Callable[[Tensor], Tensor],
    x: Tensor,
    size: tuple[int, int],
    align_corners: bool,
    output: Output,
    divisor: int = 1,
) -> Tensor:
    """One network pass resized to ``size``; the logits are resized before the softmax (mmseg, official).

    With ``divisor > 1`` the input is zero-padded (bottom/right) to a multiple of it for networks needing one
    (encoder-decoders with stride 32) and the padded border is cropped off the output.
    """
    h, w = x.shape[-2:]
    ph, pw = (-h) % divisor, (-w) % divisor
    if ph or pw:
        out = upsample_logits(model(F.pad(x, (0, pw, 0, ph))), (h + ph, w + pw), align_corners)[..., :h, :w]
        out = upsample_logits(out, size, align_corners)
    else:
        out = upsample_logits(model(x), size, align_corners)
    return out.softmax(dim=1) if output == "probs" else out


def _passes(
    model: Callable[[Tensor], Tensor],
    x: Tensor,
    size: tuple[int, int],
    align_corners: bool,
    output: Output,
    flip: bool,
    divisor: int = 1,
) -> Tensor:
    """Sum over the plain pass and (with ``flip``) the mirrored pass mapped back; callers divide."""
    out = _flip_forward(model, x, size, align_corners, output, divisor)
    if flip:
        out = out + _flip_forward(model, x.flip(-1), size, align_corners, output, divisor).flip(-1)
    return out


def _check_channels(out: Tensor, num_classes: int | None) -> None:
    if num_classes is not None and out.shape[1] != num_classes:
        raise ValueError(f"model returned {out.shape[1]} channels, expected num_classes={num_classes}")


def _slide(
    model: Callable[[Tensor], Tensor],
    x: Tensor,
    window: tuple[int, int],
    stride: tuple[int, int],
    batch_windows: int,
    align_corners: bool,
    output: Output,
    flip: bool,
    pad_to_window: bool,
    num_classes: int | None,
    divisor: int = 1,
) -> Tensor:
    """Sliding-window pass over ``x`` (B, C, H, W) -> summed outputs / (count x flips) at (H, W).

    Windows of all images in the batch are stacked so one forward sees up to ``max(batch_windows, B)`` crops;
    memory is bounded by that many windows, not by the image. When the image is smaller than the window along
    an axis, the crop covers the whole axis, and ``pad_to_window`` pads it (with zeros, i.e. the mean colour
    after normalization) to the window size for models or exported graphs that want one fixed shape.
    """
    b, _, h, w = x.shape
    wh, ww = window
    ch, cw = min(wh, h), min(ww, w)
    ph, pw = (wh - ch, ww - cw) if pad_to_window else (0, 0)
    positions = [
        (y, x0)
        for y in sliding_window_starts(h, ch, stride[0])
        for x0 in sliding_window_starts(w, cw, stride[1])
    ]
    per_forward = max(1, batch_windows // b)
    acc: Tensor | None = None
    count = torch.zeros((1, 1, h, w), dtype=x.dtype, device=x.device)
    for i in range(0, len(positions), per_forward):
        chunk = positions[i : i + per_forward]
        crops = torch.cat([x[:, :, y : y + ch, x0 : x0 + cw] for y, x0 in chunk], dim=0)
        if ph or pw:
            crops = F.pad(crops, (0, pw, 0, ph))
        out = _passes(model, crops, (ch + ph, cw + pw), align_corners, output, flip, divisor)[:, :, :ch, :cw]
        _check_channels(out, num_classes)
        if acc is None:
            acc = torch.zeros((b, out.shape[1], h, w), dtype=out.dtype, device=out.device)
        for k, (y, x0) in enumerate(chunk):
            acc[:, :, y : y + ch, x0 : x0 + cw] += out[k * b : (k + 1) * b]
            count[:, :, y : y + ch, x0 : x0 + cw] += 1
    assert acc is not None
    return acc / (count * (2 if flip else 1))


def infer(
    model: Callable[[Tensor], Tensor],
    image: Tensor,
    mode: Mode = "whole",
    window: int | Sequence[int] | None = None,
    stride: int | Sequence[int] | None = None,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    batch_windows: int = 4,
    num_classes: int | None = None,
    align_corners: bool | None = None,
    output: Output = "logits",
    pad_to_window: bool = False,
    size_divisor: int = 1,
) -> Tensor:
    """Run a segmentation network on normalized images with the official evaluation protocol.

    Args:
        model: callable ``(N, 3, h, w) -> (N, C, h', w')`` logits at any resolution (HRNetV2: 1/4); put it
            in eval mode first (this function never changes the module's mode).
        image: normalized ``(B, 3, H, W)`` float tensor.
        mode: how each scale's image is processed: ``"whole"`` (one forward), ``"slide"`` (sliding window;
            degenerates to a whole forward when the image fits the window) or ``"multiscale"`` (whole when the
            scaled image fits ``window``, sliding window otherwise: the official rule; whole if no window).
        window: ``(h, w)`` crop for sliding windows (required by ``"slide"``).
        stride: ``(h, w)`` step between windows; default 2/3 of the window (official, non-Cityscapes).
        scales: image scale factors; outputs are resized to ``(H, W)`` and averaged (official: 0.5 .. 1.75).
        flip: also run the horizontally mirrored image and average it back in.
        batch_windows: windows per forward (bounds memory: window x batch, independent of the image size).
        num_classes: expected output channels; checked to catch a head/metadata mismatch early.
        align_corners: for resizing logits; default ``model.align_corners`` (False when absent).
        output: accumulate ``"logits"`` or softmax ``"probs"`` (mmseg style TTA).
        pad_to_window: pad windows smaller than ``window`` up to it (fixed shapes for static graphs).
        size_divisor: zero-pad every network input to a multiple of this (smp encoder-decoders need 32;
            HRNetV2 takes any size) and crop the output back.

    Returns:
        ``(B, C, H, W)`` averaged logits or probabilities. With one scale of 1.0, no flip and an image that
        fits the window, exactly the plain forward resized to the input size.
    """
    if image.ndim != 4:
        raise ValueError(f"image must be (B, C, H, W), got shape {tuple(image.shape)}")
    if mode not in ("whole", "slide", "multiscale"):
        raise ValueError(f"mode must be 'whole', 'slide' or 'multiscale', got {mode!r}")
    if output not in ("logits", "probs"):
        raise ValueError(f"output must be 'logits' or 'probs', got {output!r}")
    win = _pair(window, "window")
    if mode == "slide" and win is None:
        raise ValueError("mode='slide' needs window=(h, w)")
    strd = _pair(stride, "stride")
    if win is not None and strd is None:
        strd = (max(1, win[0] * 2 // 3), max(1, win[1] * 2 // 3))
    if not scales or any(float(s) <= 0 for s in scales):
        raise ValueError(f"scales must be a non-empty list of positive factors, got {scales!r}")
    if batch_windows < 1 or size_divisor < 1:
        raise ValueError(f"batch_windows and size_divisor must be >= 1, got {batch_windows}, {size_divisor}")
    ac = bool(getattr(model, "align_corners", False)) if align_corners is None else align_corners
    h, w = image.shape[-2:]
    size = (int(h), int(w))
    total: Tensor | None = None
    with torch.inference_mode():
        for scale in scales:
            s = float(scale)
            x = image
            if s != 1.0:
                scaled = (max(1, int(h * s + 0.5)), max(1, int(w * s + 0.5)))
                x = F.interpolate(image, size=scaled, mode="bilinear", align_corners=False)
            sh, sw = x.shape[-2:]
            fits = win is None or (sh <= win[0] and sw <= win[1])
            if mode == "whole" or (fits and not pad_to_window):
                # One resize straight from the network's resolution to the input size (no double resampling).
                out = _passes(model, x, size, ac, output, flip, size_divisor)
                _check_channels(out, num_classes)
                if flip:
                    out = out / 2
            else:
                assert win is not None and strd is not None
                out = _slide(
                    model,
                    x,
                    win,
                    strd,
                    batch_windows,
                    ac,
                    output,
                    flip,
                    pad_to_window,
                    num_classes,
                    size_divisor,
                )
                out = upsample_logits(out, size, ac)
            total = out if total is None else total + out
    assert total is not None
    return total if len(scales) == 1 else total / len(scales)


# --------------------------------------------------------------------------------------------------
# Fast inference path: conv+BN folding, channels_last, optional torch.compile
# --------------------------------------------------------------------------------------------------
def _find_conv_bn_pairs(model: nn.Module, probe: Tensor) -> tuple[list[tuple[str, str]], Any]:
    """Find (conv, bn) module names where the BN consumes exactly the conv's output.

    Dataflow is observed with hooks during one small forward, so this works for any module structure
    (HRNet's ``Sequential(conv, bn, relu)``, BasicBlock/Bottleneck ``convN -> bnN``, smp encoders) without
    relying on attribute order; modules called more than once (shared weights) are never folded.
    """
    names = {m: n for n, m in model.named_modules()}
    conv_out: dict[int, str] = {}
    keep: list[Tensor] = []  # hold the outputs so their ids cannot be reused during the probe
    calls: dict[str, int] = {}
    pairs: dict[str, str] = {}

    def on_conv(mod: nn.Module, args: tuple[Any, ...], out: Any) -> None:
        name = names[mod]
        calls[name] = calls.get(name, 0) + 1
        if isinstance(out, Tensor):
            conv_out[id(out)] = name
            keep.append(out)

    def on_bn(mod: nn.Module, args: tuple[Any, ...]) -> None:
        name = names[mod]
        calls[name] = calls.get(name, 0) + 1
        src = conv_out.get(id(args[0])) if args else None
        if src is not None:
            pairs[name] = src

    handles = []
    for mod in model.modules():
        if type(mod) is nn.Conv2d:
            handles.append(mod.register_forward_hook(on_conv))
        elif type(mod) is nn.BatchNorm2d:
            handles.append(mod.register_forward_pre_hook(on_bn))
    try:
        with torch.no_grad():
            reference = model(probe)
    finally:
        for hd in handles:
            hd.remove()
    used = list(pairs.values())
    found = [
        (conv, bn)
        for bn, conv in pairs.items()
        if calls.get(conv) == 1 and calls.get(bn) == 1 and used.count(conv) == 1
    ]
    return found, reference


def _set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, module)


@contextlib.contextmanager
def _exact_fp32() -> Iterator[None]:
    """Turn TF32 off for the folding probe: with it (cuDNN's default on Ampere+), two fp32 runs of a
    300-conv network differ by ~1e-2, which would hide nothing but trip the structural check."""
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def fold_batchnorm(model: nn.Module, probe_size: tuple[int, int] = (64, 64)) -> int:
    """Fold every eval-mode BatchNorm2d into the Conv2d that feeds it, in place; returns the pair count.

    Each folded BN becomes ``nn.Identity`` so module names and the model's class (and ``forward_features``,
    ``num_classes``, ...) stay as they were. Folding uses ``torch.nn.utils.fusion.fuse_conv_bn_eval``.
    """
    if model.training:
        raise ValueError("fold_batchnorm needs an eval-mode model (BN statistics are frozen only in eval)")
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    in_ch = int(getattr(model, "in_channels", 3) or 3)
    gen = torch.Generator().manual_seed(0)
    probe = torch.randn((1, in_ch, *probe_size), generator=gen).to(device)
    with _exact_fp32():
        pairs, reference = _find_conv_bn_pairs(model, probe)
    originals = []
    for conv_name, bn_name in pairs:
        conv = model.get_submodule(conv_name)
        bn = model.get_submodule(bn_name)
        assert isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)
        originals.append((conv_name, conv, bn_name, bn))
        _set_submodule(model, conv_name, torch.nn.utils.fusion.fuse_conv_bn_eval(conv, bn))
        _set_submodule(model, bn_name, nn.Identity())
    if isinstance(reference, Tensor) and pairs:
        # Guard against a conv output that also feeds something besides its BN: check the probe, undo if off.
        with torch.no_grad(), _exact_fp32():
            folded = model(probe)
        scale = max(1.0, float(reference.abs().max()))
        if float((folded - reference).abs().max()) > 1e-3 * scale:
            for conv_name, conv, bn_name, bn in originals:
                _set_submodule(model, conv_name, conv)
                _set_submodule(model, bn_name, bn)
            raise RuntimeError("conv+BN folding changed this model's output; use fold_bn=False")
    return len(pairs)


class _ChannelsLast(nn.Module):
    """Wrapper that feeds the wrapped network channels_last input (weights are converted once)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        for attr in ("num_classes", "align_corners", "in_channels"):
            if hasattr(net, attr):
                setattr(self, attr, getattr(net, attr))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.contiguous(memory_format=torch.channels_last))


def prepare_for_inference(
    model: nn.Module,
    fold_bn: bool = True,
    channels_last: bool | None = None,
    compile: bool = False,
    inplace: bool = False,
) -> nn.Module:
    """Return an eval-mode copy of ``model`` set up for fast inference (outputs equal the plain one to ~1e-5).

    Args:
        model: the network (left untouched unless ``inplace``).
        fold_bn: fold conv+BN pairs (fewer memory passes; the biggest CPU win for HRNet's many thin convs).
        channels_last: NHWC activations. None = on for CPU and CUDA: measured on a 2-core AVX2 CPU with
            torch 2.14, HRNetV2-W18-Small-v2 at 512x1024 ran 1.8x faster and W18 2x faster than NCHW
            (oneDNN convolutions run natively in NHWC and skip per-layer reorders).
        compile: wrap with ``torch.compile`` (inductor, static shapes; on CPU with inductor freezing, so the
            weights become constants and oneDNN convolutions are prepacked with fused post-ops: without
            freezing the compiled W18 ran 0.68x this eager path, with it 1.49x, see benchmarks/README.md).
            Compiling takes 1-2 minutes per input size on 2 CPU cores, so it is opt-in: use it for fixed-size
            inputs (a camera, ``pad_to_window`` sliding windows).
            :class:`Segmenter` reports the first call's time as ``compile_seconds``.
        inplace: modify ``model`` itself instead of a deep copy (saves memory for big models).

    Returns:
        The prepared module; it keeps ``num_classes`` / ``align_corners`` attributes for :func:`infer`.
    """
    net = model if inplace else copy.deepcopy(model)
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    if fold_bn:
        fold_batchnorm(net)
    param = next(net.parameters(), None)
    device_type = param.device.type if param is not None else "cpu"
    use_cl = device_type in ("cpu", "cuda") if channels_last is None else channels_last
    if use_cl:
        net = _ChannelsLast(net.to(memory_format=torch.channels_last))
    if compile:
        options = {"freezing": True} if device_type == "cpu" else None
        compiled = torch.compile(net, dynamic=False, options=options)
        for attr in ("num_classes", "align_corners", "in_channels"):
            if hasattr(net, attr):
                setattr(compiled, attr, getattr(net, attr))
        net = compiled  # type: ignore[assignment]
    return net


# --------------------------------------------------------------------------------------------------
# Checkpoints and bundles
# --------------------------------------------------------------------------------------------------
@dataclass
class ModelMeta:
    """Everything needed to rebuild a model and use it: architecture plus class and input metadata.

    This is the JSON of an exported bundle and the subset of a Lightning checkpoint's hyper-parameters that
    inference needs, so a bundle is self-describing and never needs the training code's config.
    """

    model: str
    num_classes: int
    model_options: dict[str, Any] = field(default_factory=dict)
    class_names: list[str] | None = None
    palette: list[list[int]] | None = None
    mean: list[float] = field(default_factory=lambda: list(_IMAGENET_MEAN))
    std: list[float] = field(default_factory=lambda: list(_IMAGENET_STD))
    align_corners: bool = False
    ignore_index: int = 255
    format_version: int = 1

    def __post_init__(self) -> None:
        """Fill defaults for missing class metadata and validate lengths."""
        self.num_classes = int(self.num_classes)
        if self.class_names is None:
            self.class_names = [f"class_{i}" for i in range(self.num_classes)]
        if self.palette is None:
            self.palette = _default_palette(self.num_classes)
        self.class_names = [str(n) for n in self.class_names]
        self.palette = [[int(c) for c in rgb] for rgb in self.palette]
        self.mean = [float(v) for v in self.mean]
        self.std = [float(v) for v in self.std]
        if len(self.class_names) != self.num_classes:
            raise ValueError(f"{len(self.class_names)} class names for num_classes={self.num_classes}")
        if len(self.palette) < self.num_classes or any(len(c) != 3 for c in self.palette):
            raise ValueError(f"palette must hold {self.num_classes} RGB triples")

    def build(self) -> nn.Module:
        """A fresh (randomly initialised) model of this architecture.

        As in ``SegmentationTask``, HRNetV2 takes ``align_corners`` from the metadata unless the options
        set it.
        """
        options = dict(self.model_options)
        if not self.model.startswith("smp:"):
            options.setdefault("align_corners", self.align_corners)
        return build_model(self.model, num_classes=self.num_classes, **options)

    def to_json(self) -> str:
        """Stable, human-readable JSON."""
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelMeta:
        """Build from a bundle JSON dict or Lightning hyper-parameters (unknown keys are ignored)."""
        known = set(cls.__dataclass_fields__)
        kwargs = {k: v for k, v in data.items() if k in known and v is not None}
        if "model" not in kwargs or "num_classes" not in kwargs:
            raise ValueError(f"model config needs 'model' and 'num_classes'; got keys {sorted(data)}")
        if not isinstance(kwargs["model"], str):
            raise ValueError(f"'model' must be a model name (str), got {type(kwargs['model']).__name__}")
        kwargs["model_options"] = dict(kwargs.get("model_options") or {})
        return cls(**kwargs)


def _default_palette(n: int) -> list[list[int]]:
    """VOC bit-interleaved colours for checkpoints that carry no palette."""
    return [list(c) for c in voc_colormap(n)]


def _strip_prefix(state: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def _load_lightning(path: Path, trusted: bool) -> tuple[ModelMeta, dict[str, Tensor]]:
    """Read a Lightning ``.ckpt`` without Lightning: hyper-parameters + ``model.*`` weights."""
    import pickle

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=not trusted)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"{path}: the checkpoint holds Python objects that safe (weights_only) loading refuses; "
            f"if you trust the file, pass trusted=True. ({str(err).splitlines()[0]})"
        ) from err
    except (RuntimeError, EOFError, OSError) as err:
        raise ValueError(f"{path}: cannot read checkpoint (corrupt or truncated?): {err}") from err
    if not isinstance(ckpt, Mapping) or "state_dict" not in ckpt:
        raise ValueError(f"{path}: not a Lightning checkpoint (no 'state_dict')")
    hparams = ckpt.get("hyper_parameters") or {}
    if "model" not in hparams or "num_classes" not in hparams:
        raise ValueError(
            f"{path}: the checkpoint's hyper_parameters lack 'model' / 'num_classes' "
            f"(found {sorted(hparams)}); was it saved by hrseg's SegmentationTask?"
        )
    meta = ModelMeta.from_dict(hparams)
    state = _strip_prefix(ckpt["state_dict"], "model.")
    if not state:
        raise ValueError(f"{path}: no 'model.*' weights in the checkpoint's state_dict")
    return meta, state


def _read_safetensors(path: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    from safetensors import safe_open

    tensors: dict[str, Tensor] = {}
    with safe_open(str(path), framework="pt", device="cpu") as fh:
        metadata = dict(fh.metadata() or {})
        for key in fh.keys():  # noqa: SIM118 - safe_open is not a Mapping
            tensors[key] = fh.get_tensor(key)
    return tensors, metadata


def _load_bundle(path: Path) -> tuple[ModelMeta, dict[str, Tensor]]:
    """A safetensors bundle: the file (config embedded in its header and/or a sidecar JSON) or its folder."""
    if path.is_dir():
        weights = path / "model.safetensors"
        config = path / "config.json"
    elif path.suffix == ".json":
        config = path
        weights = path.with_suffix(".safetensors")
    else:
        weights = path
        config = path.with_suffix(".json")
    if not weights.is_file():
        raise FileNotFoundError(f"bundle weights not found: {weights}")
    state, metadata = _read_safetensors(weights)
    if config.is_file():
        data = json.loads(config.read_text())
    elif CONFIG_METADATA_KEY in metadata:
        data = json.loads(metadata[CONFIG_METADATA_KEY])
    else:
        raise ValueError(
            f"{weights}: no model config: neither {config.name} next to it nor '{CONFIG_METADATA_KEY}' in "
            "its header (plain weights load with hrseg.load_pretrained into a model you build)"
        )
    return ModelMeta.from_dict(data), state


class ExportedModel(nn.Module):
    """An exported graph (ONNX Runtime session or ``.pt2`` program) behind the ``model(x) -> logits`` call.

    Exported graphs are already BN-folded and fixed in eval mode, so ``train()`` is a no-op and
    :class:`Segmenter` does not prepare them again.
    """

    exported = True

    def __init__(self, run: Callable[[Tensor], Tensor], meta: ModelMeta, kind: str) -> None:
        super().__init__()
        self._run = run
        self.kind = kind
        self.num_classes = meta.num_classes
        self.align_corners = meta.align_corners
        self.in_channels = int(meta.model_options.get("in_channels", 3))

    def train(self, mode: bool = True) -> ExportedModel:
        """Exported graphs have no training mode."""
        return self

    def forward(self, x: Tensor) -> Tensor:
        """Logits of the exported graph for a normalized batch."""
        return self._run(x)


def _load_onnx(path: Path) -> tuple[nn.Module, ModelMeta]:
    import onnx
    import onnxruntime as ort

    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    if CONFIG_METADATA_KEY not in props:
        raise ValueError(f"{path}: no '{CONFIG_METADATA_KEY}' metadata (not exported by hrseg export)")
    meta = ModelMeta.from_dict(json.loads(props[CONFIG_METADATA_KEY]))
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run(x: Tensor) -> Tensor:
        out = session.run(None, {name: x.detach().float().cpu().contiguous().numpy()})[0]
        return torch.from_numpy(out).to(x.device)

    return ExportedModel(run, meta, "onnx"), meta


def _load_pt2(path: Path) -> tuple[nn.Module, ModelMeta]:
    extra = {f"{CONFIG_METADATA_KEY}.json": ""}
    program = torch.export.load(str(path), extra_files=extra)
    if not extra[f"{CONFIG_METADATA_KEY}.json"]:
        raise ValueError(f"{path}: no {CONFIG_METADATA_KEY}.json inside (not exported by hrseg export)")
    meta = ModelMeta.from_dict(json.loads(extra[f"{CONFIG_METADATA_KEY}.json"]))
    module = program.module()
    return ExportedModel(module, meta, "pt2"), meta


def load_checkpoint(path: str | Path, trusted: bool = False) -> tuple[nn.Module, ModelMeta]:
    """Rebuild the eval-mode network and its metadata from a Lightning ``.ckpt`` or a safetensors bundle.

    Args:
        path: ``*.ckpt`` (hrseg SegmentationTask), ``*.safetensors`` (+ ``*.json``), ``*.json``, a bundle
            folder holding ``model.safetensors`` and ``config.json``, or an ``hrseg export`` ``.onnx`` /
            ``.pt2`` (run through ONNX Runtime / the exported program; already BN-folded).
        trusted: allow pickled Python objects in a ``.ckpt`` (only for files you trust).

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: the file is not a recognised checkpoint or its weights do not fit the architecture.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"checkpoint not found: {p}")
    if p.suffix == ".onnx":
        return _load_onnx(p)
    if p.suffix == ".pt2":
        return _load_pt2(p)
    if p.is_dir() or p.suffix in (".safetensors", ".json"):
        meta, state = _load_bundle(p)
    else:
        meta, state = _load_lightning(p, trusted)
    model = meta.build()
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(
            f"{p}: weights do not match {meta.model} with {meta.num_classes} classes: {err}"
        ) from err
    return model.eval(), meta


# --------------------------------------------------------------------------------------------------
# Image inputs
# --------------------------------------------------------------------------------------------------
def load_image(path: str | Path) -> Image.Image:
    """Open and decode an image file, naming the file when it is missing or unreadable."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"{p}: image file not found")
    try:
        img = Image.open(p)
        img.load()
    except Exception as err:  # PIL raises several unrelated types for bad files
        raise ValueError(f"{p}: unreadable or corrupt image ({err})") from err
    return img


def _pil_to_array(img: Image.Image) -> np.ndarray:
    """PIL image -> HxWxC float32 in [0, 1]; 16-bit greyscale keeps its range, alpha is dropped."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float32)
        return (arr / (65535.0 if arr.max(initial=0) > 255 else 255.0))[..., None]
    if img.mode == "F":
        return np.asarray(img, dtype=np.float32)[..., None]
    if img.mode == "L":
        return np.asarray(img, dtype=np.float32)[..., None] / 255.0
    if img.mode != "RGB":
        img = img.convert("RGB")  # RGBA/LA/P/CMYK/YCbCr...: alpha is dropped, palettes are expanded
    return np.asarray(img, dtype=np.float32) / 255.0


def _array_to_unit(arr: np.ndarray) -> np.ndarray:
    """Integer or float numpy image -> float32 in [0, 1] with an explicit error for other ranges."""
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    if arr.dtype == np.uint16:
        return arr.astype(np.float32) / 65535.0
    if arr.dtype == np.bool_:
        return arr.astype(np.float32)
    if np.issubdtype(arr.dtype, np.floating):
        out = arr.astype(np.float32)
        if out.size and (float(out.min()) < -1e-3 or float(out.max()) > 1.0 + 1e-3):
            raise ValueError(
                f"float images must hold values in [0, 1], got [{float(out.min()):.3g}, "
                f"{float(out.max()):.3g}]; pass uint8 or divide by 255"
            )
        return out
    raise ValueError(f"unsupported image dtype {arr.dtype}; use uint8, uint16 or float in [0, 1]")


def _to_channels(x: Tensor, in_channels: int) -> Tensor:
    """(B, c, H, W) with c in {1, 2, 3, 4} -> (B, in_channels, H, W): grey is replicated, alpha dropped."""
    c = x.shape[1]
    if c not in (1, 2, 3, 4):
        raise ValueError(f"images must have 1 (grey), 2 (grey+alpha), 3 (RGB) or 4 (RGBA) channels, got {c}")
    if c in (2, 4):
        x = x[:, : c - 1]
        c -= 1
    if in_channels == 3 and c == 1:
        return x.expand(-1, 3, -1, -1)
    if in_channels == 1 and c == 3:
        weights = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x * weights).sum(dim=1, keepdim=True)
    if c != in_channels:
        raise ValueError(f"the model takes {in_channels}-channel input, the image has {c} channels")
    return x


def to_image_tensor(image: ImageInput, in_channels: int = 3) -> tuple[Tensor, bool]:
    """Convert any supported image to a float ``(B, in_channels, H, W)`` tensor in [0, 1] (not normalized).

    Accepts a path, a PIL image (RGB, L, RGBA, P, 16-bit), a numpy array ``HxW`` / ``HxWxC`` (uint8, uint16 or
    float in [0, 1]) or a tensor ``HxW`` / ``CxHxW`` / ``BxCxHxW`` (uint8 or float in [0, 1]).

    Returns:
        The tensor and whether the input carried a batch dimension.
    """
    batched = False
    if isinstance(image, str | Path):
        image = load_image(image)
    if isinstance(image, Image.Image):
        t = torch.from_numpy(np.ascontiguousarray(_pil_to_array(image))).permute(2, 0, 1)[None]
    elif isinstance(image, np.ndarray):
        if image.ndim == 2:
            image = image[..., None]
        if image.ndim != 3 or image.shape[-1] not in (1, 2, 3, 4):
            raise ValueError(
                f"numpy images must be HxW or HxWxC with 1 to 4 channels, got shape {image.shape}"
            )
        t = torch.from_numpy(np.ascontiguousarray(_array_to_unit(image))).permute(2, 0, 1)[None]
    elif isinstance(image, Tensor):
        t = image.detach()
        if t.ndim == 2:
            t = t[None, None]
        elif t.ndim == 3:
            if t.shape[0] not in (1, 2, 3, 4) and t.shape[-1] in (1, 2, 3, 4):
                t = t.permute(2, 0, 1)  # HxWxC
            t = t[None]
        elif t.ndim == 4:
            batched = True
        else:
            raise ValueError(f"tensor images must be HxW, CxHxW or BxCxHxW, got shape {tuple(t.shape)}")
        if t.dtype == torch.uint8:
            t = t.float() / 255.0
        elif t.is_floating_point():
            t = t.float()
            if t.numel() and (float(t.min()) < -1e-3 or float(t.max()) > 1.0 + 1e-3):
                raise ValueError(
                    f"float tensors must hold values in [0, 1], got [{float(t.min()):.3g}, "
                    f"{float(t.max()):.3g}]; pass uint8, divide by 255, or call hrseg.inference.infer with a "
                    "normalized tensor"
                )
        else:
            raise ValueError(f"unsupported tensor dtype {t.dtype}; use uint8 or float in [0, 1]")
    else:
        raise TypeError(
            f"unsupported image type {type(image).__name__}: use a path, PIL image, numpy array or tensor"
        )
    if min(t.shape[-2:]) < 1:
        raise ValueError(f"empty image of shape {tuple(t.shape)}")
    return _to_channels(t, in_channels), batched


# --------------------------------------------------------------------------------------------------
# Segmenter
# --------------------------------------------------------------------------------------------------
class Segmenter:
    """Run a trained model on files and arrays: preprocessing, the inference protocol, label maps, colours.

    Args:
        model: the network (a plain ``nn.Module``; prepared for fast inference unless ``fast=False``).
        meta: architecture and class metadata (:class:`ModelMeta`).
        device: where to run (``"cpu"``, ``"cuda"``, ...).
        mode, window, stride, scales, flip, batch_windows: the :func:`infer` protocol.
        fast: fold BN and use channels_last (outputs equal the plain model to ~1e-5).
        compile: additionally ``torch.compile`` the model.

    Example:
        >>> seg = Segmenter.from_checkpoint("runs/demo/best.ckpt")  # doctest: +SKIP
        >>> mask = seg.predict("street.png")                        # (H, W) int64 train ids  # doctest: +SKIP
        >>> Image.fromarray(seg.colorize(mask)).save("street_color.png")  # doctest: +SKIP
    """

    def __init__(
        self,
        model: nn.Module,
        meta: ModelMeta,
        device: str | torch.device = "cpu",
        mode: Mode = "whole",
        window: int | Sequence[int] | None = None,
        stride: int | Sequence[int] | None = None,
        scales: Sequence[float] = (1.0,),
        flip: bool = False,
        batch_windows: int = 4,
        fast: bool = True,
        compile: bool = False,
    ) -> None:
        self.meta = meta
        self.device = torch.device(device)
        self.mode: Mode = mode
        self.window = _pair(window, "window")
        self.stride = _pair(stride, "stride")
        self.scales = tuple(float(s) for s in scales)
        self.flip = flip
        self.batch_windows = batch_windows
        if mode == "slide" and self.window is None:
            raise ValueError("mode='slide' needs window=(h, w)")
        model = model.to(self.device).eval()
        self.in_channels = int(getattr(model, "in_channels", 3) or 3)
        # smp encoder-decoders need inputs divisible by their output stride; HRNetV2 takes any size.
        self.size_divisor = 32 if meta.model.startswith("smp:") else 1
        self.compile_seconds: float | None = None
        self.model: nn.Module = model
        if (fast or compile) and not getattr(model, "exported", False):
            self.model = prepare_for_inference(
                model, fold_bn=fast, channels_last=None if fast else False, compile=compile
            )
        c = self.in_channels if len(meta.mean) >= self.in_channels else len(meta.mean)
        self._mean = torch.tensor(meta.mean[:c], dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self._std = torch.tensor(meta.std[:c], dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        if float(self._mean.max()) > 1.0:  # 0..255 units in some configs
            self._mean, self._std = self._mean / 255.0, self._std / 255.0
        self._time_first_call = compile

    @classmethod
    def from_checkpoint(cls, path: str | Path, trusted: bool = False, **kwargs: Any) -> Segmenter:
        """Load a Lightning ``.ckpt``, a safetensors bundle or an exported ``.onnx`` / ``.pt2``.

        See :func:`load_checkpoint` for the accepted paths.

        ``kwargs`` go to the constructor (device, mode, window, stride, scales, flip, ...).
        """
        model, meta = load_checkpoint(path, trusted=trusted)
        return cls(model, meta, **kwargs)

    @property
    def num_classes(self) -> int:
        """Number of output classes."""
        return self.meta.num_classes

    @property
    def class_names(self) -> list[str]:
        """Class names in train-id order."""
        return list(self.meta.class_names or [])

    @property
    def palette(self) -> list[list[int]]:
        """One RGB colour per class."""
        return list(self.meta.palette or [])

    def normalize(self, x: Tensor) -> Tensor:
        """[0, 1] RGB -> the model's input normalization."""
        return (x.to(self.device) - self._mean) / self._std

    def probabilities(self, image: ImageInput) -> Tensor:
        """Class probabilities ``(B, C, H, W)`` for any supported input (always batched)."""
        return self._run(image, "probs")

    def _single_pass(self) -> bool:
        """One forward per image: no scales, flips or overlapping windows to average."""
        return self.mode == "whole" and not self.flip and self.scales == (1.0,)

    def _run(self, image: ImageInput, output: Output) -> Tensor:
        x, _ = to_image_tensor(image, self.in_channels)
        if self._time_first_call:  # torch.compile compiles on the first call: report how long that took
            self._time_first_call = False
            start = time.perf_counter()
            out = self._infer(x, output)
            self.compile_seconds = time.perf_counter() - start
            return out
        return self._infer(x, output)

    def _infer(self, x: Tensor, output: Output) -> Tensor:
        return infer(
            self.model,
            self.normalize(x),
            mode=self.mode,
            window=self.window,
            stride=self.stride,
            scales=self.scales,
            flip=self.flip,
            batch_windows=self.batch_windows,
            num_classes=self.num_classes,
            align_corners=self.meta.align_corners,
            output=output,
            size_divisor=self.size_divisor,
        )

    def predict(self, image: ImageInput, return_probs: bool = False) -> Any:
        """Label map for one image (or a batch tensor).

        Args:
            image: path, PIL image, numpy array or tensor (see :func:`to_image_tensor`); any size.
            return_probs: also return class probabilities ``(C, H, W)``.

        Returns:
            ``(H, W)`` int64 train ids: a numpy array, or a tensor when the input was a tensor (``(B, H, W)``
            for a ``BxCxHxW`` tensor); with ``return_probs`` a ``(mask, probs)`` pair.
        """
        # Passes are averaged as probabilities; a single pass needs no full-resolution softmax for the argmax.
        output: Output = "logits" if self._single_pass() and not return_probs else "probs"
        probs = self._run(image, output)
        mask = probs.argmax(dim=1)
        if not (isinstance(image, Tensor) and image.ndim == 4):
            mask, probs = mask[0], probs[0]
        if isinstance(image, Tensor):
            mask, probs = mask.to(image.device), probs.to(image.device)
            return (mask, probs) if return_probs else mask
        mask_np = mask.cpu().numpy().astype(np.int64)
        return (mask_np, probs.cpu().numpy()) if return_probs else mask_np

    def predict_batch(
        self, images: Iterable[ImageInput], return_probs: bool = False, progress: bool = False
    ) -> list[Any]:
        """Label maps (or ``(mask, probs)`` pairs) for many images of any sizes, in order."""
        items = list(images)
        iterator: Iterable[ImageInput] = items
        if progress:
            from tqdm.auto import tqdm

            iterator = tqdm(items, desc="predict", unit="img")
        return [self.predict(img, return_probs=return_probs) for img in iterator]

    def colorize(self, mask: np.ndarray | Tensor) -> np.ndarray:
        """Label map -> RGB uint8 ``(H, W, 3)`` with the palette; ignore / unknown ids are black."""
        arr = mask.cpu().numpy() if isinstance(mask, Tensor) else np.asarray(mask)
        return colorize_mask(arr, self.palette)

    def overlay(self, image: ImageInput, mask: np.ndarray | Tensor, alpha: float = 0.5) -> np.ndarray:
        """Blend the colourised mask over the image (RGB uint8), e.g. for a quick visual check."""
        x, _ = to_image_tensor(image, 3)
        rgb = (x[0].permute(1, 2, 0).cpu().numpy() * 255.0).round()
        color = self.colorize(mask).astype(np.float32)
        if rgb.shape[:2] != color.shape[:2]:
            raise ValueError(f"image {rgb.shape[:2]} and mask {color.shape[:2]} sizes differ")
        return ((1.0 - alpha) * rgb + alpha * color).clip(0, 255).astype(np.uint8)


def colorize_mask(mask: np.ndarray, palette: Sequence[Sequence[int]]) -> np.ndarray:
    """Label map -> RGB uint8 with ``palette``; ids outside the palette (255 = ignore) are black."""
    n = len(palette)
    table = np.zeros((n + 1, 3), dtype=np.uint8)
    if n:
        table[:n] = np.asarray(palette, dtype=np.uint8).reshape(n, 3)
    idx = np.asarray(mask).astype(np.int64)
    idx = np.where((idx < 0) | (idx >= n), n, idx)
    return table[idx]
