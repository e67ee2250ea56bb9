"""Inference protocol (whole / sliding window / multi-scale + flip) and the fast inference path."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hrseg.eval_protocol import EvalProtocol
from hrseg.inference import (
    class_argmax,
    fold_batchnorm,
    infer,
    prepare_for_inference,
    sliding_window_starts,
)
from hrseg.models import build_model, upsample_logits


def _randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN statistics and affine terms, so folding is actually exercised."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=gen) - 0.5)
            m.running_var.copy_(0.5 + torch.rand(n, generator=gen))
            m.weight.data.copy_(0.5 + torch.rand(n, generator=gen))
            m.bias.data.copy_(0.2 * (torch.rand(n, generator=gen) - 0.5))
    return model.eval()


@pytest.fixture(scope="module")
def hrnet() -> nn.Module:
    torch.manual_seed(0)
    return _randomize_bn(build_model("hrnetv2_w18_small_v1", num_classes=5))


class FlipSymmetric(nn.Module):
    """``f(x) = g(x) + flip(g(flip(x)))`` at the input resolution: exactly flip-equivariant for any ``g``.

    (Symmetrised after the resize to the input size: bilinear resampling is mirror-symmetric in exact
    arithmetic but not bit for bit.)
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.align_corners = False

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        return upsample_logits(self.net(x), size) + upsample_logits(self.net(x.flip(-1)), size).flip(-1)


class PerPixel(nn.Module):
    """1x1 convs only: every output pixel depends on its own input pixel, so windows cannot change it."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.body = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), nn.Conv2d(8, 4, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


class Recorder(nn.Module):
    """Records the input shapes a wrapped network sees."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.shapes: list[tuple[int, ...]] = []
        self.align_corners = getattr(net, "align_corners", False)

    def forward(self, x: Tensor) -> Tensor:
        self.shapes.append(tuple(x.shape))
        return self.net(x)


def _plain(model: nn.Module, x: Tensor) -> Tensor:
    with torch.no_grad():
        return upsample_logits(model(x), x.shape[-2:], False)


@pytest.mark.parametrize(
    "shape, layout",
    [
        ((1, 19, 37, 53), "nchw"),
        ((3, 21, 16, 24), "nchw"),
        ((2, 19, 16, 24), "channels_last"),
        ((1, 1, 8, 6), "nchw"),
    ],
)
def test_class_argmax_equals_argmax(shape: tuple[int, int, int, int], layout: str) -> None:
    gen = torch.Generator().manual_seed(0)
    scores = torch.randn(shape, generator=gen)
    scores[..., :3, :] = scores[:, :1, :3, :]  # exact ties between every class: the lowest class wins
    scores[:, -1, 5, :] = scores.max()  # the last class wins a row
    if layout == "channels_last":
        scores = scores.contiguous(memory_format=torch.channels_last)
    labels = class_argmax(scores)
    assert labels.dtype == torch.int64 and labels.shape == (shape[0], *shape[2:])
    assert torch.equal(labels, scores.argmax(dim=1))
    assert torch.equal(labels[..., :3, :], torch.zeros_like(labels[..., :3, :]))


@pytest.mark.parametrize(
    ("length", "window", "stride", "expected"),
    [(100, 128, 64, [0]), (100, 100, 30, [0]), (100, 40, 30, [0, 30, 60]), (101, 40, 30, [0, 30, 60, 61])],
)
def test_sliding_window_starts(length: int, window: int, stride: int, expected: list[int]) -> None:
    starts = sliding_window_starts(length, window, stride)
    assert starts == expected
    assert starts[-1] + min(window, length) == length  # last window aligned to the border


def test_whole_equals_plain_forward_exactly(hrnet: nn.Module) -> None:
    x = torch.randn(2, 3, 61, 87)
    assert torch.equal(infer(hrnet, x), _plain(hrnet, x))


@pytest.mark.parametrize("mode", ["slide", "whole"])
def test_window_larger_than_image_equals_whole_exactly(hrnet: nn.Module, mode: str) -> None:
    x = torch.randn(1, 3, 61, 87)
    out = infer(hrnet, x, EvalProtocol(mode=mode, window=(64, 96), scales=(1.0,), flip=False))  # type: ignore[arg-type]
    assert torch.equal(out, _plain(hrnet, x))


def test_multiscale_with_scale_one_equals_whole_exactly(hrnet: nn.Module) -> None:
    x = torch.randn(1, 3, 50, 70)
    assert torch.equal(
        infer(hrnet, x, EvalProtocol(mode="whole", scales=[1.0])), infer(hrnet, x, EvalProtocol(mode="whole"))
    )


def test_flip_tta_of_flip_equivariant_model_is_exact(hrnet: nn.Module) -> None:
    model = FlipSymmetric(hrnet).eval()
    x = torch.randn(1, 3, 45, 77)
    base = infer(model, x)
    assert torch.equal(infer(model, x, EvalProtocol(flip=True)), base)
    slid = infer(model, x, EvalProtocol(mode="slide", window=(32, 48), stride=(20, 30)))
    assert torch.equal(
        infer(model, x, EvalProtocol(mode="slide", window=(32, 48), stride=(20, 30), flip=True)), slid
    )


def test_flip_tta_averages_the_mirrored_pass(hrnet: nn.Module) -> None:
    x = torch.randn(1, 3, 40, 56)
    expected = (_plain(hrnet, x) + _plain(hrnet, x.flip(-1)).flip(-1)) / 2
    torch.testing.assert_close(infer(hrnet, x, EvalProtocol(flip=True)), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("pad", [False, True])
def test_overlapping_windows_are_averaged(pad: bool) -> None:
    model = PerPixel().eval()
    x = torch.randn(2, 3, 53, 71)
    whole = infer(model, x)
    out = infer(
        model,
        x,
        EvalProtocol(mode="slide", window=(24, 40), stride=(10, 13)),
        batch_windows=3,
        pad_to_window=pad,
    )
    torch.testing.assert_close(out, whole, rtol=0, atol=1e-5)


def test_image_smaller_than_window_is_padded_on_request() -> None:
    rec = Recorder(PerPixel()).eval()
    x = torch.randn(1, 3, 20, 90)
    out = infer(rec, x, EvalProtocol(mode="slide", window=(32, 32), stride=(16, 16)), pad_to_window=True)
    assert all(s[-2:] == (32, 32) for s in rec.shapes)
    torch.testing.assert_close(out, infer(PerPixel().eval(), x), rtol=0, atol=1e-5)


def test_memory_is_bounded_by_window_and_batch() -> None:
    rec = Recorder(PerPixel()).eval()
    x = torch.randn(1, 3, 200, 300)
    infer(rec, x, EvalProtocol(mode="slide", window=(64, 64), stride=(48, 48)), batch_windows=4)
    assert len(rec.shapes) > 1
    assert all(s[0] <= 4 and s[2] <= 64 and s[3] <= 64 for s in rec.shapes)


def test_batching_windows_does_not_change_the_result(hrnet: nn.Module) -> None:
    x = torch.randn(1, 3, 70, 90)
    protocol = EvalProtocol(mode="slide", window=(48, 48), stride=(32, 32))
    one = infer(hrnet, x, protocol, batch_windows=1)
    many = infer(hrnet, x, protocol, batch_windows=8)
    torch.testing.assert_close(one, many, rtol=1e-5, atol=1e-4)


def test_multiscale_flip_slide_shapes_and_probabilities(hrnet: nn.Module) -> None:
    x = torch.randn(2, 3, 57, 83)
    out = infer(
        hrnet,
        x,
        EvalProtocol(mode="slide", window=(48, 64), scales=(0.5, 1.0, 1.5), flip=True),
        output="probs",
    )
    assert out.shape == (2, 5, 57, 83)
    torch.testing.assert_close(out.sum(dim=1), torch.ones(2, 57, 83), rtol=0, atol=1e-5)


def test_multiscale_is_the_mean_of_resized_scale_outputs(hrnet: nn.Module) -> None:
    x = torch.randn(1, 3, 48, 64)
    half = F.interpolate(x, size=(24, 32), mode="bilinear", align_corners=False)
    expected = (_plain(hrnet, x) + upsample_logits(hrnet(half).detach(), (48, 64), False)) / 2
    torch.testing.assert_close(
        infer(hrnet, x, EvalProtocol(mode="whole", scales=(1.0, 0.5))), expected, rtol=0, atol=1e-5
    )


def test_bad_settings_fail_early(hrnet: nn.Module) -> None:
    x = torch.randn(1, 3, 40, 40)
    with pytest.raises(ValueError, match="window"):
        infer(hrnet, x, EvalProtocol(mode="slide"))
    with pytest.raises(ValueError, match="scales"):
        infer(hrnet, x, EvalProtocol(scales=()))
    with pytest.raises(ValueError, match="num_classes"):
        infer(hrnet, x, num_classes=19)
    with pytest.raises(ValueError, match="B, C, H, W"):
        infer(hrnet, x[0])


@pytest.mark.parametrize("channels_last", [False, True])
def test_prepare_for_inference_equals_plain(hrnet: nn.Module, channels_last: bool) -> None:
    fast = prepare_for_inference(hrnet, fold_bn=True, channels_last=channels_last)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in hrnet.modules())  # the original is untouched
    x = torch.randn(2, 3, 75, 99)
    with torch.inference_mode():
        torch.testing.assert_close(fast(x), hrnet(x), rtol=0, atol=1e-4)


@pytest.mark.parametrize("variant", ["hrnetv2_w18_small_v1", "hrnetv2_w18_small_v1_ocr"])
def test_prepare_for_inference_in_bf16_casts_once_and_returns_fp32(variant: str) -> None:
    """The GPU reduced-precision path (weights cast once, fp32 logits out), run in bf16 on the CPU here."""
    torch.manual_seed(0)
    model = _randomize_bn(build_model(variant, num_classes=5))
    fast = prepare_for_inference(model, dtype=torch.bfloat16)
    assert {p.dtype for p in fast.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in model.parameters()} == {torch.float32}  # the original is untouched
    x = torch.randn(2, 3, 64, 96)
    with torch.inference_mode():
        out, ref = fast(x), model(x)
    assert out.dtype == torch.float32 and out.shape == ref.shape
    assert (out.argmax(1) == ref.argmax(1)).float().mean() > 0.9
    torch.testing.assert_close(out, ref, rtol=0, atol=0.1 * float(ref.abs().max()))


def test_fold_batchnorm_folds_every_hrnet_pair(hrnet: nn.Module) -> None:
    import copy

    model = copy.deepcopy(hrnet)
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert fold_batchnorm(model) == n_bn
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), hrnet(x), rtol=0, atol=1e-4)
    assert hasattr(model, "forward_features") and model.num_classes == 5


def test_fold_batchnorm_refuses_a_conv_with_a_second_consumer() -> None:
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.bn = nn.BatchNorm2d(4)

        def forward(self, x: Tensor) -> Tensor:
            y = self.conv(x)
            return self.bn(y) + y  # y is also used without BN: folding would change it

    model = _randomize_bn(Branchy())
    with pytest.raises(RuntimeError, match="fold"):
        fold_batchnorm(model)
    assert isinstance(model.bn, nn.BatchNorm2d)  # restored


def test_fold_batchnorm_needs_eval_mode(hrnet: nn.Module) -> None:
    import copy

    with pytest.raises(ValueError, match="eval"):
        fold_batchnorm(copy.deepcopy(hrnet).train())


def test_size_divisor_pads_network_inputs_and_crops_back() -> None:
    rec = Recorder(PerPixel()).eval()
    x = torch.randn(1, 3, 45, 70)
    out = infer(rec, x, EvalProtocol(flip=True), size_divisor=32)
    assert all(s[2] % 32 == 0 and s[3] % 32 == 0 for s in rec.shapes)
    torch.testing.assert_close(out, infer(PerPixel().eval(), x), rtol=0, atol=1e-5)
    rec.shapes.clear()
    infer(rec, x, EvalProtocol(mode="slide", window=(40, 40)), size_divisor=32)
    assert rec.shapes and all(s[2] % 32 == 0 and s[3] % 32 == 0 for s in rec.shapes)
