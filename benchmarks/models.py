"""Model construction shared by the cases: equal seeded weights, hrseg / reference builders, ONNX export.

Weights are random but realistic: BatchNorm statistics are calibrated on one random batch (and the affine
parameters jittered), so BN folding is not a no-op and the logits are O(1), which makes "equal to 1e-4" a
meaningful check. They are written once per variant and loaded by every case, so hrseg eager, hrseg fast, the
timm reference and ONNX Runtime all run the same numbers.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import json
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from benchmarks.reference import TimmHRNetV2, hrseg_to_reference_state

VARIANTS = ("w18_small_v2", "w18", "w48")
#: HRNet-OCR variants are named ``<variant>_ocr`` (``w48_ocr``: ``hrnetv2_w48_ocr``); timm has no OCR head, so
#: they get no reference case and are compared with their plain-head variant instead
OCR_SUFFIX = "_ocr"


def is_ocr(variant: str) -> bool:
    """Whether ``variant`` is an HRNet-OCR model (``w48_ocr``)."""
    return variant.endswith(OCR_SUFFIX)


def plain_variant(variant: str) -> str:
    """The plain-head HRNetV2 variant an OCR variant is compared with (``w48_ocr`` -> ``w48``)."""
    return variant.removesuffix(OCR_SUFFIX)


def has_reference(variant: str) -> bool:
    """Whether the timm reference can run ``variant`` (not for HRNet-OCR)."""
    return not is_ocr(variant)


#: timm fuses branches by nearest upsampling; hrseg compares in that mode so outputs can be equal
PARITY_FUSE_MODE = "nearest"


def seeded_input(batch: int, height: int, width: int, seed: int = 0) -> Tensor:
    """The same pseudo-random normalized image in every process."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn((batch, 3, height, width), generator=gen)


def _hrseg(variant: str, num_classes: int, fuse_mode: str) -> nn.Module:
    from hrseg.models import build_model

    return build_model(f"hrnetv2_{variant}", num_classes=num_classes, fuse_mode=fuse_mode)


def make_weights(
    variant: str, cache_dir: Path, num_classes: int = 19, fuse_mode: str = PARITY_FUSE_MODE, seed: int = 0
) -> Path:
    """Write (once) a seeded hrseg state dict with calibrated BN statistics and return its path."""
    path = Path(cache_dir) / f"weights-{variant}-{fuse_mode}-c{num_classes}-s{seed}.pt"
    if path.is_file():
        return path
    torch.manual_seed(seed)
    model = _hrseg(variant, num_classes, fuse_mode)
    gen = torch.Generator().manual_seed(seed + 1)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    # the BN closing each residual branch gets a small scale, as in trained ResNets / HRNets (and the common
    # zero-init-residual practice); with unit scales a random 300-conv network amplifies fp32 rounding ~1000x
    # and any reordering of the arithmetic (BN folding, channels_last) moves the logits by ~5e-5
    from hrseg.models.blocks import BasicBlock, Bottleneck

    last_bns = {id(m.bn3) for m in model.modules() if isinstance(m, Bottleneck)}
    last_bns |= {id(m.bn2) for m in model.modules() if isinstance(m, BasicBlock)}
    with torch.no_grad():
        for bn in bns:
            lo, span = (0.1, 0.2) if id(bn) in last_bns else (0.75, 0.5)
            bn.weight.copy_(lo + span * torch.rand(bn.weight.shape, generator=gen))
            bn.bias.copy_(0.1 * torch.randn(bn.bias.shape, generator=gen))
            bn.momentum = 1.0  # running stats := this batch's stats
        model.train()
        model(seeded_input(2, 128, 256, seed=seed + 2))
        head = getattr(model, "cls_head", None)
        if isinstance(head, nn.Conv2d):
            # HRNet-OCR (random head, BN of the K region vectors calibrated on 2 x K values): the eval-mode
            # main logits come out O(10-40); scale the final 1x1 conv (exact: it is linear) so they are O(1)
            # like a trained model's and the 1e-4 parity check keeps its meaning
            model.eval()
            scale = max(1.0, float(model(seeded_input(1, 256, 512, seed=seed)).std()))
            head.weight.div_(scale)
            if head.bias is not None:
                head.bias.div_(scale)
    for bn in bns:
        bn.momentum = 0.1
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(model.state_dict(), tmp)
    tmp.replace(path)
    return path


def _load_into(model_fn: Any, state: dict[str, Tensor]) -> nn.Module:
    """Build on the meta device (no init cost for W48's 65M parameters) and adopt the loaded tensors."""
    with torch.device("meta"):
        model = model_fn()
    model.load_state_dict(state, strict=True, assign=True)
    return model


def build_hrseg(
    variant: str, weights: str | Path | None, num_classes: int = 19, fuse_mode: str = PARITY_FUSE_MODE
) -> nn.Module:
    """hrseg HRNetV2 in eval mode with the shared weights (random init when ``weights`` is None)."""
    if weights is None:
        return _hrseg(variant, num_classes, fuse_mode).eval()
    state = torch.load(weights, map_location="cpu", weights_only=True)
    return _load_into(lambda: _hrseg(variant, num_classes, fuse_mode), state).eval()


def build_reference(variant: str, weights: str | Path | None, num_classes: int = 19) -> nn.Module:
    """The timm-based reference with the same weights."""
    if weights is None:
        return TimmHRNetV2(variant, num_classes).eval()
    state = hrseg_to_reference_state(torch.load(weights, map_location="cpu", weights_only=True))
    return _load_into(lambda: TimmHRNetV2(variant, num_classes), state).eval()


def export_onnx(
    model: nn.Module,
    variant: str,
    num_classes: int,
    fuse_mode: str,
    cache: Path,
    size: tuple[int, int],
    exporter: str = "torchscript",
) -> tuple[Path, dict[str, Any]]:
    """Export hrseg's model for ONNX Runtime once per variant (cached), through ``hrseg.export.export``.

    hrseg's exporter folds BN, keeps batch/height/width dynamic (one file serves every input size) and
    checks the file against eager in ONNX Runtime. The TorchScript exporter is used by default: on 2 cores the
    dynamo exporter took ~95 s for W18-Small-v2 versus ~10 s, and hrseg.export documents that both graphs run
    at the same speed. Without ``hrseg.export`` it falls back to ``torch.onnx.export`` at the fixed ``size``.
    """
    cache.mkdir(parents=True, exist_ok=True)
    try:
        from hrseg.export import export as hrseg_export
        from hrseg.inference import ModelMeta
    except ImportError:
        hrseg_export = None
    stem = f"{variant}-{fuse_mode}-c{num_classes}"
    if hrseg_export is None:
        stem += f"-{size[0]}x{size[1]}"
    path, meta_path = cache / f"{stem}.onnx", cache / f"{stem}.json"
    if path.is_file() and meta_path.is_file():
        return path, {**json.loads(meta_path.read_text()), "cached": True}
    t0 = time.perf_counter()
    info: dict[str, Any]
    if hrseg_export is not None:
        meta = ModelMeta(
            model=f"hrnetv2_{variant}", num_classes=num_classes, model_options={"fuse_mode": fuse_mode}
        )
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            res = hrseg_export(model, "onnx", out=path, height=256, width=512, meta=meta, exporter=exporter)
        info = {
            "exporter": f"hrseg.export.export(exporter={exporter!r}), dynamic shapes, BN folded",
            "export_check_max_abs_diff": res.max_abs_diff,
            "export_check_passed": res.passed,
        }
    else:
        kwargs: dict[str, Any] = {"input_names": ["image"], "output_names": ["logits"], "opset_version": 17}
        if "dynamo" in inspect.signature(torch.onnx.export).parameters:
            kwargs["dynamo"] = False
        example = seeded_input(1, *size)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (example,), str(path), **kwargs)
        info = {"exporter": "torch.onnx.export (TorchScript exporter, static shape; hrseg.export missing)"}
    info["export_s"] = time.perf_counter() - t0
    meta_path.write_text(json.dumps(info))
    return path, info
