"""Running the evaluation protocol: whole image / sliding window, multi-scale + flip, on any ``model(x)``.

The protocol itself is one value, :class:`hrseg.eval_protocol.EvalProtocol`; :func:`infer` runs it.
It follows the official HRNet code (docs/reference/protocol.md): every scale's image is run whole or by a
sliding window (windows batched, the last one aligned to the border, overlaps averaged through a count map),
optionally also horizontally flipped, and the per-scale outputs are resized to the input size and accumulated
before the argmax. The accumulation is an average rather than a bare sum: the argmax is the same, and a
single pass returns the plain forward bit for bit. Validation/test (through the task), ``Segmenter`` and
``hrseg predict`` all run it, so they agree.

``mode="official"`` runs the official code's ``multi_scale_inference`` instead, step for step (OpenCV resize
of the normalised image by its long side, its window and padding rules, ``exp`` of the logits summed over
scales): :func:`infer` returns the log of that sum divided by the scale count, so its argmax is the official
prediction and its softmax the official scores normalised. OpenCV is imported only when that mode runs.

A flip mirrors the output back and, given a label set's ``flip_permutation``, swaps the channels of its
left/right classes (the official LIP code's swap), in both pipelines.

Mode ``tile`` is the protocol of images larger than memory: the sliding windows of the image at its own size,
each window run at every scale (and mirrored) on its own pixels, then blended like ``slide``. Every window
depends on its crop alone, so a streamed prediction (:mod:`hrseg.deploy.stream`) gives the same label map
as the in-memory one; ``slide`` at one scale is local too and streams as it is. The sweep over the windows
is :func:`hrseg.inference.tiling.sweep` in both cases.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from hrseg.eval_protocol import EvalProtocol
from hrseg.inference.tiling import Block, WindowGrid, sliding_window_starts, sweep
from hrseg.models import upsample_logits

__all__ = [
    "EvalProtocol",
    "Output",
    "class_argmax",
    "infer",
    "official_size",
    "slide_runner",
    "sliding_window_starts",
    "tile_runner",
]

Output = Literal["logits", "probs"]


def class_argmax(scores: Tensor) -> Tensor:
    """Label maps ``(B, H, W)`` int64 from ``(B, C, H, W)`` scores: ``scores.argmax(dim=1)``, fast on the CPU.

    PyTorch's CPU argmax over the class axis of an NCHW tensor reads memory with a stride of H x W; a running
    maximum over the C planes gives the same labels about 3x faster (19 x 1024 x 2048 on 2 cores: 0.26 s ->
    0.08 s, a quarter of a Cityscapes image's prediction time with the ONNX Runtime / OpenVINO backends,
    whose logits are NCHW). Ties go to the lowest class, as with argmax; a NaN score is never picked.
    Channels-last and GPU tensors use argmax itself, which is fast there.
    """
    if scores.device.type != "cpu" or scores.ndim != 4 or not scores.is_contiguous() or scores.shape[1] < 2:
        return scores.argmax(dim=1)
    best = scores[:, 0].clone()
    labels = torch.zeros(best.shape, dtype=torch.long)
    for c in range(1, scores.shape[1]):
        plane = scores[:, c]
        labels.masked_fill_(plane > best, c)
        torch.maximum(best, plane, out=best)
    return labels


def _forward_resized(
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


def _forward_with_mirror(
    model: Callable[[Tensor], Tensor],
    x: Tensor,
    size: tuple[int, int],
    align_corners: bool,
    output: Output,
    flip: bool,
    divisor: int = 1,
    permutation: Tensor | None = None,
) -> Tensor:
    """Sum the resized pass and (with ``flip``) the mirrored input's pass mirrored back; callers divide.

    ``permutation`` reorders the mirrored output's channels (``out[:, permutation]``): in a mirror image a
    left arm is seen as a right arm, so its scores belong to the other class.
    """
    out = _forward_resized(model, x, size, align_corners, output, divisor)
    if flip:
        mirrored = _forward_resized(model, x.flip(-1), size, align_corners, output, divisor).flip(-1)
        if permutation is not None:
            mirrored = mirrored.index_select(1, permutation.to(mirrored.device))
        out = out + mirrored
    return out


def _permutation(flip_permutation: Sequence[int] | None, num_classes: int | None) -> Tensor | None:
    """The flip permutation as an index tensor, checked to order ``num_classes`` classes (None: no swaps)."""
    if flip_permutation is None:
        return None
    perm = torch.as_tensor(list(flip_permutation), dtype=torch.long)
    if num_classes is not None and sorted(perm.tolist()) != list(range(num_classes)):
        raise ValueError(f"flip_permutation must order the {num_classes} classes, got {perm.tolist()}")
    return perm


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
    permutation: Tensor | None = None,
) -> Tensor:
    """Sliding-window pass over ``x`` (B, C, H, W) -> summed outputs / (count x flips) at (H, W).

    Windows of all images in the batch are stacked so one forward sees up to ``max(batch_windows, B)`` crops;
    memory is bounded by that many windows, not by the image. When the image is smaller than the window along
    an axis, the crop covers the whole axis, and ``pad_to_window`` pads it (with zeros, i.e. the mean colour
    after normalization) to the window size for models or exported graphs that want one fixed shape. The
    sweep is :func:`hrseg.inference.tiling.sweep`, the one streamed prediction runs.
    """
    b, _, h, w = x.shape
    grid = WindowGrid.of(h, w, window, stride)
    ch, cw = grid.crop
    ph, pw = (window[0] - ch, window[1] - cw) if pad_to_window else (0, 0)

    def run(crops: Tensor) -> Tensor:
        if ph or pw:
            crops = F.pad(crops, (0, pw, 0, ph))
        out = _forward_with_mirror(
            model, crops, (ch + ph, cw + pw), align_corners, output, flip, divisor, permutation
        )
        _check_channels(out, num_classes)
        return out[:, :, :ch, :cw]

    def read(y0: int, y1: int, x0: int, x1: int) -> Tensor:
        return x[:, :, y0:y1, x0:x1]

    return _assemble(sweep(read, grid, run, max(1, batch_windows // b), 2 if flip else 1), b, h, w)


def _assemble(blocks: Iterator[Block], b: int, h: int, w: int) -> Tensor:
    """The ``(B, C, H, W)`` output of a sweep's blocks."""
    acc: Tensor | None = None
    for y0, y1, x0, x1, values in blocks:
        if acc is None:
            acc = torch.empty((b, values.shape[1], h, w), dtype=values.dtype, device=values.device)
        acc[:, :, y0:y1, x0:x1] = values
    assert acc is not None
    return acc


def tile_runner(
    model: Callable[[Tensor], Tensor],
    protocol: EvalProtocol,
    *,
    num_classes: int | None = None,
    align_corners: bool = False,
    output: Output = "probs",
    size_divisor: int = 1,
    flip_permutation: Sequence[int] | None = None,
) -> Callable[[Tensor], Tensor]:
    """The window pass of mode ``tile``: each crop run whole at every scale (with flip) and averaged.

    Returns ``crops (N, C_in, h, w) -> (N, C, h, w)``: :func:`infer` of the crops with the protocol's scales
    and flip in mode ``whole``, so every window's output depends on that window's pixels alone.
    """
    whole = EvalProtocol("whole", scales=protocol.scales, flip=protocol.flip)

    def run(crops: Tensor) -> Tensor:
        return infer(
            model,
            crops,
            whole,
            num_classes=num_classes,
            align_corners=align_corners,
            output=output,
            size_divisor=size_divisor,
            flip_permutation=flip_permutation,
        )

    return run


def slide_runner(
    model: Callable[[Tensor], Tensor],
    protocol: EvalProtocol,
    *,
    num_classes: int | None = None,
    align_corners: bool = False,
    output: Output = "probs",
    size_divisor: int = 1,
    flip_permutation: Sequence[int] | None = None,
) -> tuple[Callable[[Tensor], Tensor], int]:
    """The window pass of a streamed sweep and its divisor, for mode ``slide`` (one scale) or ``tile``.

    ``slide`` sums a crop's pass and its mirror's (the sweep divides by count x flips, as :func:`infer`);
    ``tile`` averages inside the window (:func:`tile_runner`, divisor 1).

    Raises:
        ValueError: mode ``whole``, or ``slide`` at several scales (it resizes the whole image: not local).
    """
    if protocol.mode == "tile":
        tiled = tile_runner(
            model,
            protocol,
            num_classes=num_classes,
            align_corners=align_corners,
            output=output,
            size_divisor=size_divisor,
            flip_permutation=flip_permutation,
        )
        return tiled, 1
    if protocol.mode != "slide" or protocol.scales != (1.0,):
        raise ValueError(
            "a streamed prediction runs windows: mode slide at scale 1 or mode tile, not "
            f"{protocol.describe()}"
        )
    flip = protocol.flip
    perm = _permutation(flip_permutation, num_classes)

    def run(crops: Tensor) -> Tensor:
        size = (int(crops.shape[-2]), int(crops.shape[-1]))
        out = _forward_with_mirror(model, crops, size, align_corners, output, flip, size_divisor, perm)
        _check_channels(out, num_classes)
        return out

    return run, 2 if flip else 1


def official_size(height: int, width: int, base_size: int, scale: float) -> tuple[int, int]:
    """The official ``multi_scale_aug`` size: the long side ``int(base_size * scale + 0.5)``, aspect kept.

    The short side is ``int(short * long_side / long + 0.5)``; a square image's width counts as the long side.
    """
    long_side = int(base_size * scale + 0.5)
    if height > width:
        return long_side, max(1, int(width * long_side / height + 0.5))
    return max(1, int(height * long_side / width + 0.5)), long_side


def _cv2_resize(image: Any, size: tuple[int, int]) -> Any:
    """OpenCV linear resize of an ``(H, W, C)`` float array to ``size = (h, w)``, as in the official code."""
    try:
        import cv2
    except ImportError as err:  # a deployment install may lack it; hrseg's own modes do not need it
        raise ImportError(
            "eval protocol mode 'official' resizes with OpenCV, as the official code: pip install "
            "opencv-python-headless (or use mode 'whole' / 'slide')"
        ) from err
    out = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    return out.reshape(size[0], size[1], image.shape[2])  # OpenCV drops a single channel's axis


def _official_windows(
    height: int, width: int, crop: tuple[int, int], stride: tuple[int, int], shift_back: bool
) -> list[tuple[int, int, int, int]]:
    """The official loop's ``(h0, h1, w0, w1)``: ``ceil((size - crop) / stride) + 1`` rows and columns.

    Every window starts at a multiple of the stride and ends at most at the border; ``shift_back``
    (Cityscapes) then moves a short last window back so it is a full crop again.
    """
    rows = math.ceil((height - crop[0]) / stride[0]) + 1
    cols = math.ceil((width - crop[1]) / stride[1]) + 1
    windows = []
    for r in range(rows):
        for c in range(cols):
            h0, w0 = r * stride[0], c * stride[1]
            h1, w1 = min(h0 + crop[0], height), min(w0 + crop[1], width)
            if shift_back:
                h0, w0 = max(h1 - crop[0], 0), max(w1 - crop[1], 0)
            windows.append((h0, h1, w0, w1))
    return windows


def _pad_bottom_right(x: Tensor, size: tuple[int, int], value: Tensor) -> Tensor:
    """``x`` (N, C, h, w) padded at the bottom / right up to ``size`` with a per-channel ``value`` (C,)."""
    h, w = x.shape[-2:]
    ph, pw = max(size[0] - h, 0), max(size[1] - w, 0)
    if not ph and not pw:
        return x
    out = value.to(x.dtype).view(1, -1, 1, 1).expand(x.shape[0], -1, h + ph, w + pw).clone()
    out[:, :, :h, :w] = x
    return out


def _official_scale(
    run: Callable[[Tensor], Tensor],
    x: Tensor,
    proto: EvalProtocol,
    scale: float,
    pad: Tensor,
    per_forward: int,
) -> Tensor:
    """One scale of the official ``multi_scale_inference``: exp-scores ``(1, K, h, w)`` of the resized image.

    ``run`` is the official ``inference``: ``exp`` of the (mirror-averaged) logits at the input size.
    """
    assert proto.window is not None  # EvalProtocol: "official" has a window (the crop size)
    crop = proto.window
    h, w = x.shape[-2:]
    if proto.variant == "cityscapes":
        if scale <= 1.0:
            return run(x)
        windows, padded = _official_windows(h, w, crop, crop, shift_back=True), x
    else:
        if max(h, w) <= min(crop):
            return run(_pad_bottom_right(x, crop, pad))[:, :, :h, :w]
        padded = _pad_bottom_right(x, crop, pad)  # only where the image is shorter than the crop
        stride = proto.effective_stride()
        assert stride is not None
        ph, pw = int(padded.shape[-2]), int(padded.shape[-1])
        windows = _official_windows(ph, pw, crop, stride, shift_back=False)
    scores: Tensor | None = None
    count = torch.zeros((1, 1, *padded.shape[-2:]), dtype=torch.float32, device=x.device)
    for i in range(0, len(windows), per_forward):
        chunk = windows[i : i + per_forward]
        # default variant: every window is padded to the crop; cityscapes: all have one size already
        crops = torch.cat(
            [_pad_bottom_right(padded[:, :, h0:h1, w0:w1], crop, pad) for h0, h1, w0, w1 in chunk]
            if proto.variant == "default"
            else [padded[:, :, h0:h1, w0:w1] for h0, h1, w0, w1 in chunk]
        )
        out = run(crops)
        if scores is None:
            scores = torch.zeros((1, out.shape[1], *padded.shape[-2:]), dtype=out.dtype, device=out.device)
        for k, (h0, h1, w0, w1) in enumerate(chunk):
            scores[:, :, h0:h1, w0:w1] += out[k : k + 1, :, : h1 - h0, : w1 - w0]
            count[:, :, h0:h1, w0:w1] += 1
    assert scores is not None
    return (scores / count)[:, :, :h, :w]


def _official(
    model: Callable[[Tensor], Tensor],
    image: Tensor,
    proto: EvalProtocol,
    align_corners: bool,
    permutation: Tensor | None,
    pad_value: Sequence[float] | None,
    batch_windows: int,
    num_classes: int | None,
    divisor: int,
    size: tuple[int, int],
) -> Tensor:
    """The official ``multi_scale_inference`` of each image: the sum over scales of exp-scores at ``size``.

    Images run one at a time (the official code takes a batch of one); windows are batched up to
    ``batch_windows`` per forward, which changes nothing but the speed.
    """
    channels = image.shape[1]
    pad = torch.zeros(channels) if pad_value is None else torch.tensor([float(v) for v in pad_value])
    if pad.numel() < channels:
        raise ValueError(f"pad_value has {pad.numel()} values for {channels}-channel images")
    pad = pad[:channels].to(image.device)

    def run(x: Tensor) -> Tensor:
        at = (int(x.shape[-2]), int(x.shape[-1]))  # the official inference upsamples to its input's size
        out = _forward_with_mirror(model, x, at, align_corners, "logits", proto.flip, divisor, permutation)
        _check_channels(out, num_classes)
        # fp32 as in the official code: exp of bf16 / fp16 logits overflows early
        out = out.float()
        return (out * 0.5 if proto.flip else out).exp()

    results = []
    for i in range(image.shape[0]):
        ori = image[i : i + 1]
        h, w = ori.shape[-2:]
        array = ori[0].permute(1, 2, 0).float().cpu().numpy()
        total: Tensor | None = None
        for scale in proto.scales:
            new_size = official_size(h, w, proto.base_size or max(h, w), scale)
            x = torch.from_numpy(_cv2_resize(array, new_size)).permute(2, 0, 1)[None]
            x = x.to(device=image.device, dtype=image.dtype)
            scores = upsample_logits(
                _official_scale(run, x, proto, scale, pad, batch_windows), (h, w), align_corners
            )
            total = scores if total is None else total + scores
        assert total is not None
        results.append(upsample_logits(total, size, align_corners))  # testval: scores to the label size
    return torch.cat(results)


def infer(
    model: Callable[[Tensor], Tensor],
    image: Tensor,
    protocol: EvalProtocol | None = None,
    *,
    batch_windows: int = 4,
    num_classes: int | None = None,
    align_corners: bool | None = None,
    output: Output = "logits",
    pad_to_window: bool = False,
    size_divisor: int = 1,
    flip_permutation: Sequence[int] | None = None,
    pad_value: Sequence[float] | None = None,
    size: Sequence[int] | None = None,
) -> Tensor:
    """Run a segmentation network on normalized images with an evaluation protocol.

    Args:
        model: callable ``(N, 3, h, w) -> (N, C, h', w')`` logits at any resolution (HRNetV2: 1/4); put it
            in eval mode first (this function never changes the module's mode).
        image: normalized ``(B, 3, H, W)`` float tensor.
        protocol: whole image or sliding window, scales, flip, or the official pipeline
            (:class:`~hrseg.eval_protocol.EvalProtocol`; default: one whole-image pass).
        batch_windows: windows per forward (bounds memory: window x batch, independent of the image size).
        num_classes: expected output channels; checked to catch a head/metadata mismatch early.
        align_corners: for resizing logits; default ``model.align_corners`` (False when absent).
        output: accumulate ``"logits"`` or softmax ``"probs"`` (mmseg style TTA). The official pipeline
            always accumulates exp-scores; ``"probs"`` is then their normalised form.
        pad_to_window: pad windows smaller than ``window`` up to it (fixed shapes for static graphs); the
            official pipeline pads by its own rules.
        size_divisor: zero-pad every network input to a multiple of this (smp encoder-decoders need 32;
            HRNetV2 takes any size) and crop the output back.
        flip_permutation: the label set's class order after a horizontal flip
            (:meth:`~hrseg.metadata.LabelSet.flip_permutation`): with ``flip``, the mirrored output's
            channels are reordered by it before they are averaged in. None: no class swaps.
        pad_value: per-channel value of the official pipeline's padding in the normalized input; the official
            code pads with a black pixel, ``-mean / std`` (:meth:`~hrseg.metadata.ModelMeta.black_pixel`).
            None: zeros (the mean colour).
        size: ``(H', W')`` of the result, reached by one more bilinear resize; default the input size. The
            official pipeline resizes its summed scores (as its ``testval`` does for a label of another
            size), hrseg's the averaged outputs.

    Returns:
        ``(B, C, H, W)`` averaged logits or probabilities. With one scale of 1.0, no flip and an image that
        fits the window, exactly the plain forward resized to the input size. ``mode="official"``: the log of
        the official scores' sum over scales divided by the scale count.
    """
    proto = EvalProtocol() if protocol is None else protocol
    if image.ndim != 4:
        raise ValueError(f"image must be (B, C, H, W), got shape {tuple(image.shape)}")
    if output not in ("logits", "probs"):
        raise ValueError(f"output must be 'logits' or 'probs', got {output!r}")
    if batch_windows < 1 or size_divisor < 1:
        raise ValueError(f"batch_windows and size_divisor must be >= 1, got {batch_windows}, {size_divisor}")
    perm = _permutation(flip_permutation, num_classes)
    win, strd, flip = proto.window, proto.effective_stride(), proto.flip
    ac = bool(getattr(model, "align_corners", False)) if align_corners is None else align_corners
    h, w = image.shape[-2:]
    in_size = (int(h), int(w))
    out_size = in_size if size is None else (int(size[0]), int(size[1]))
    if proto.mode == "tile":
        assert win is not None and strd is not None  # EvalProtocol: "tile" has a window
        run = tile_runner(
            model,
            proto,
            num_classes=num_classes,
            align_corners=ac,
            output=output,
            size_divisor=size_divisor,
            flip_permutation=flip_permutation,
        )
        b = image.shape[0]
        with torch.inference_mode():
            blocks = sweep(
                lambda y0, y1, x0, x1: image[:, :, y0:y1, x0:x1],
                WindowGrid.of(in_size[0], in_size[1], win, strd),
                run,
                max(1, batch_windows // b),
            )
            tiled = _assemble(blocks, b, in_size[0], in_size[1])
            return tiled if out_size == in_size else upsample_logits(tiled, out_size, ac)
    total: Tensor | None = None
    with torch.inference_mode():
        if proto.mode == "official":
            scores = _official(
                model, image, proto, ac, perm, pad_value, batch_windows, num_classes, size_divisor, out_size
            )
            # log of the mean over scales: the official argmax, and the plain logits for one pass
            logits = (scores / len(proto.scales)).clamp_min(torch.finfo(scores.dtype).tiny).log()
            return logits.softmax(dim=1) if output == "probs" else logits
        for s in proto.scales:
            x = image
            if s != 1.0:
                scaled = (max(1, int(h * s + 0.5)), max(1, int(w * s + 0.5)))
                x = F.interpolate(image, size=scaled, mode="bilinear", align_corners=False)
            sh, sw = x.shape[-2:]
            fits = win is None or (sh <= win[0] and sw <= win[1])
            if proto.mode == "whole" or (fits and not pad_to_window):
                # One resize straight from the network's resolution to the input size (no double resampling).
                out = _forward_with_mirror(model, x, in_size, ac, output, flip, size_divisor, perm)
                _check_channels(out, num_classes)
                if flip:
                    out = out / 2
            else:
                assert win is not None and strd is not None  # EvalProtocol: "slide" has a window
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
                    perm,
                )
                out = upsample_logits(out, in_size, ac)
            total = out if total is None else total + out
    assert total is not None
    return upsample_logits(total if len(proto.scales) == 1 else total / len(proto.scales), out_size, ac)
