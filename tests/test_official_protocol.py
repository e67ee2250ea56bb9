"""The official test-time pipeline as an evaluation protocol, the flip's class swap, scoring any label set.

``reference_multi_scale_inference`` below re-implements the official HRNet code's ``inference`` and
``multi_scale_inference`` (``lib/datasets/base_dataset.py``, its ``cityscapes.py`` override, the channel swap
of ``lip.py``) from their description, in numpy + OpenCV with one crop per forward, batch of one, as the
official loop runs; ``mode="official"`` must give the same scores and the same argmax.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from hrseg.eval_protocol import EvalProtocol, Variant
from hrseg.inference import infer
from hrseg.metadata import IMAGENET_MEAN, IMAGENET_STD, LabelSet, black_pixel

NUM_CLASSES = 5
#: classes 1 <-> 2 and 3 <-> 4 swap in a mirror image (as LIP's left / right arms, legs, shoes)
SWAP = [0, 2, 1, 4, 3]
PAD = np.array(black_pixel(IMAGENET_MEAN, IMAGENET_STD), dtype=np.float32)


class TinyNet(nn.Module):
    """A deterministic conv net with logits at 1/4 resolution (as HRNetV2), not mirror-symmetric."""

    def __init__(self, align_corners: bool) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.align_corners = align_corners
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, NUM_CLASSES, (3, 5), stride=2, padding=(1, 2)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) * 4.0


# ---------------------------------------------------------------- the official loop, re-implemented
def _pad_image(image: np.ndarray, h: int, w: int, size: tuple[int, int]) -> np.ndarray:
    pad_h, pad_w = max(size[0] - h, 0), max(size[1] - w, 0)
    if pad_h > 0 or pad_w > 0:
        return cv2.copyMakeBorder(image, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT, value=PAD.tolist())
    return image.copy()


def _inference(model: nn.Module, image: np.ndarray, flip: bool, swap: list[int] | None) -> torch.Tensor:
    """``inference``: logits upsampled to the input, mirror averaged (channels swapped), then exp."""
    x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)[None]))
    size = x.shape[-2:]
    pred = F.interpolate(model(x), size=size, mode="bilinear", align_corners=model.align_corners)
    if flip:
        flip_out = model(torch.from_numpy(x.numpy()[:, :, :, ::-1].copy()))
        flip_out = F.interpolate(flip_out, size=size, mode="bilinear", align_corners=model.align_corners)
        flip_pred = flip_out.numpy().copy()
        if swap is not None:
            for c, source in enumerate(swap):
                flip_pred[:, c] = flip_out[:, source].numpy()
        pred = pred + torch.from_numpy(flip_pred[:, :, :, ::-1].copy())
        pred = pred * 0.5
    return pred.exp()


def _resize_long_side(image: np.ndarray, base_size: int, scale: float) -> np.ndarray:
    long_size = int(base_size * scale + 0.5)
    h, w = image.shape[:2]
    if h > w:
        new_h, new_w = long_size, int(w * long_size / h + 0.5)
    else:
        new_h, new_w = int(h * long_size / w + 0.5), long_size
    return cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)


def reference_multi_scale_inference(
    model: nn.Module,
    image: np.ndarray,
    crop: tuple[int, int],
    base_size: int,
    scales: list[float],
    flip: bool,
    variant: str,
    swap: list[int] | None = None,
    num_classes: int = NUM_CLASSES,
) -> torch.Tensor:
    """``multi_scale_inference`` on one normalised HWC float32 image: the sum of exp-scores over scales."""
    ori_h, ori_w = image.shape[:2]
    stride = crop if variant == "cityscapes" else (int(crop[0] * 2.0 / 3.0), int(crop[1] * 2.0 / 3.0))
    final: torch.Tensor | None = None
    for scale in scales:
        new_img = _resize_long_side(image, base_size, scale)
        height, width = new_img.shape[:2]
        if variant == "cityscapes" and scale <= 1.0:
            preds = _inference(model, new_img, flip, swap)
        elif variant == "default" and max(height, width) <= min(crop):
            preds = _inference(model, _pad_image(new_img, height, width, crop), flip, swap)
            preds = preds[:, :, :height, :width]
        else:
            if variant == "default" and (height < crop[0] or width < crop[1]):
                new_img = _pad_image(new_img, height, width, crop)
            new_h, new_w = new_img.shape[:2]
            rows = math.ceil((new_h - crop[0]) / stride[0]) + 1
            cols = math.ceil((new_w - crop[1]) / stride[1]) + 1
            preds = torch.zeros(1, num_classes, new_h, new_w)
            count = torch.zeros(1, 1, new_h, new_w)
            for r in range(rows):
                for c in range(cols):
                    h0, w0 = r * stride[0], c * stride[1]
                    h1, w1 = min(h0 + crop[0], new_h), min(w0 + crop[1], new_w)
                    if variant == "cityscapes":
                        h0, w0 = max(h1 - crop[0], 0), max(w1 - crop[1], 0)
                    crop_img = new_img[h0:h1, w0:w1, :]
                    if variant == "default" and (h1 == new_h or w1 == new_w):
                        crop_img = _pad_image(crop_img, h1 - h0, w1 - w0, crop)
                    pred = _inference(model, crop_img, flip, swap)
                    preds[:, :, h0:h1, w0:w1] += pred[:, :, : h1 - h0, : w1 - w0]
                    count[:, :, h0:h1, w0:w1] += 1
            preds = (preds / count)[:, :, :height, :width]
        preds = F.interpolate(preds, (ori_h, ori_w), mode="bilinear", align_corners=model.align_corners)
        final = preds if final is None else final + preds
    assert final is not None
    return final


# ---------------------------------------------------------------- the protocol against it
def _image(h: int, w: int, seed: int) -> np.ndarray:
    rgb = np.random.default_rng(seed).random((h, w, 3), dtype=np.float32)
    return ((rgb - np.float32(IMAGENET_MEAN)) / np.float32(IMAGENET_STD)).astype(np.float32)


def _protocol_scores(
    model: TinyNet, image: np.ndarray, protocol: EvalProtocol, **kwargs: object
) -> torch.Tensor:
    x = torch.from_numpy(image.transpose(2, 0, 1).copy())[None]
    logits = infer(
        model,
        x,
        protocol,
        num_classes=NUM_CLASSES,
        pad_value=black_pixel(IMAGENET_MEAN, IMAGENET_STD),
        batch_windows=3,
        **kwargs,  # type: ignore[arg-type]
    )
    return logits.exp() * len(protocol.scales)  # back to the official sum


CASES = [
    # (variant, crop, image (h, w), base size, scales, align_corners, flip)
    ("default", (32, 48), (20, 30), 40, [0.5, 1.0, 1.75], False, True),  # smaller than the crop, then larger
    ("default", (32, 48), (70, 101), 101, [0.75, 1.25], True, True),  # larger, not divisible, border windows
    ("default", (40, 40), (90, 37), 90, [0.5, 1.0], False, False),  # portrait: the height is the long side
    ("default", (32, 64), (30, 50), 50, [1.0], False, True),  # longer than the short crop side: one window
    ("cityscapes", (32, 64), (64, 128), 128, [0.5, 1.0, 1.5], False, False),  # whole <= 1, windows above
    ("cityscapes", (32, 64), (50, 111), 120, [0.75, 1.25, 1.75], True, True),  # not divisible: shifted back
]


@pytest.mark.parametrize(("variant", "crop", "size", "base", "scales", "ac", "flip"), CASES)
def test_official_mode_matches_the_official_loop(
    variant: Variant,
    crop: tuple[int, int],
    size: tuple[int, int],
    base: int,
    scales: list[float],
    ac: bool,
    flip: bool,
) -> None:
    model = TinyNet(ac).eval()
    image = _image(*size, seed=size[0])
    swap = SWAP if flip else None
    with torch.no_grad():
        expected = reference_multi_scale_inference(model, image, crop, base, scales, flip, variant, swap)
    protocol = EvalProtocol("official", crop, None, tuple(scales), flip, base, variant)
    got = _protocol_scores(model, image, protocol, flip_permutation=swap)
    torch.testing.assert_close(got, expected, rtol=2e-5, atol=1e-6)
    assert torch.equal(got.argmax(1), expected.argmax(1))


def test_official_mode_details() -> None:
    """The scores go to another size as testval's resize does; no base size means the image's long side;
    a flip without the swap permutation is another result; the window count follows the variant."""
    model = TinyNet(False).eval()
    image = _image(50, 70, seed=1)
    crop = (32, 48)
    protocol = EvalProtocol("official", window=crop, scales=[1.0, 1.5], flip=True)
    with torch.no_grad():
        reference = reference_multi_scale_inference(model, image, crop, 70, [1.0, 1.5], True, "default", SWAP)
    got = _protocol_scores(model, image, protocol, flip_permutation=SWAP, size=(25, 35))
    torch.testing.assert_close(got, F.interpolate(reference, (25, 35), mode="bilinear"), rtol=2e-5, atol=1e-6)
    unswapped = _protocol_scores(model, image, protocol)
    assert not torch.allclose(unswapped, _protocol_scores(model, image, protocol, flip_permutation=SWAP))

    shapes: list[tuple[int, ...]] = []
    model.register_forward_pre_hook(lambda _m, args: shapes.append(tuple(args[0].shape)))
    x = torch.from_numpy(_image(64, 128, seed=2).transpose(2, 0, 1).copy())[None]
    city = EvalProtocol("official", window=(32, 64), scales=[1.0, 1.5], base_size=128, variant="cityscapes")
    infer(model, x, city, batch_windows=1)
    # scale 1: the whole 64x128 image; 1.5: 96x192 in 3 x 3 crops of 32x64 at a stride of one crop
    assert shapes == [(1, 3, 64, 128)] + [(1, 3, 32, 64)] * 9
    shapes.clear()
    infer(model, x, EvalProtocol("official", window=(32, 64), base_size=128), batch_windows=4)
    # default: 64x128 at a stride of 21x42: 3 rows x 3 columns, every crop padded to 32x64, 4 per forward
    assert [s[0] for s in shapes] == [4, 4, 1] and all(s[-2:] == (32, 64) for s in shapes)


def test_official_protocol_settings_are_validated() -> None:
    p = EvalProtocol("official", window=(512, 1024), base_size=2048, variant="cityscapes", scales=[0.5, 1.75])
    assert EvalProtocol.from_dict(p.to_dict()) == p
    assert p.effective_stride() == (512, 1024)
    assert EvalProtocol("official", window=(520, 520)).effective_stride() == (346, 346)
    assert "base_size" not in EvalProtocol().to_dict()  # hrseg's own protocol is stored as before
    assert p.replace(mode="whole") == EvalProtocol("whole", window=(512, 1024), scales=(0.5, 1.75))
    assert p.describe() == "official cityscapes, crop 512x1024, base size 2048, scales 0.5,1.75"
    with pytest.raises(ValueError, match="needs a window"):
        EvalProtocol("official")
    with pytest.raises(ValueError, match="no stride"):
        EvalProtocol("official", window=(32, 32), stride=(16, 16))
    with pytest.raises(ValueError, match="belong to mode 'official'"):
        EvalProtocol("whole", base_size=512)
    with pytest.raises(ValueError, match="variant must be one of"):
        EvalProtocol("official", window=(32, 32), variant="lip")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="base_size must be an int in"):
        EvalProtocol("official", window=(32, 32), base_size=0)


# ---------------------------------------------------------------- the flip swap in hrseg's own protocol
@pytest.mark.parametrize("protocol", [EvalProtocol(flip=True), EvalProtocol("slide", (24, 24), flip=True)])
def test_hrseg_protocol_flip_swaps_the_label_sets_pairs(protocol: EvalProtocol) -> None:
    model = TinyNet(False).eval()
    x = torch.from_numpy(_image(40, 56, seed=3).transpose(2, 0, 1).copy())[None]
    labels = LabelSet(tuple(f"c{i}" for i in range(NUM_CLASSES)), flip_pairs=((1, 2), (3, 4)))
    perm = labels.flip_permutation()
    assert perm == SWAP
    got = infer(model, x, protocol, flip_permutation=perm, num_classes=NUM_CLASSES)
    plain = infer(model, x, protocol.replace(flip=False))
    mirrored = infer(model, x.flip(-1), protocol.replace(flip=False)).flip(-1)[:, SWAP]
    torch.testing.assert_close(got, (plain + mirrored) / 2)
    with pytest.raises(ValueError, match="must order the 5 classes"):
        infer(model, x, protocol, flip_permutation=[0, 1, 1, 3, 4], num_classes=NUM_CLASSES)


def test_task_and_segmenter_swap_the_label_sets_flip_pairs() -> None:
    """Validation (the task) and ``Segmenter`` take the flip permutation from the model's label set."""
    from hrseg.deploy import Segmenter
    from hrseg.metadata import ModelMeta
    from hrseg.task import SegmentationTask

    labels = LabelSet(tuple(f"c{i}" for i in range(NUM_CLASSES)), name="", flip_pairs=((1, 2), (3, 4)))
    x = torch.from_numpy(_image(32, 48, seed=4).transpose(2, 0, 1).copy())[None]

    def flip_average(model: nn.Module, image: torch.Tensor, probs: bool) -> torch.Tensor:
        def one(inp: torch.Tensor) -> torch.Tensor:
            out = F.interpolate(model(inp), size=(32, 48), mode="bilinear", align_corners=False)
            return out.softmax(1) if probs else out

        with torch.no_grad():
            return (one(image) + one(image.flip(-1)).flip(-1)[:, SWAP]) / 2

    task = SegmentationTask(
        "hrnetv2_w18_small_v1", labels=labels, eval_protocol=EvalProtocol(flip=True)
    ).eval()
    with torch.no_grad():
        torch.testing.assert_close(task.evaluate_logits(x), flip_average(task.model, x, probs=False))

    net = TinyNet(False)
    meta = ModelMeta("tiny", labels, eval_protocol=EvalProtocol(flip=True))
    rgb = torch.rand(1, 3, 32, 48)
    got = Segmenter(net, meta, device="cpu", fast=False).probabilities(rgb)
    torch.testing.assert_close(got, flip_average(net.eval(), meta.normalize(rgb), probs=True))


# ---------------------------------------------------------------- validate and predict with it
OFFICIAL_ARGS = [
    "--model.eval_protocol.mode=official",
    "--model.eval_protocol.window=[48, 64]",
    "--model.eval_protocol.base_size=96",
    "--model.eval_protocol.scales=[0.5, 1.0]",
    "--model.eval_protocol.flip=true",
]


@pytest.mark.slow  # a validate run plus the official loop with the network: ~5 s on 2 quiet cores
def test_hrseg_validate_scores_the_official_loops_predictions(tiny_checkpoint: Path, tmp_path: Path) -> None:
    """``hrseg validate --model.eval_protocol.mode official``: val/mIoU is the score of the official loop's
    predictions (re-implemented above) with the trained network on the same images."""
    from hrseg.commands.lightning import run_lightning_cli
    from hrseg.metrics import SegmentationMetrics

    args = ["validate", "--config", "demo", "--ckpt_path", str(tiny_checkpoint), *OFFICIAL_ARGS]
    small = ["--data.init_args.num_val=2", "--data.init_args.image_size=[64, 96]", "--trainer.logger=false"]
    cli = run_lightning_cli(
        [*args, *small, "--trainer.enable_progress_bar=false", f"--trainer.default_root_dir={tmp_path}"]
    )
    task = cli.model
    assert task.eval_protocol == EvalProtocol("official", (48, 64), None, (0.5, 1.0), True, 96, "default")
    network = task.model.eval()
    metrics = SegmentationMetrics(task.labels.num_classes, task.labels.ignore_index)
    with torch.no_grad():
        for batch in cli.datamodule.val_dataloader():
            for image, mask in zip(batch["image"], batch["mask"], strict=True):
                hwc = image.permute(1, 2, 0).numpy().astype(np.float32)
                scores = reference_multi_scale_inference(
                    network,
                    hwc,
                    (48, 64),
                    96,
                    [0.5, 1.0],
                    True,
                    "default",
                    num_classes=task.labels.num_classes,
                )
                metrics.update(scores.argmax(1), mask[None])
    expected = float(metrics.compute()["mIoU"])
    assert float(cli.trainer.callback_metrics["val/mIoU"]) == pytest.approx(expected, abs=1e-6)


def test_hrseg_predict_with_the_official_protocol(
    tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from hrseg.commands import main
    from hrseg.data.scenes import generate_scene
    from hrseg.deploy import Segmenter

    image, _ = generate_scene(2, size=(64, 96))
    Image.fromarray(image).save(tmp_path / "scene.png")
    options = ["--mode", "official", "--window", "48x96", "--base-size", "96", "--variant", "cityscapes"]
    args = ["predict", "--ckpt_path", str(tiny_checkpoint), "--input", str(tmp_path / "scene.png")]
    assert (
        main([*args, "--output", str(tmp_path / "out"), "--device", "cpu", *options, "--scales", "1", "1.5"])
        == 0
    )
    assert "protocol official cityscapes, crop 48x96, base size 96, scales 1,1.5" in capsys.readouterr().err
    protocol = {
        "mode": "official",
        "window": (48, 96),
        "base_size": 96,
        "variant": "cityscapes",
        "scales": (1, 1.5),
    }
    expected = Segmenter.from_checkpoint(tiny_checkpoint, device="cpu", protocol=protocol).predict(image)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out" / "scene_trainIds.png")), expected)
    # a setting the protocol refuses is one error line, no traceback
    assert main([*args, "--output", str(tmp_path / "bad"), "--device", "cpu", "--mode", "official"]) == 1
    err = capsys.readouterr().err
    assert "error: eval protocol mode 'official' needs a window" in err and "Traceback" not in err


# ---------------------------------------------------------------- scoring any label set
def _expected_miou(pairs: list[tuple[np.ndarray, np.ndarray]], num_classes: int) -> float:
    """The official mean: one confusion matrix, ignored ground truth dropped, non-class predictions missed."""
    cm = np.zeros((num_classes, num_classes + 1), dtype=np.int64)
    for pred, gt in pairs:
        keep = gt >= 0
        pred_col = np.where((pred >= 0) & (pred < num_classes), pred, num_classes)
        np.add.at(cm, (gt[keep], pred_col[keep]), 1)
    tp = np.diag(cm[:, :num_classes])
    union = cm.sum(1) + cm[:, :num_classes].sum(0) - tp
    return float((tp / np.maximum(union, 1)).mean())


def test_evaluate_scores_voc_train_id_predictions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """VOC ground truth (palette PNGs, 255 on object borders) against hrseg predict's ``_trainIds.png``."""
    import json

    from hrseg.commands import main
    from hrseg.metadata import voc_colormap

    rng = np.random.default_rng(0)
    (tmp_path / "gt").mkdir()
    (tmp_path / "pred" / "sub").mkdir(parents=True)
    pairs = []
    for i in range(3):
        gt = rng.integers(0, 21, (24, 32))
        gt[rng.random(gt.shape) < 0.1] = 255
        pred = np.where(rng.random(gt.shape) < 0.7, gt, rng.integers(0, 21, gt.shape))
        pred[gt == 255] = 3
        pred[0, :4] = 255  # no class: a miss
        img = Image.fromarray(gt.astype(np.uint8), mode="P")
        img.putpalette([c for rgb in voc_colormap(256) for c in rgb])
        img.save(tmp_path / "gt" / f"2007_00{i}.png")
        Image.fromarray(pred.astype(np.uint8)).save(tmp_path / "pred" / "sub" / f"2007_00{i}_trainIds.png")
        pairs.append((pred, np.where(gt == 255, -1, gt)))
    args = ["evaluate", "--classes", "voc", "--pred-ids", "train", "--pred", str(tmp_path / "pred")]
    assert main([*args, "--gt", str(tmp_path / "gt"), "--json", str(tmp_path / "s.json")]) == 0
    out = capsys.readouterr().out
    assert "voc evaluation (3 images)" in out and "mIoU (all 21 classes)" in out
    scores = json.loads((tmp_path / "s.json").read_text())
    assert scores["labels"] == "voc" and scores["cityscapesScripts"] is None
    assert scores["hrseg"]["mIoU"] == pytest.approx(_expected_miou(pairs, 21), abs=1e-12)


def test_evaluate_a_reduce_zero_label_set_in_raw_or_train_ids(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """ADE20K-style files: raw 0 is ignored, raw 1..3 are classes 0..2; predictions in either id space score
    the same, and a ground-truth value outside the table is one error line naming the file."""
    from hrseg.commands import main
    from hrseg.evaluation import evaluate_folder
    from hrseg.metadata import register_label_set

    labels = register_label_set(
        LabelSet(
            ("wall", "floor", "sky"), name="test_reduce_zero", id_to_train=((0, None), (1, 0), (2, 1), (3, 2))
        )
    )
    rng = np.random.default_rng(1)
    for folder in ("gt", "raw", "train"):
        (tmp_path / folder).mkdir()
    pairs = []
    for i in range(2):
        raw_gt = rng.integers(0, 4, (16, 20))
        raw_pred = np.where(rng.random(raw_gt.shape) < 0.6, raw_gt, rng.integers(0, 4, raw_gt.shape))
        Image.fromarray(raw_gt.astype(np.uint8)).save(tmp_path / "gt" / f"ADE_val_{i}.png")
        Image.fromarray(raw_pred.astype(np.uint8)).save(tmp_path / "raw" / f"ADE_val_{i}.png")
        train_pred = np.where(raw_pred == 0, 255, raw_pred - 1)  # raw 0 predicted: no class
        Image.fromarray(train_pred.astype(np.uint8)).save(tmp_path / "train" / f"ADE_val_{i}_trainIds.png")
        pairs.append((train_pred, raw_gt - 1))
    raw = evaluate_folder(tmp_path / "raw", tmp_path / "gt", labels=labels.name)
    train = evaluate_folder(tmp_path / "train", tmp_path / "gt", labels=labels, pred_ids="train")
    assert raw["hrseg"] == train["hrseg"] and raw["cityscapesScripts"] is None
    assert raw["hrseg"]["mIoU"] == pytest.approx(_expected_miou(pairs, 3), abs=1e-12)
    with pytest.raises(ValueError, match="cityscapesScripts scores Cityscapes only"):
        evaluate_folder(tmp_path / "raw", tmp_path / "gt", official=True, labels=labels)

    Image.fromarray(np.full((16, 20), 9, np.uint8)).save(tmp_path / "gt" / "ADE_val_0.png")
    args = [
        "evaluate",
        "--classes",
        labels.name,
        "--pred",
        str(tmp_path / "raw"),
        "--gt",
        str(tmp_path / "gt"),
    ]
    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ADE_val_0.png: values 9 are no label ids of test_reduce_zero" in err[0]
    assert main([*args[:2], "nope", *args[3:]]) == 1
    assert "nope" in capsys.readouterr().err
