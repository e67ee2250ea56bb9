"""HRNet-OCR: sizes, official key layout and outputs, softmax axes, the two-output loss, inference and export.

The facts checked here are those of docs/reference/ocr.md (the official ``seg_hrnet_ocr.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_models import EXACT as EXACT_PLAIN  # HRNetV2 counts, the base of the analytic check
from torch import Tensor, nn

from hrseg.eval_protocol import EvalProtocol
from hrseg.losses import CrossEntropy, LossConfig, OhemCrossEntropy, resolve_class_weights
from hrseg.metadata import LabelSet, ModelMeta, get_label_set
from hrseg.models import HRNetSegmentationNet, HRNetV2Head, OCRHead, build_model, list_models, load_pretrained
from hrseg.models.heads.ocr import ObjectAttentionBlock, SpatialGather
from hrseg.models.hrnet import HRNET_SPECS
from hrseg.optim import OptimizerConfig

# Exact parameter counts with 19 classes (W48: docs/reference/ocr.md), the official 512 / 256 head.
EXACT_OCR = {
    "w18_small_v1": 3_842_278,
    "w18_small_v2": 6_379_278,
    "w18": 12_080_818,
    "w32": 32_953_894,
    "w40": 49_854_774,
    "w48": 70_372_678,
    "w64": 122_259_558,
}
TINY = "hrnetv2_w18_small_v1_ocr"


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def ocr_extra_params(c: int, k: int, mid: int = 512, key: int = 256) -> int:
    """Parameters the OCR head adds to HRNetV2 (whose ``last_layer`` becomes ``aux_head``), from the doc."""
    bn = 2
    conv3x3_ocr = 9 * c * mid + mid + bn * mid
    f_pixel = mid * key + bn * key + key * key + bn * key
    f_down = mid * key + bn * key
    f_up = key * mid + bn * mid
    conv_bn_dropout = 2 * mid * mid + bn * mid
    cls_head = mid * k + k
    return conv3x3_ocr + 2 * f_pixel + f_down + f_up + conv_bn_dropout + cls_head


def official_head_shapes(c: int, k: int, mid: int = 512, key: int = 256) -> dict[str, tuple[int, ...]]:
    """The head's keys and shapes as docs/reference/ocr.md lists them (BN+ReLU one Sequential deeper)."""

    def bn(prefix: str, n: int) -> dict[str, tuple[int, ...]]:
        stats = ("weight", "bias", "running_mean", "running_var")
        return {**{f"{prefix}.{s}": (n,) for s in stats}, f"{prefix}.num_batches_tracked": ()}

    ocb = "ocr_distri_head.object_context_block"
    shapes: dict[str, tuple[int, ...]] = {
        "aux_head.0.weight": (c, c, 1, 1),
        "aux_head.0.bias": (c,),
        **bn("aux_head.1", c),
        "aux_head.3.weight": (k, c, 1, 1),
        "aux_head.3.bias": (k,),
        "conv3x3_ocr.0.weight": (mid, c, 3, 3),
        "conv3x3_ocr.0.bias": (mid,),
        **bn("conv3x3_ocr.1", mid),
        f"{ocb}.f_down.0.weight": (key, mid, 1, 1),
        **bn(f"{ocb}.f_down.1.0", key),
        f"{ocb}.f_up.0.weight": (mid, key, 1, 1),
        **bn(f"{ocb}.f_up.1.0", mid),
        "ocr_distri_head.conv_bn_dropout.0.weight": (mid, 2 * mid, 1, 1),
        **bn("ocr_distri_head.conv_bn_dropout.1.0", mid),
        "cls_head.weight": (k, mid, 1, 1),
        "cls_head.bias": (k,),
    }
    for f in ("f_pixel", "f_object"):
        shapes[f"{ocb}.{f}.0.weight"] = (key, mid, 1, 1)
        shapes.update(bn(f"{ocb}.{f}.1.0", key))
        shapes[f"{ocb}.{f}.2.weight"] = (key, key, 1, 1)
        shapes.update(bn(f"{ocb}.{f}.3.0", key))
    return shapes


def _randomized(name: str = TINY, num_classes: int = 19, seed: int = 0, **options) -> nn.Module:
    """A model with non-trivial BN statistics and affine parameters everywhere (head included)."""
    torch.manual_seed(seed)
    model = build_model(name, num_classes=num_classes, **options)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
    return model.eval()


# --------------------------------------------------------------------------------------------------
# Sizes and layout
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", list(EXACT_OCR))
def test_parameter_counts_per_width(variant: str) -> None:
    with torch.device("meta"):
        model = build_model(f"hrnetv2_{variant}_ocr", num_classes=19)
    assert n_params(model) == EXACT_OCR[variant]
    c = sum(HRNET_SPECS[variant].stage4.num_channels)
    assert EXACT_OCR[variant] == EXACT_PLAIN[variant] + ocr_extra_params(c, 19)
    # W48, K=19 breakdown of docs/reference/ocr.md
    if variant == "w48":
        parts = {name: n_params(getattr(model, name)) for name in ("aux_head", "conv3x3_ocr", "cls_head")}
        assert parts == {"aux_head": 534_259, "conv3x3_ocr": 3_319_296, "cls_head": 9_747}
        assert n_params(model.ocr_distri_head) == 1_184_256 and n_params(model.ocr_gather_head) == 0


def test_ocr_channel_options() -> None:
    with torch.device("meta"):
        model = build_model("hrnetv2_w18_ocr", num_classes=7, ocr_mid_channels=128, ocr_key_channels=64)
        plain = build_model("hrnetv2_w18", num_classes=7)
    assert n_params(model) == n_params(plain) + ocr_extra_params(270, 7, mid=128, key=64)
    with pytest.raises(ValueError, match="unknown option"):
        build_model(
            "hrnetv2_w18_small_v1", num_classes=19, ocr_mid_channels=128
        )  # an OCR option on the plain head
    assert {f"{n}_ocr" for n in list_models() if not n.endswith("_ocr")} <= set(list_models())


def test_w48_state_dict_has_the_official_keys_and_shapes() -> None:
    with torch.device("meta"):
        ocr = build_model("hrnetv2_w48_ocr", num_classes=19)
        plain = build_model("hrnetv2_w48", num_classes=19)
    sd = {k: tuple(v.shape) for k, v in ocr.state_dict().items()}
    assert len(sd) == 1890
    backbone = {k: tuple(v.shape) for k, v in plain.state_dict().items() if not k.startswith("last_layer.")}
    assert len(backbone) + len(official_head_shapes(720, 19)) == 1890
    assert sd == {**backbone, **official_head_shapes(720, 19)}


def test_official_checkpoint_loads_with_nothing_missing_or_unexpected(tmp_path: Path) -> None:
    """A released-checkpoint layout: ``model.``-prefixed official keys plus ``loss.criterion.weight``."""
    with torch.device("meta"):
        plain = build_model("hrnetv2_w18_small_v1", num_classes=19)
    shapes = {k: tuple(v.shape) for k, v in plain.state_dict().items() if not k.startswith("last_layer.")}
    shapes.update(official_head_shapes(240, 19))
    gen = torch.Generator().manual_seed(0)
    official = {}
    for k, shape in shapes.items():
        if k.endswith("num_batches_tracked"):
            official[f"model.{k}"] = torch.tensor(5)
        elif k.endswith("running_var"):
            official[f"model.{k}"] = torch.rand(shape, generator=gen) + 0.5
        else:
            official[f"model.{k}"] = torch.randn(shape, generator=gen) * 0.1
    official["loss.criterion.weight"] = torch.ones(19)
    path = tmp_path / "hrnet_ocr_official.pth"
    torch.save(official, path)

    model = build_model(TINY, num_classes=19)
    report = load_pretrained(model, path)
    assert report.missing == [] and report.dropped == ["loss.criterion.weight"]
    assert report.source == "official-seg" and len(report.loaded) == len(shapes) == 486
    for k, v in model.state_dict().items():
        assert torch.equal(v, official[f"model.{k}"]), k


def test_hrnetv2_checkpoint_initialises_aux_head(tmp_path: Path) -> None:
    torch.manual_seed(1)
    plain = build_model("hrnetv2_w18_small_v1", num_classes=19)
    path = tmp_path / "hrnetv2.pth"
    torch.save({f"model.{k}": v for k, v in plain.state_dict().items()}, path)
    model = build_model(TINY, num_classes=19)
    report = load_pretrained(model, path)
    assert any("aux_head" in note for note in report.notes) and "aux_head" in str(report)
    for k, v in plain.last_layer.state_dict().items():
        assert torch.equal(model.aux_head.state_dict()[k], v), k
    heads = ("conv3x3_ocr.", "ocr_distri_head.", "cls_head.")
    assert report.missing and all(k.startswith(heads) for k in report.missing)
    # an ImageNet-style (backbone only) file: the whole head is reported missing, without error
    backbone = {k: v for k, v in plain.state_dict().items() if not k.startswith("last_layer.")}
    torch.save({**backbone, "classifier.weight": torch.zeros(3, 2)}, tmp_path / "cls.pth")
    report = load_pretrained(build_model(TINY, num_classes=19), tmp_path / "cls.pth")
    assert report.source == "classification" and any(k.startswith("aux_head.") for k in report.missing)
    # ignore_head drops the whole OCR head of an OCR checkpoint (fine-tuning to another class count)
    torch.save(build_model(TINY, num_classes=19).state_dict(), tmp_path / "ocr19.pth")
    report = load_pretrained(build_model(TINY, num_classes=5), tmp_path / "ocr19.pth", ignore_head=True)
    assert any(k.startswith("cls_head.") for k in report.dropped)


# --------------------------------------------------------------------------------------------------
# Forward: the official computation, outputs per mode, softmax axes, fp32 under autocast
# --------------------------------------------------------------------------------------------------
def official_forward(model: HRNetSegmentationNet, x: Tensor) -> list[Tensor]:
    """The official ``HighResolutionNet.forward`` of seg_hrnet_ocr.py, op for op, on this model's weights."""
    feats = model.forward_features(x)
    h, w = feats[0].shape[2:]
    ac = model.align_corners
    ups = [F.interpolate(f, size=(h, w), mode="bilinear", align_corners=ac) for f in feats[1:]]
    feats = torch.cat([feats[0], *ups], 1)
    out_aux = model.aux_head(feats)
    feats = model.conv3x3_ocr(feats)
    # SpatialGather_Module
    b, c = out_aux.size(0), out_aux.size(1)
    probs = F.softmax(out_aux.view(b, c, -1), dim=2)
    pix = feats.view(b, feats.size(1), -1).permute(0, 2, 1)
    context = torch.matmul(probs, pix).permute(0, 2, 1).unsqueeze(3)
    # SpatialOCR_Module / _ObjectAttentionBlock (scale 1)
    blk = model.ocr_distri_head.object_context_block
    kc = blk.key_channels
    query = blk.f_pixel(feats).view(b, kc, -1).permute(0, 2, 1)
    key = blk.f_object(context).view(b, kc, -1)
    value = blk.f_down(context).view(b, kc, -1).permute(0, 2, 1)
    sim_map = F.softmax((kc**-0.5) * torch.matmul(query, key), dim=-1)
    ctx = torch.matmul(sim_map, value).permute(0, 2, 1).contiguous().view(b, kc, h, w)
    ctx = blk.f_up(ctx)
    out = model.ocr_distri_head.conv_bn_dropout(torch.cat([ctx, feats], 1))
    return [out_aux, model.cls_head(out)]


@pytest.mark.parametrize("align_corners", [False, True])
def test_outputs_equal_the_official_computation(align_corners: bool) -> None:
    model = _randomized(align_corners=align_corners)
    x = torch.randn(2, 3, 67, 101, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref_aux, ref = official_forward(model, x)
        out = model(x)  # eval: the main output only
        aux, main = model.forward_outputs(x)
        model.train()  # training: [aux, main], the official order
        outputs = model(x)
    assert isinstance(out, Tensor) and out.shape == (2, 19, 17, 26)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(main, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(aux, ref_aux, rtol=1e-5, atol=1e-5)
    assert isinstance(outputs, list) and [t.shape for t in outputs] == [out.shape, out.shape]
    assert model.num_outputs == 2 and model.output_stride == 4 and model.min_export_size == 33


def test_gather_softmax_is_over_pixels() -> None:
    gather = SpatialGather(num_classes=3)
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 5, 7, generator=gen) * 3
    # constant features: each region is a convex combination of pixels, so it is that constant exactly
    ones = torch.full((2, 4, 5, 7), 2.5)
    torch.testing.assert_close(gather(ones, logits), torch.full((2, 4, 3, 1), 2.5))
    feats = torch.randn(2, 4, 5, 7, generator=gen)
    weights = logits.flatten(2).softmax(dim=2)  # (B, K, HW): over the pixels
    expected = torch.einsum("bkp,bcp->bck", weights, feats.flatten(2)).unsqueeze(3)
    torch.testing.assert_close(gather(feats, logits), expected)
    swapped = torch.einsum("bkp,bcp->bck", logits.flatten(2).softmax(dim=1), feats.flatten(2)).unsqueeze(3)
    assert not torch.allclose(gather(feats, logits), swapped, atol=1e-3)


def test_attention_softmax_is_over_regions() -> None:
    torch.manual_seed(0)
    blk = ObjectAttentionBlock(in_channels=16, key_channels=8).eval()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 16, 6, 5, generator=gen)
    # identical regions: every pixel's context is that one region's value, whatever the query
    region = torch.randn(2, 16, 1, 1, generator=gen)
    proxy = region.expand(2, 16, 4, 1).contiguous()
    with torch.no_grad():
        out = blk(x, proxy)
        expected = blk.f_up(blk.f_down(region)).expand_as(out)
    torch.testing.assert_close(out, expected)
    # direct: each pixel's weights sum to one over the K regions, not over the pixels
    query = torch.randn(2, 30, 8, generator=gen)
    key = torch.randn(2, 8, 4, generator=gen)
    attn = blk.attention(query, key)
    assert attn.shape == (2, 30, 4)
    torch.testing.assert_close(attn.sum(dim=-1), torch.ones(2, 30))
    assert not torch.allclose(attn.sum(dim=1), torch.ones(2, 4))
    torch.testing.assert_close(attn, (query @ key / math.sqrt(8)).softmax(dim=-1))


def test_softmaxes_run_in_fp32_under_autocast() -> None:
    model = _randomized()
    seen: dict[str, torch.dtype] = {}
    blk = model.ocr_distri_head.object_context_block
    original = blk.attention

    def spy(query: Tensor, key: Tensor) -> Tensor:
        seen["query"] = query.dtype
        out = original(query, key)
        seen["attention"] = out.dtype
        return out

    blk.attention = spy  # type: ignore[method-assign]
    gathered: list[tuple[Tensor, Tensor, Tensor]] = []
    model.ocr_gather_head.register_forward_hook(lambda m, a, out: gathered.append((a[0], a[1], out)))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    assert seen["query"] == torch.bfloat16  # the convs did run in bf16 ...
    assert seen["attention"] == torch.float32  # ... the softmaxes not
    feats, logits, regions = gathered[0]
    b, k = logits.shape[:2]
    probs = logits.float().reshape(b, k, -1).softmax(dim=2)  # the gather in fp32, then handed on in bf16
    expected = torch.matmul(probs, feats.float().flatten(2).transpose(1, 2)).transpose(1, 2).unsqueeze(3)
    assert regions.dtype == feats.dtype == torch.bfloat16
    assert torch.equal(regions, expected.to(torch.bfloat16))
    assert torch.isfinite(out).all()


# --------------------------------------------------------------------------------------------------
# Training: loss weights, OHEM on the main output only, head lr multiplier
# --------------------------------------------------------------------------------------------------
def test_loss_is_weighted_aux_ce_plus_main_ohem() -> None:
    from hrseg.task import SegmentationTask

    task = SegmentationTask(
        model=TINY,
        labels=LabelSet.generic(19),
        loss=LossConfig([{"name": "ohem", "thresh": 0.7, "min_kept": 50}], class_weights="cityscapes"),
    )
    assert task.loss_weights == [0.4, 1.0]  # the official default
    gen = torch.Generator().manual_seed(0)
    aux, main = torch.randn(2, 19, 8, 12, generator=gen), torch.randn(2, 19, 8, 12, generator=gen) * 4
    mask = torch.randint(0, 19, (2, 32, 48), generator=gen)
    mask[:, :4] = 255
    total, terms = task.training_loss([aux, main], mask)

    weights = resolve_class_weights("cityscapes", get_label_set("cityscapes"))
    ce = CrossEntropy(255, weights)
    ohem = OhemCrossEntropy(255, thresh=0.7, min_kept=50, class_weights=weights)
    up = [F.interpolate(t, size=(32, 48), mode="bilinear", align_corners=False) for t in (aux, main)]
    expected = 0.4 * ce(up[0], mask) + 1.0 * ohem(up[1], mask)
    torch.testing.assert_close(total, expected)
    torch.testing.assert_close(terms["loss_aux"], ce(up[0], mask))
    torch.testing.assert_close(terms["loss_main"], ohem(up[1], mask))
    # OHEM really differs from CE here, on either output, so the test tells the criteria apart
    assert not torch.allclose(ohem(up[0], mask), ce(up[0], mask))
    assert not torch.allclose(ohem(up[1], mask), ce(up[1], mask))

    custom = SegmentationTask(
        model=TINY, labels=LabelSet.generic(19), loss=LossConfig(output_weights=[1.0, 0.5])
    )
    total, _ = custom.training_loss([aux, main], mask)
    plain_ce = CrossEntropy(255)
    torch.testing.assert_close(total, 1.0 * plain_ce(up[0], mask) + 0.5 * plain_ce(up[1], mask))
    with pytest.raises(ValueError, match="output_weights has 1"):
        SegmentationTask(model=TINY, labels=LabelSet.generic(19), loss=LossConfig(output_weights=[1.0]))
    assert SegmentationTask(model="hrnetv2_w18_small_v1", labels=LabelSet.generic(19)).loss_weights == [1.0]


def test_head_lr_multiplier_covers_the_ocr_modules() -> None:
    from hrseg.task import SegmentationTask

    task = SegmentationTask(
        model=TINY, labels=LabelSet.generic(19), optimizer=OptimizerConfig(lr=0.01, head_lr_mult=10.0)
    )
    body, head = task.parameter_groups()
    assert head["lr"] == pytest.approx(0.1) and body["lr"] == pytest.approx(0.01)
    model = task.model
    names = ("aux_head", "conv3x3_ocr", "ocr_distri_head", "cls_head")
    expected = {id(p) for name in names for p in getattr(model, name).parameters()}
    assert {id(p) for p in head["params"]} == expected
    assert len(body["params"]) + len(head["params"]) == len(list(model.parameters()))


@pytest.fixture(scope="module")
def ocr_checkpoint(tmp_path_factory: pytest.TempPathFactory, tiny_fit: Callable[..., Path]) -> Path:
    """A Lightning checkpoint of the OCR demo model after two CLI training steps."""
    return tiny_fit(tmp_path_factory.mktemp("ocr_ckpt"), "--model.model", TINY)


def test_short_demo_fit_improves_the_loss(tmp_path: Path) -> None:
    """The OCR model learns demo scenes: the two-output training loss falls over a short fit.

    The OCR head runs at 64 / 32 channels here (official 512 / 256: ten times the W18-Small-v1 backbone's
    compute at this size) to keep the test short; the structure and the loss are the same.
    """
    import lightning as L

    from hrseg.data import DemoDataModule
    from hrseg.task import SegmentationTask

    L.seed_everything(0)
    dm = DemoDataModule(num_train=80, num_val=2, image_size=(40, 80), batch_size=4, eval_batch_size=2)
    task = SegmentationTask(
        model=TINY,
        labels=dm.labels,
        model_options={"ocr_mid_channels": 64, "ocr_key_channels": 32},
        optimizer=OptimizerConfig("adamw", lr=0.01, weight_decay=1e-4, warmup_iters=2),
        log_images=0,
    )
    losses: list[float] = []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            losses.append(float(outputs["loss"]))

    trainer = L.Trainer(
        max_steps=20,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=1,
        callbacks=[Record()],
    )
    trainer.fit(task, datamodule=dm)
    assert len(losses) == 20
    first, last = np.mean(losses[:4]), np.mean(losses[-4:])
    assert last < 0.8 * first, losses
    assert "train/loss_aux" in trainer.callback_metrics and "train/loss_main" in trainer.callback_metrics
    assert "val/mIoU" in trainer.callback_metrics  # evaluation ran on the main output


# --------------------------------------------------------------------------------------------------
# Inference, fast path, export
# --------------------------------------------------------------------------------------------------
def test_inference_protocol_and_segmenter_use_the_main_output(ocr_checkpoint: Path) -> None:
    from hrseg.data import generate_scene
    from hrseg.deploy import Segmenter
    from hrseg.inference import infer, load_checkpoint

    model, meta = load_checkpoint(ocr_checkpoint)
    assert meta.model == TINY and not model.training
    x = torch.randn(1, 3, 70, 110)
    with torch.no_grad():
        main = model(x)
    whole = infer(model, x)
    torch.testing.assert_close(
        whole, F.interpolate(main, size=(70, 110), mode="bilinear", align_corners=meta.align_corners)
    )
    tta = infer(model, x, EvalProtocol(mode="slide", window=(48, 64), scales=(0.75, 1.0, 1.25), flip=True))
    slide = infer(model, x, EvalProtocol(mode="slide", window=(48, 64), stride=(32, 40)), batch_windows=3)
    assert tta.shape == slide.shape == (1, 19, 70, 110)
    rgb, _ = generate_scene(5, size=(53, 77))
    fast, plain = (
        Segmenter.from_checkpoint(ocr_checkpoint),
        Segmenter.from_checkpoint(ocr_checkpoint, fast=False),
    )
    fast_probs = fast.predict(rgb, return_probs=True)[1]
    np.testing.assert_allclose(fast_probs, plain.predict(rgb, return_probs=True)[1], atol=1e-4)
    seg = Segmenter.from_checkpoint(
        ocr_checkpoint, protocol=EvalProtocol(mode="slide", window=(32, 48), flip=True)
    )
    assert seg.predict(rgb).shape == (53, 77)


def test_batchnorm_folding_covers_the_ocr_block() -> None:
    from hrseg.inference.optimize import fold_batchnorm

    ocr, plain = _randomized(), _randomized("hrnetv2_w18_small_v1")
    x = torch.randn(2, 3, 61, 83)
    with torch.no_grad():
        ref = ocr(x)
    n_ocr, n_plain = fold_batchnorm(ocr), fold_batchnorm(plain)
    # conv3x3_ocr, f_pixel x2, f_object x2, f_down, f_up, conv_bn_dropout (aux_head pairs like last_layer)
    assert n_ocr - n_plain == 8
    assert not any(isinstance(m, nn.BatchNorm2d) for m in ocr.modules())
    with torch.no_grad():
        torch.testing.assert_close(ocr(x), ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("fmt", ["onnx", "pt2", "safetensors"])
def test_export_parity_at_a_new_size(fmt: str, tmp_path: Path) -> None:
    from hrseg.export import export

    model = _randomized()
    meta = ModelMeta(model=TINY, labels=LabelSet.generic(19))
    target = tmp_path / {"onnx": "m.onnx", "pt2": "m.pt2", "safetensors": "bundle"}[fmt]
    result = export(model, fmt, target, height=64, width=96, meta=meta)  # type: ignore[arg-type]
    assert result.passed, result.summary()
    assert result.check_shape[2:] != (64, 96)  # checked at another size than the export example
    if fmt == "safetensors":
        assert result.max_abs_diff == 0.0


@pytest.mark.slow
def test_cli_export_all_and_predict(ocr_checkpoint: Path, tmp_path: Path, capsys) -> None:
    from PIL import Image

    from hrseg.commands import main
    from hrseg.data import generate_scene

    out = tmp_path / "exports"
    argv = [
        "export",
        "--ckpt_path",
        str(ocr_checkpoint),
        "--format",
        "all",
        "--output",
        str(out),
        "--size",
        "64x96",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.count(" OK") == 3, printed
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(generate_scene(2, size=(45, 70))[0]).save(images / "a.png")
    for model_file in [ocr_checkpoint, *sorted(out.glob("*.onnx"))]:
        pred = tmp_path / f"pred_{model_file.suffix[1:]}"
        args = ["predict", "--ckpt_path", str(model_file), "--input", str(images), "--output", str(pred)]
        assert main([*args, "--no-progress"]) == 0
        assert (pred / "a_trainIds.png").is_file()


def test_plain_and_ocr_are_distinct_heads() -> None:
    head = build_model(TINY, num_classes=19).head
    assert isinstance(head, OCRHead) and not isinstance(head, HRNetV2Head)
