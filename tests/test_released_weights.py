"""Released weights straight to predictions: a state dict in the official layout + a model name + a label set.

Nothing is downloaded: the tests write checkpoints the way the official HRNet code saves them (``model.``
prefixed keys, the loss's class weights beside them) from a freshly initialised network of the same
architecture, and check that hrseg rebuilds exactly that network.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hrseg.checkpoint import CheckpointError
from hrseg.deploy import Segmenter
from hrseg.inference import resolve_device
from hrseg.inference.released import released_meta
from hrseg.models import build_model

MODELS = ["hrnetv2_w18_small_v1", "hrnetv2_w18_small_v1_ocr"]


def _official_checkpoint(
    folder: Path, model: str, align_corners: bool = False
) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    net = build_model(model, num_classes=19, align_corners=align_corners).eval()
    state = {f"model.{k}": v for k, v in net.state_dict().items()}
    state["loss.criterion.weight"] = torch.ones(19)  # the official trainer saves its loss with the model
    path = folder / f"{model}_cs_official.pth"
    torch.save(state, path)
    return path, net


@pytest.fixture(scope="module")
def scene() -> np.ndarray:
    from hrseg.data.scenes import generate_scene

    return generate_scene(11, size=(48, 80))[0]


@pytest.mark.parametrize("model", MODELS)
def test_segmenter_from_official_state_dict(tmp_path: Path, model: str, scene: np.ndarray) -> None:
    path, net = _official_checkpoint(tmp_path, model, align_corners=model.endswith("_ocr"))
    seg = Segmenter.from_weights(
        path, model, "cityscapes", align_corners=model.endswith("_ocr"), device="cpu"
    )
    assert (
        seg.class_names[0] == "road"
        and seg.num_classes == 19
        and seg.meta.align_corners == model.endswith("_ocr")
    )
    reference = Segmenter(
        net, released_meta(model, "cityscapes", align_corners=model.endswith("_ocr")), device="cpu"
    )
    np.testing.assert_array_equal(seg.predict(scene), reference.predict(scene))


@pytest.mark.parametrize("model", MODELS)
def test_hrseg_predict_from_official_state_dict(tmp_path: Path, model: str, scene: np.ndarray) -> None:
    from hrseg.commands import main

    path, _ = _official_checkpoint(tmp_path, model)
    Image.fromarray(scene).save(tmp_path / "street.png")
    argv = ["predict", "--ckpt_path", str(path), "--model", model, "--classes", "cityscapes"]
    code = main([*argv, "--input", str(tmp_path / "street.png"), "--output", str(tmp_path / "out")])
    assert code == 0
    written = np.asarray(Image.open(tmp_path / "out" / "street_trainIds.png"))
    expected = Segmenter.from_weights(path, model, "cityscapes", device="cpu").predict(scene)
    np.testing.assert_array_equal(written, expected)
    assert (tmp_path / "out" / "street_color.png").is_file()


def test_weights_that_do_not_fit_name_the_file(tmp_path: Path) -> None:
    path, _ = _official_checkpoint(tmp_path, "hrnetv2_w18_small_v1")
    with pytest.raises(CheckpointError, match=str(path.name)):
        Segmenter.from_weights(path, "hrnetv2_w18_small_v2", "cityscapes")
    with pytest.raises(CheckpointError, match="last_layer"):  # 19 classes of weights, 21 of VOC
        Segmenter.from_weights(path, "hrnetv2_w18_small_v1", "voc")
    # backbone-only weights (an ImageNet checkpoint) would leave the head random: refused, not predicted
    state = torch.load(path, weights_only=True)
    backbone = tmp_path / "backbone_only.pth"
    torch.save({k: v for k, v in state.items() if "last_layer" not in k}, backbone)
    with pytest.raises(CheckpointError, match=r"missing|uninitialised"):
        Segmenter.from_weights(backbone, "hrnetv2_w18_small_v1", "cityscapes")
    with pytest.raises(ValueError, match="unknown label set"):
        Segmenter.from_weights(path, "hrnetv2_w18_small_v1", "no_such_classes")
    with pytest.raises(CheckpointError, match="last_layer"):  # 19 classes of weights, 150 of ADE20K
        Segmenter.from_weights(path, "hrnetv2_w18_small_v1", "ade20k")


def test_hrseg_predict_with_the_ade20k_label_set(tmp_path: Path, scene: np.ndarray) -> None:
    """``--classes ade20k``: 150-class weights predict ADE20K train ids, coloured with the ADE20K palette."""
    from hrseg.commands import main
    from hrseg.metadata import get_label_set

    torch.manual_seed(0)
    net = build_model("hrnetv2_w18_small_v1", num_classes=150).eval()
    path = tmp_path / "ade20k_official.pth"
    torch.save({f"model.{k}": v for k, v in net.state_dict().items()}, path)
    Image.fromarray(scene).save(tmp_path / "room.png")
    argv = ["predict", "--ckpt_path", str(path), "--model", "hrnetv2_w18_small_v1", "--classes", "ade20k"]
    assert main([*argv, "--input", str(tmp_path / "room.png"), "--output", str(tmp_path / "out")]) == 0
    written = np.asarray(Image.open(tmp_path / "out" / "room_trainIds.png"))
    expected = Segmenter(net, released_meta("hrnetv2_w18_small_v1", "ade20k"), device="cpu").predict(scene)
    np.testing.assert_array_equal(written, expected)
    color = np.asarray(Image.open(tmp_path / "out" / "room_color.png").convert("RGB"))
    palette = np.asarray(get_label_set("ade20k").palette, dtype=np.uint8)
    np.testing.assert_array_equal(color, palette[written])


def test_hrseg_predict_with_the_wrong_model_name_says_so_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A W18-Small-v1 file named as W48: one line naming the file, the model and what does not fit."""
    from hrseg.commands import main

    path, _ = _official_checkpoint(tmp_path, "hrnetv2_w18_small_v1")
    args = ["--ckpt_path", str(path), "--classes", "cityscapes", "--input", str(tmp_path), "--output", "out"]
    assert main(["predict", *args, "--model", "hrnetv2_w48"]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and len(err) < 700, err
    assert err.startswith(f"hrseg predict: error: {path}: these are not hrnetv2_w48 weights for 19 classes (")
    assert "tensors of another shape" in err and "missing" in err and "check --model and --classes" in err


def test_device_auto_picks_cuda_when_available(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_device("auto") == torch.device("cpu")  # this machine: no GPU
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert resolve_device("auto") == torch.device("cuda", 0)
    assert resolve_device(None) == torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="no CUDA GPU"):
        resolve_device("cuda")


def test_export_hub_folder_from_official_state_dict(tmp_path: Path, scene: np.ndarray) -> None:
    """``hrseg export --format hub`` makes released weights self-describing: the folder needs no --model."""
    from hrseg.commands import main

    path, _ = _official_checkpoint(tmp_path, "hrnetv2_w18_small_v1_ocr", align_corners=True)
    argv = [
        "export",
        "--ckpt_path",
        str(path),
        "--model",
        "hrnetv2_w18_small_v1_ocr",
        "--classes",
        "cityscapes",
    ]
    assert main([*argv, "--align-corners", "--format", "hub", "--size", "64x64"]) == 0
    folder = tmp_path / f"{path.stem}_hub"
    assert (folder / "config.json").is_file() and (folder / "README.md").is_file()
    loaded = Segmenter.from_pretrained(folder, device="cpu")
    assert loaded.meta.align_corners and loaded.class_names[-1] == "bicycle"
    expected = Segmenter.from_weights(path, "hrnetv2_w18_small_v1_ocr", align_corners=True, device="cpu")
    np.testing.assert_array_equal(loaded.predict(scene), expected.predict(scene))


#: the rows of the official tables beyond Cityscapes: (label set, classes, the released file's head, its
#: align_corners: True for the HRNet-OCR branch's ``*_torch11.pth`` files, False for the master branch's)
TABLE_ROWS = [
    ("lip", 20, "", False),  # hrnet_lip_5583_torch04.pth
    ("lip", 20, "_ocr", True),
    ("pascal_context_59", 59, "", False),
    ("pascal_context_59", 59, "_ocr", True),  # hrnet_ocr_pascal_ctx_5618_torch11.pth
    ("pascal_context_60", 60, "", False),
    ("pascal_context_60", 60, "_ocr", True),
    ("ade20k", 150, "", False),  # hrnet_ade20k_4312_torch04.pth
    ("ade20k", 150, "_ocr", True),
    ("cocostuff", 171, "", False),
    ("cocostuff", 171, "_ocr", True),  # hrnet_ocr_cocostuff_3965_torch04.pth
]


@pytest.mark.parametrize(("classes", "num_classes", "head", "align_corners"), TABLE_ROWS)
def test_released_weights_of_every_table_row(
    tmp_path: Path, scene: np.ndarray, classes: str, num_classes: int, head: str, align_corners: bool
) -> None:
    """Each official table's released file layout (``model.``-prefixed, the loss beside it) predicts through
    ``hrseg predict --ckpt_path --model --classes NAME`` exactly as the network it was saved from, with the
    label set's classes and palette (W18-Small-v1 stands in for W48: the layout is the same)."""
    from hrseg.commands import main
    from hrseg.metadata import get_label_set

    model = f"hrnetv2_w18_small_v1{head}"
    torch.manual_seed(0)
    net = build_model(model, num_classes=num_classes, align_corners=align_corners).eval()
    state = {f"model.{k}": v for k, v in net.state_dict().items()}
    state["loss.criterion.weight"] = torch.ones(num_classes)
    path = tmp_path / f"{classes}{head}_official.pth"
    torch.save(state, path)
    labels = get_label_set(classes)
    meta = released_meta(model, classes, align_corners=align_corners)
    seg = Segmenter.from_weights(path, model, classes, align_corners=align_corners, device="cpu")
    assert seg.num_classes == num_classes == labels.num_classes
    assert list(seg.class_names) == list(labels.class_names)
    expected = Segmenter(net, meta, device="cpu").predict(scene)
    np.testing.assert_array_equal(seg.predict(scene), expected)
    Image.fromarray(scene).save(tmp_path / "image.png")
    argv = ["predict", "--ckpt_path", str(path), "--model", model, "--classes", classes]
    argv += ["--align-corners"] if align_corners else []
    assert main([*argv, "--input", str(tmp_path / "image.png"), "--output", str(tmp_path / "out")]) == 0
    written = np.asarray(Image.open(tmp_path / "out" / "image_trainIds.png"))
    np.testing.assert_array_equal(written, expected)
    color = np.asarray(Image.open(tmp_path / "out" / "image_color.png").convert("RGB"))
    np.testing.assert_array_equal(color, np.asarray(labels.palette, dtype=np.uint8)[written])
