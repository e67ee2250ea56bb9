"""HRNet / HRNetV2 models: published sizes, official key layout, timm parity, any input size, factory."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from hrseg.models import (
    HRNET_SPECS,
    HighResolutionModule,
    HRNet,
    HRNetSegmentationNet,
    HRNetSpec,
    HRNetV2Head,
    build_model,
    list_models,
    upsample_logits,
)
from hrseg.models.blocks import BasicBlock

MODELS_DIR = Path(__file__).resolve().parents[1] / "hrseg" / "models"

# Published sizes (docs/reference/models.md, official implementation, 19 classes), in thousands.
PUBLISHED_K = {
    "w18_small_v1": 1541,
    "w18_small_v2": 3940,
    "w18": 9641,
    "w32": 29547,
    "w40": 45894,
    "w48": 65859,
}
# Exact counts of this implementation (19 classes), pinned so any drift is noticed.
EXACT = {
    "w18_small_v1": 1_540_819,
    "w18_small_v2": 3_939_579,
    "w18": 9_641_119,
    "w32": 29_546_515,
    "w40": 45_894_435,
    "w48": 65_859_379,
    "w64": 116_640_339,
}
# Official seg state-dict sizes; they include BN's num_batches_tracked buffers (306 of W48's 1839 keys).
STATE_DICT_KEYS = {"w18_small_v1": 435, "w18_small_v2": 873, "w48": 1839}

TIMM_NAMES = {
    "w18_small_v1": "hrnet_w18_small",
    "w18_small_v2": "hrnet_w18_small_v2",
    "w18": "hrnet_w18",
    "w32": "hrnet_w32",
    "w40": "hrnet_w40",
    "w48": "hrnet_w48",
    "w64": "hrnet_w64",
}


def n_params(model: nn.Module) -> int:
    """Parameter count (BN running stats are buffers and excluded)."""
    return sum(p.numel() for p in model.parameters())


def analytic_params(spec: HRNetSpec, num_classes: int = 19, in_channels: int = 3) -> int:
    """Count HRNetV2 parameters from the spec table alone, without building any module."""

    def conv(k: int, cin: int, cout: int) -> int:
        return k * k * cin * cout

    def bn(c: int) -> int:
        return 2 * c

    def block(kind: str, cin: int, planes: int) -> tuple[int, int]:
        if kind == "BOTTLENECK":
            out = 4 * planes
            n = conv(1, cin, planes) + bn(planes) + conv(3, planes, planes) + bn(planes)
            n += conv(1, planes, out) + bn(out)
        else:
            out = planes
            n = conv(3, cin, planes) + bn(planes) + conv(3, planes, planes) + bn(planes)
        if cin != out:
            n += conv(1, cin, out) + bn(out)
        return n, out

    stem = spec.stem_width
    total = conv(3, in_channels, stem) + bn(stem) + conv(3, stem, stem) + bn(stem)
    s1 = spec.stage1
    ch = stem
    for _ in range(s1.num_blocks[0]):
        n, ch = block(s1.block, ch, s1.num_channels[0])
        total += n
    pre = [ch]
    for stage in (spec.stage2, spec.stage3, spec.stage4):
        mult = 4 if stage.block == "BOTTLENECK" else 1
        cur = [c * mult for c in stage.num_channels]
        for i, c in enumerate(cur):  # transition
            if i < len(pre):
                total += 0 if c == pre[i] else conv(3, pre[i], c) + bn(c)
            else:
                for k in range(i + 1 - len(pre)):
                    out = c if k == i - len(pre) else pre[-1]
                    total += conv(3, pre[-1], out) + bn(out)
        chans = cur
        for _ in range(stage.num_modules):
            new = []
            for b in range(stage.num_branches):
                c_in = chans[b]
                for _ in range(stage.num_blocks[b]):
                    n, c_in = block(stage.block, c_in, stage.num_channels[b])
                    total += n
                new.append(c_in)
            chans = new
            for i in range(stage.num_branches):  # fusion
                for j in range(stage.num_branches):
                    if j > i:
                        total += conv(1, chans[j], chans[i]) + bn(chans[i])
                    elif j < i:
                        for k in range(i - j):
                            out = chans[i] if k == i - j - 1 else chans[j]
                            total += conv(3, chans[j], out) + bn(out)
        pre = chans
    c = sum(pre)
    return total + c * c + c + bn(c) + c * num_classes + num_classes


# --------------------------------------------------------------------------------------------------
# Sizes and layout
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", list(EXACT))
def test_parameter_counts(variant: str) -> None:
    with torch.device("meta"):  # shapes only: skips weight init, which dominates for W48/W64
        model = build_model(f"hrnetv2_{variant}", num_classes=19)
    n = n_params(model)
    assert n == EXACT[variant]
    assert n == analytic_params(HRNET_SPECS[variant])
    if variant in PUBLISHED_K:
        assert round(n / 1000) == PUBLISHED_K[variant]


@pytest.mark.parametrize("variant", list(STATE_DICT_KEYS))
def test_state_dict_key_counts(variant: str) -> None:
    with torch.device("meta"):
        model = build_model(f"hrnetv2_{variant}", num_classes=19)
        backbone = HRNet(variant).state_dict()
    sd = model.state_dict()
    assert len(sd) == STATE_DICT_KEYS[variant]
    # The official counts include one num_batches_tracked buffer per BN layer.
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert sum(k.endswith("num_batches_tracked") for k in sd) == n_bn
    head = [k for k in sd if k.startswith("last_layer.")]
    assert len(head) == 9
    assert len(sd) - len(head) == len(backbone)


def test_official_key_layout() -> None:
    with torch.device("meta"):
        model = build_model("hrnetv2_w48", num_classes=19)
    sd = model.state_dict()
    tops = {k.split(".")[0] for k in sd}
    assert tops == {
        "conv1", "bn1", "conv2", "bn2", "layer1", "transition1", "stage2",
        "transition2", "stage3", "transition3", "stage4", "last_layer",
    }  # fmt: skip
    # Transitions keeping their channel count are parameter-free nn.Identity placeholders (the official code's
    # None, as in timm): only the new branch has keys, and no child is None.
    assert isinstance(model.transition2[0], torch.nn.Identity)
    assert isinstance(model.stage4[2].fuse_layers[1][1], torch.nn.Identity)
    assert all(child is not None for m in model.modules() for child in m._modules.values())
    assert model.stage4[2].out_channels == [48, 96, 192, 384]
    assert {k.split(".")[1] for k in sd if k.startswith("transition2.")} == {"2"}
    assert {k.split(".")[1] for k in sd if k.startswith("transition3.")} == {"3"}
    assert sd["transition1.0.0.weight"].shape == (48, 256, 3, 3)
    assert sd["transition1.1.0.0.weight"].shape == (96, 256, 3, 3)  # nested twice, from the last branch
    assert sd["transition2.2.0.0.weight"].shape == (192, 96, 3, 3)
    assert sd["transition3.3.0.0.weight"].shape == (384, 192, 3, 3)
    assert sd["layer1.0.downsample.0.weight"].shape == (256, 64, 1, 1)
    assert sd["stage4.2.fuse_layers.0.3.0.weight"].shape == (48, 384, 1, 1)
    assert sd["stage4.2.fuse_layers.3.0.0.0.weight"].shape == (48, 48, 3, 3)
    assert sd["stage4.2.fuse_layers.3.0.2.0.weight"].shape == (384, 48, 3, 3)
    assert sd["stage4.2.branches.3.3.bn2.running_var"].shape == (384,)
    # The last module of stage 4 keeps every branch (segmentation: multi_scale_output everywhere).
    assert "stage4.2.fuse_layers.3.2.0.1.weight" in sd
    assert sd["last_layer.0.weight"].shape == (720, 720, 1, 1)
    assert sd["last_layer.0.bias"].shape == (720,)
    assert sd["last_layer.3.weight"].shape == (19, 720, 1, 1)
    assert "last_layer.1.num_batches_tracked" in sd
    assert model.out_channels == (48, 96, 192, 384)
    assert model.head_channels == 720


@pytest.mark.parametrize(("variant", "channels"), [("w18_small_v1", 240), ("w18", 270), ("w32", 480)])
def test_head_channels(variant: str, channels: int) -> None:
    assert sum(HRNET_SPECS[variant].stage4.num_channels) == channels


def test_models_do_not_import_lightning() -> None:
    for path in MODELS_DIR.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not any(n.split(".")[0] in {"lightning", "pytorch_lightning"} for n in names), path


# --------------------------------------------------------------------------------------------------
# Parity with timm (an independent implementation of the same network)
# --------------------------------------------------------------------------------------------------
def _randomize_bn(model: nn.Module, seed: int) -> None:
    """Non-trivial BN statistics and affine params, scaled so activations stay O(1) through the net."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
                m.weight.copy_(torch.rand(c, generator=g) * 0.3 + 0.1)
                m.bias.copy_(torch.randn(c, generator=g) * 0.1)


@pytest.mark.parametrize(
    "variant",
    [
        "w18_small_v1",
        "w18_small_v2",
        "w18",
        "w32",
        "w40",
        "w48",
        pytest.param("w64", marks=pytest.mark.slow),
    ],
)
def test_timm_parity(variant: str) -> None:
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    ref = timm.create_model(
        TIMM_NAMES[variant],
        pretrained=False,
        features_only=True,
        feature_location="",
        out_indices=(1, 2, 3, 4),
    ).eval()
    _randomize_bn(ref, seed=1)
    with torch.device("meta"):  # no init: every tensor comes from timm below
        ours = HRNet(variant, fuse_mode="nearest")
    # timm's features_only wrapper keeps the backbone's key names (no prefix, no head keys): load strictly.
    ours.load_state_dict(ref.state_dict(), strict=True, assign=True)
    ours.eval()
    x = torch.randn(1, 3, 256, 512, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = ref(x)
        got = ours.forward_features(x)
    assert len(got) == len(expected) == 4
    for g, e, stride, c in zip(got, expected, (4, 8, 16, 32), ours.out_channels, strict=True):
        assert g.shape == e.shape == (1, c, 256 // stride, 512 // stride)
        scale = float(e.abs().max())
        assert scale > 1e-3  # the comparison means something only if the signal survives the network
        torch.testing.assert_close(g, e, atol=1e-5 * scale, rtol=1e-4)


# --------------------------------------------------------------------------------------------------
# Shapes
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fuse_mode", ["bilinear", "nearest"])
@pytest.mark.parametrize("size", [(333, 517), (65, 33), (64, 128)])
def test_odd_input_sizes(fuse_mode: str, size: tuple[int, int]) -> None:
    model = build_model("hrnetv2_w18_small_v1", num_classes=7, fuse_mode=fuse_mode).eval()
    h, w = size
    with torch.no_grad():
        logits = model(torch.randn(1, 3, h, w))
        feats = model.forward_features(torch.randn(1, 3, h, w))
    assert logits.shape == (1, 7, math.ceil(h / 4), math.ceil(w / 4))
    assert [f.shape[1] for f in feats] == [16, 32, 64, 128]
    for f, stride in zip(feats, (4, 8, 16, 32), strict=True):
        expected_h, expected_w = h, w
        for _ in range(int(math.log2(stride))):
            expected_h, expected_w = math.ceil(expected_h / 2), math.ceil(expected_w / 2)
        assert f.shape[-2:] == (expected_h, expected_w)
    for target in [(h, w), (17, 300), (1, 1)]:
        up = upsample_logits(logits, target, align_corners=model.align_corners)
        assert up.shape == (1, 7, *target)


def test_upsample_logits_is_noop_at_same_size() -> None:
    logits = torch.randn(2, 3, 10, 12)
    assert upsample_logits(logits, (10, 12)) is logits
    assert upsample_logits(logits, torch.Size([10, 12]), align_corners=True) is logits
    up = upsample_logits(logits, (20, 24), align_corners=True)
    torch.testing.assert_close(up[..., 0, 0], logits[..., 0, 0])  # corners are kept with align_corners


def test_align_corners_changes_fusion() -> None:
    torch.manual_seed(0)
    a = build_model("hrnetv2_w18_small_v1", num_classes=19, align_corners=False).eval()
    b = build_model("hrnetv2_w18_small_v1", num_classes=19, align_corners=True).eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert a.align_corners is False and b.align_corners is True
        assert not torch.allclose(a(x), b(x))


def test_train_step_backward() -> None:
    """In-place ops in blocks and fusion must not break autograd."""
    torch.manual_seed(0)
    model = build_model("hrnetv2_w18_small_v1", num_classes=5).train()
    x = torch.randn(2, 3, 64, 96)
    target = torch.randint(0, 5, (2, 64, 96))
    loss = nn.functional.cross_entropy(upsample_logits(model(x), (64, 96)), target)
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_in_channels_and_bn_momentum() -> None:
    model = build_model("hrnetv2_w18_small_v1", num_classes=3, in_channels=4, bn_momentum=0.01).eval()
    assert model.conv1.weight.shape[1] == 4
    assert model.bn1.momentum == 0.01 and model.last_layer[1].momentum == 0.01
    with torch.no_grad():
        assert model(torch.randn(1, 4, 32, 32)).shape == (1, 3, 8, 8)


# --------------------------------------------------------------------------------------------------
# Configuration checks
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("blocks", "inch", "ch", "label", "n"),
    [
        ([2], [16, 32], [16, 32], "num_blocks", 1),
        ([2, 2], [16, 32], [16, 32, 64], "num_channels", 3),
        ([2, 2], [16], [16, 32], "num_inchannels", 1),
    ],
)
def test_high_resolution_module_validation(
    blocks: list[int], inch: list[int], ch: list[int], label: str, n: int
) -> None:
    with pytest.raises(ValueError, match=rf"num_branches \(2\) != len\({label}\) \({n}\)"):
        HighResolutionModule(2, BasicBlock, blocks, inch, ch)


def test_high_resolution_module_ok_and_fuse_checks() -> None:
    module = HighResolutionModule(2, BasicBlock, [1, 1], [8, 16], [8, 16]).eval()
    with torch.no_grad():
        out = module([torch.randn(1, 8, 9, 9), torch.randn(1, 16, 5, 5)])
    assert [tuple(o.shape) for o in out] == [(1, 8, 9, 9), (1, 16, 5, 5)]
    with pytest.raises(ValueError, match="fuse_method"):
        HighResolutionModule(2, BasicBlock, [1, 1], [8, 16], [8, 16], fuse_method="CAT")
    with pytest.raises(ValueError, match="fuse_mode"):
        HighResolutionModule(2, BasicBlock, [1, 1], [8, 16], [8, 16], fuse_mode="bicubic")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# Factory
# --------------------------------------------------------------------------------------------------
def test_list_models() -> None:
    names = list_models()
    plain = [
        "hrnetv2_w18_small_v1",
        "hrnetv2_w18_small_v2",
        "hrnetv2_w18",
        "hrnetv2_w32",
        "hrnetv2_w40",
        "hrnetv2_w48",
        "hrnetv2_w64",
    ]
    assert names == plain + [f"{name}_ocr" for name in plain]  # HRNet-OCR: tests/test_ocr.py


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ValueError, match=r"hrnetv2_w18_small_v1.*hrnetv2_w64"):
        build_model("hrnetv2_w99", num_classes=19)
    with pytest.raises(ValueError, match="fuse_mode"):
        build_model("hrnetv2_w18", num_classes=19, fuse_mode="bicubic")
    with pytest.raises(ValueError, match="unknown option"):
        build_model("hrnetv2_w18", num_classes=19, pretrained=True)


TINY_SPEC = {
    "stem_width": 16,
    # Official YAML spelling (upper case) is accepted as well as lower case.
    "STAGE1": {
        "NUM_MODULES": 1,
        "NUM_BRANCHES": 1,
        "BLOCK": "BOTTLENECK",
        "NUM_BLOCKS": [1],
        "NUM_CHANNELS": [8],
    },
    "stage2": {
        "num_modules": 1,
        "num_branches": 2,
        "block": "BASIC",
        "num_blocks": [1, 1],
        "num_channels": [8, 16],
    },
    "stage3": {
        "num_modules": 2,
        "num_branches": 3,
        "block": "BASIC",
        "num_blocks": [1] * 3,
        "num_channels": [8, 16, 32],
    },
    "stage4": {
        "num_modules": 1,
        "num_branches": 4,
        "block": "BASIC",
        "num_blocks": [1] * 4,
        "num_channels": [8, 16, 32, 64],
    },
}


def test_custom_spec() -> None:
    model = build_model("hrnetv2", num_classes=4, spec=TINY_SPEC).eval()
    assert isinstance(model, HRNetSegmentationNet) and isinstance(model.head, HRNetV2Head)
    assert model.out_channels == (8, 16, 32, 64)
    assert n_params(model) == analytic_params(HRNetSpec.from_dict(TINY_SPEC), num_classes=4)
    with torch.no_grad():
        assert model(torch.randn(1, 3, 50, 70)).shape == (1, 4, 13, 18)
    # The spec dataclass round-trips through plain data (YAML configs, hparams).
    spec = HRNetSpec.from_dict(TINY_SPEC)
    assert HRNetSpec.from_dict(spec.to_dict()) == spec
    assert n_params(build_model("hrnetv2", num_classes=4, spec=spec)) == n_params(model)


def test_bad_custom_spec() -> None:
    bad = {**TINY_SPEC, "stage3": {**TINY_SPEC["stage3"], "num_channels": [8, 16]}}
    with pytest.raises(ValueError, match=r"num_branches \(3\) != len\(num_channels\) \(2\)"):
        build_model("hrnetv2", num_classes=19, spec=bad)
    with pytest.raises(ValueError, match="unknown"):
        build_model("hrnetv2", num_classes=19, spec={**TINY_SPEC, "stage5": {}})


@pytest.mark.parametrize("name", ["smp:Unet:resnet18", "smp:DeepLabV3Plus:resnet18"])
def test_smp_baseline(name: str) -> None:
    pytest.importorskip("segmentation_models_pytorch")
    model = build_model(name, num_classes=6).eval()
    assert model.num_classes == 6
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 96))
    assert out.shape == (1, 6, 64, 96)
    assert upsample_logits(out, (64, 96)) is out
    assert model.head_modules == ("segmentation_head",) and hasattr(model, "segmentation_head")


def test_smp_bad_names() -> None:
    with pytest.raises(ValueError, match="smp:<Arch>:<encoder>"):
        build_model("smp:Unet", num_classes=19)
    with pytest.raises(ValueError, match="unknown smp architecture"):
        build_model("smp:NoSuchNet:resnet18", num_classes=19)


def test_models_own_their_head_metadata() -> None:
    """Head names and every head's checkpoint modules live on the heads (task and loader read them)."""
    from hrseg.models import HRNet, OCRHead

    v2 = build_model("hrnetv2", spec=TINY_SPEC, num_classes=3)
    ocr = build_model("hrnetv2_ocr", spec=TINY_SPEC, num_classes=3)
    for model in (v2, ocr):
        assert isinstance(model, HRNetSegmentationNet) and model.output_stride == 4
        assert all(isinstance(getattr(model, m), torch.nn.Module) for m in model.head_modules)
        head_keys = {k for k in model.state_dict() if k.split(".")[0] in model.head_modules}
        assert head_keys and all(not k.startswith(("conv1.", "stage4.")) for k in head_keys)
    assert v2.head_modules == HRNetV2Head.head_modules == ("last_layer",)
    assert ocr.head_modules[0] == "aux_head"
    assert set(v2.checkpoint_head_modules()) == {"last_layer", *OCRHead.head_modules}
    assert HRNet.head_modules == () and HRNet.checkpoint_head_modules() == v2.checkpoint_head_modules()
    # HRNetV2 takes checkpoints as they are; HRNet-OCR maps an HRNetV2 head onto its aux_head
    state = {"last_layer.3.bias": torch.zeros(3), "conv1.weight": torch.zeros(1)}
    assert v2.remap_checkpoint_keys(state).state is state
    remap = ocr.remap_checkpoint_keys(state)
    assert set(remap.state) == {"aux_head.3.bias", "conv1.weight"} and remap.notes
    assert "aux_head" not in remap.fresh_modules and "cls_head" in remap.fresh_modules
    official_ocr = {"aux_head.3.bias": torch.zeros(3), "cls_head.bias": torch.zeros(3)}
    assert OCRHead.remap_checkpoint_keys(official_ocr).state is official_ocr
