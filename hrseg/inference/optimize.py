"""The fast inference path: conv+BN folding, channels_last, ``torch.compile`` (:func:`prepare_for_inference`).

Outputs equal the plain eval-mode model to ~1e-5; ``benchmarks/`` measures what each step buys.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import Any, cast

import torch
from torch import Tensor, nn

from hrseg.models import MODEL_CAPABILITIES

__all__ = ["copy_capabilities", "fold_batchnorm", "prepare_for_inference"]


def copy_capabilities(source: nn.Module, target: nn.Module) -> None:
    """Give a wrapper the wrapped model's capability attributes (``num_classes``, ``size_divisor``, ...)."""
    for attr in MODEL_CAPABILITIES:
        if hasattr(source, attr):
            setattr(target, attr, getattr(source, attr))


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
    """Turn TF32 off for the folding probe.

    With TF32 (cuDNN's default on Ampere+) two fp32 runs of a 300-conv network differ by ~1e-2, which would
    hide nothing but trip the structural check.
    """
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


class _PreparedInput(nn.Module):
    """Feeds the wrapped network channels_last and / or ``dtype`` input (weights converted once); fp32 out."""

    def __init__(self, net: nn.Module, channels_last: bool, dtype: torch.dtype | None) -> None:
        super().__init__()
        self.net = net
        self.channels_last = channels_last
        self.dtype = dtype
        copy_capabilities(net, self)

    def forward(self, x: Tensor) -> Tensor:
        if self.dtype is not None:
            x = x.to(self.dtype)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        out = self.net(x)
        return out if self.dtype is None else out.float()


def prepare_for_inference(
    model: nn.Module,
    fold_bn: bool = True,
    channels_last: bool | None = None,
    compile: bool = False,
    inplace: bool = False,
    dtype: torch.dtype | None = None,
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
            :class:`~hrseg.deploy.Segmenter` reports the first call's time as ``compile_seconds``.
        inplace: modify ``model`` itself instead of a deep copy (saves memory for big models).
        dtype: run in this precision (``torch.bfloat16`` / ``torch.float16``, for GPUs): the BN-folded
            weights are cast once and the input on every call; logits come back as fp32. At batch 1 this beats
            autocast, which adds a cast kernel per convolution to a launch-bound network (on an H200, autocast
            ran 0.8-1.2x fp32; benchmarks/README.md, "Backends"). HRNet-OCR's softmaxes still run in fp32.

    Returns:
        The prepared module; it keeps the model's capability attributes (``num_classes``, ...).
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
        net = net.to(memory_format=torch.channels_last)
    if dtype is not None:
        net = net.to(dtype)
    if use_cl or dtype is not None:
        net = _PreparedInput(net, use_cl, dtype)
    if compile:
        options: dict[str, Any] | None = {"freezing": True} if device_type == "cpu" else None
        # torch.compile is typed for any callable; given a module it returns one (an OptimizedModule)
        compiled = cast(nn.Module, torch.compile(net, dynamic=False, options=options))
        copy_capabilities(net, compiled)
        net = compiled
    return net
