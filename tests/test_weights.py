"""Checkpoint import: every supported format loads exactly, every broken file fails loudly."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch import nn

from hrseg.checkpoint import CheckpointError
from hrseg.models import HRNetSegmentationNet as Net
from hrseg.models import LoadReport, build_model, load_pretrained
from hrseg.models.weights import CheckpointMismatchError

HEAD_KEYS = sorted(
    f"last_layer.{k}"
    for k in (
        "0.weight",
        "0.bias",
        "1.weight",
        "1.bias",
        "1.running_mean",
        "1.running_var",
        "1.num_batches_tracked",
        "3.weight",
        "3.bias",
    )
)


def _randomized(name: str = "hrnetv2_w18_small_v1", num_classes: int = 19, seed: int = 0) -> Net:
    """A model whose every tensor (BN statistics included) differs from a fresh one's."""
    torch.manual_seed(seed)
    model = build_model(name, num_classes=num_classes)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.1, 0.4)
                m.bias.normal_(0, 0.1)
                m.num_batches_tracked.fill_(seed + 7)
    return model.eval()


def _outputs(model: nn.Module) -> torch.Tensor:
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(123))
    with torch.no_grad():
        return model.eval()(x)


def _assert_same(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    assert torch.equal(_outputs(a), _outputs(b))


@pytest.fixture(scope="module")
def source_model() -> Net:
    return _randomized(seed=0)


@pytest.mark.parametrize("wrapped", [False, True])
def test_official_seg_checkpoint_round_trip(tmp_path: Path, source_model: Net, wrapped: bool) -> None:
    sd = {f"model.{k}": v for k, v in source_model.state_dict().items()}
    sd["loss.criterion.weight"] = torch.rand(19)
    path = tmp_path / "hrnet_seg.pth"
    torch.save({"state_dict": sd} if wrapped else sd, path)
    fresh = _randomized(seed=1)
    report = load_pretrained(fresh, path)
    assert isinstance(report, LoadReport)
    assert report.source == "official-seg"
    assert report.dropped == ["loss.criterion.weight"]
    assert report.missing == []
    assert report.loaded == sorted(source_model.state_dict())
    assert str(path) in str(report)
    _assert_same(fresh, source_model)


def test_lightning_checkpoint(tmp_path: Path, source_model: Net) -> None:
    sd = {f"model.{k}": v for k, v in source_model.state_dict().items()}
    sd["criterion.weight"] = torch.ones(19)
    path = tmp_path / "epoch=3.ckpt"
    torch.save(
        {
            "epoch": 3,
            "global_step": 120,
            "pytorch-lightning_version": "2.5.0",
            "state_dict": sd,
            "hyper_parameters": {"model": "hrnetv2_w18_small_v1", "num_classes": 19},
            "optimizer_states": [],
        },
        path,
    )
    fresh = _randomized(seed=2)
    report = load_pretrained(fresh, path)
    assert report.source == "lightning"
    assert report.dropped == ["criterion.weight"]
    assert report.missing == []
    _assert_same(fresh, source_model)


def test_safetensors_round_trip(tmp_path: Path, source_model: Net) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in source_model.state_dict().items()}, str(path))
    fresh = _randomized(seed=3)
    report = load_pretrained(fresh, path)
    assert report.source == "safetensors"
    assert report.dropped == [] and report.missing == []
    _assert_same(fresh, source_model)


def test_plain_state_dict(tmp_path: Path, source_model: Net) -> None:
    path = tmp_path / "plain.pt"
    torch.save(source_model.state_dict(), path)
    fresh = _randomized(seed=4)
    report = load_pretrained(fresh, path)
    assert report.source == "plain"
    _assert_same(fresh, source_model)


def test_classification_checkpoint_into_backbone(tmp_path: Path) -> None:
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    classifier = timm.create_model("hrnet_w18_small_v2", pretrained=False)
    cls_sd = classifier.state_dict()
    path = tmp_path / "hrnet_w18_small_v2_imagenet.pth"
    torch.save(cls_sd, path)

    model = build_model("hrnetv2_w18_small_v2", num_classes=19)
    head_before = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("last_layer.")}
    report = load_pretrained(model, path)

    assert report.source == "classification"
    head_prefixes = ("incre_modules.", "downsamp_modules.", "final_layer.", "classifier.")
    expected_dropped = sorted(k for k in cls_sd if k.startswith(head_prefixes))
    assert report.dropped == expected_dropped
    assert {k.split(".")[0] for k in report.dropped} == {
        "incre_modules",
        "downsamp_modules",
        "final_layer",
        "classifier",
    }
    assert report.missing == HEAD_KEYS  # legitimately missing, not an error
    sd = model.state_dict()
    assert len(report.loaded) == len(sd) - len(HEAD_KEYS)
    for k in report.loaded:
        assert torch.equal(sd[k], cls_sd[k]), k
    for k, v in head_before.items():
        assert torch.equal(sd[k], v), k  # the new head keeps its initialisation


def test_truncated_file(tmp_path: Path, source_model: Net) -> None:
    path = tmp_path / "truncated.pth"
    torch.save(source_model.state_dict(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"corrupt or truncated") as info:
        load_pretrained(_randomized(seed=5), path)
    assert str(path) in str(info.value)


def test_truncated_safetensors(tmp_path: Path, source_model: Net) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "truncated.safetensors"
    save_file({k: v.contiguous() for k, v in source_model.state_dict().items()}, str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match=r"corrupt or truncated") as info:
        load_pretrained(_randomized(seed=5), path)
    assert str(path) in str(info.value)


def test_garbage_and_empty_files(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"this is not a checkpoint at all" * 10)
    with pytest.raises(CheckpointError, match=re.escape(str(garbage))):
        load_pretrained(_randomized(), garbage)
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_pretrained(_randomized(), empty)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "hrnet_w48.pth"
    with pytest.raises(FileNotFoundError, match=re.escape(str(path))):
        load_pretrained(_randomized(), path)


def test_wrong_width_names_keys_and_shapes(tmp_path: Path) -> None:
    with torch.device("meta"):
        w48 = build_model("hrnetv2_w48", num_classes=19)
        w32_meta = build_model("hrnetv2_w32", num_classes=19).state_dict()
    # Values are irrelevant here, only shapes: skip the costly random init of a real W32.
    w32_sd = {k: torch.zeros(v.shape, dtype=v.dtype) for k, v in w32_meta.items()}
    path = tmp_path / "w32.pth"
    torch.save({f"model.{k}": v for k, v in w32_sd.items()}, path)
    with pytest.raises(CheckpointError) as info:
        load_pretrained(w48, path)
    msg = str(info.value)
    assert str(path) in msg and "shape mismatch" in msg
    assert "transition1.0.0.weight: checkpoint (32, 256, 3, 3) vs model (48, 256, 3, 3)" in msg
    assert "last_layer.3.weight: checkpoint (19, 480, 1, 1) vs model (19, 720, 1, 1)" in msg
    assert "layer1.0.conv1.weight" not in msg  # stage 1 is width-independent and fits
    # what `hrseg` prints: one line, every kind of disagreement counted with a few examples
    assert isinstance(info.value, CheckpointMismatchError)
    line = info.value.one_line()
    assert "\n" not in line and line.startswith(f"checkpoint {path} does not fit HRNetSegmentationNet: ")
    assert f"{len(info.value.mismatched)} tensors of another shape (" in line and len(line) < 600
    assert "another class count" not in line  # the widths differ, not only the head


def test_num_classes_mismatch_and_ignore_head(tmp_path: Path, source_model: Net) -> None:
    path = tmp_path / "cityscapes.pth"
    torch.save(source_model.state_dict(), path)
    voc = _randomized(num_classes=21, seed=6)
    before = {k: v.clone() for k, v in voc.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"last_layer\.3\.weight: checkpoint \(19, 240, 1, 1\)") as info:
        load_pretrained(voc, path)
    assert "ignore_head=True" in str(info.value) and "another class count" in info.value.one_line()
    assert all(torch.equal(v, voc.state_dict()[k]) for k, v in before.items())  # nothing loaded on error

    report = load_pretrained(voc, path, ignore_head=True)
    assert report.dropped == HEAD_KEYS
    assert report.missing == HEAD_KEYS
    sd, src = voc.state_dict(), source_model.state_dict()
    assert all(torch.equal(sd[k], src[k]) for k in report.loaded)
    assert voc.last_layer[3].weight.shape == (21, 240, 1, 1)


def test_non_strict_loads_what_fits(tmp_path: Path, source_model: Net) -> None:
    path = tmp_path / "cityscapes.pth"
    torch.save(source_model.state_dict(), path)
    voc = _randomized(num_classes=21, seed=7)
    report = load_pretrained(voc, path, strict=False)
    assert report.dropped == ["last_layer.3.bias", "last_layer.3.weight"]
    assert report.missing == []
    assert "last_layer.0.weight" in report.loaded


def test_unexpected_and_missing_keys(tmp_path: Path, source_model: Net) -> None:
    sd = dict(source_model.state_dict())
    sd["stage5.0.weight"] = torch.zeros(3)
    extra = tmp_path / "extra.pth"
    torch.save(sd, extra)
    with pytest.raises(CheckpointError, match=r"unexpected keys in checkpoint \(1\): stage5\.0\.weight"):
        load_pretrained(_randomized(seed=8), extra)

    sd = dict(source_model.state_dict())
    del sd["stage4.0.fuse_layers.0.3.1.running_var"]
    gap = tmp_path / "gap.pth"
    torch.save(sd, gap)
    with pytest.raises(
        CheckpointError, match=r"missing from checkpoint \(1\): stage4\.0\.fuse_layers\.0\.3\.1"
    ):
        load_pretrained(_randomized(seed=8), gap)


def test_old_checkpoint_without_num_batches_tracked(tmp_path: Path, source_model: Net) -> None:
    sd = {k: v for k, v in source_model.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "old.pth"
    torch.save(sd, path)
    fresh = _randomized(seed=9)
    report = load_pretrained(fresh, path)
    assert all(k.endswith("num_batches_tracked") for k in report.missing)
    assert torch.equal(_outputs(fresh), _outputs(source_model))


def test_pickled_objects_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {}, "callback": Path("x")}, path)
    with pytest.raises(CheckpointError, match=r"refused checkpoint .*\(pathlib\.PosixPath\).*would run code"):
        load_pretrained(_randomized(), path)
    # Opting in to full unpickling reads the file; its content is still validated.
    with pytest.raises(CheckpointError, match="no tensors"):
        load_pretrained(_randomized(), path, trusted=True)


def test_official_training_checkpoint(tmp_path: Path, source_model: Net) -> None:
    """The official trainer's checkpoint.pth.tar: epoch, best mIoU, optimizer and the wrapped weights."""
    sd = {f"model.{k}": v for k, v in source_model.state_dict().items()}
    sd["loss.criterion.weight"] = torch.rand(19)
    path = tmp_path / "checkpoint.pth.tar"
    torch.save({"epoch": 10, "best_mIoU": 0.5, "state_dict": sd, "optimizer": {"state": {}}}, path)
    fresh = _randomized(seed=10)
    report = load_pretrained(fresh, path)
    assert report.source == "official-seg"
    assert report.dropped == ["loss.criterion.weight"]
    _assert_same(fresh, source_model)


def test_real_lightning_checkpoint(tiny_checkpoint: Path) -> None:
    """A checkpoint written by the real CLI loads with weights_only (no pickled objects in it)."""
    model = build_model("hrnetv2_w18_small_v1", num_classes=19)
    report = load_pretrained(model, tiny_checkpoint)
    assert report.source == "lightning"
    assert report.missing == []
    assert len(report.loaded) == len(model.state_dict())
    assert all(not k.startswith("model.") for k in report.dropped)
