"""``Segmenter``: loading a Lightning checkpoint and predicting every kind of input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hrseg.data import generate_scene
from hrseg.deploy import Segmenter
from hrseg.eval_protocol import EvalProtocol
from hrseg.inference import ModelMeta, build_from_meta, load_checkpoint, to_image_tensor
from hrseg.metadata import LabelSet

NUM_CLASSES = 19


@pytest.fixture(scope="module")
def seg(tiny_checkpoint: Path) -> Segmenter:
    return Segmenter.from_checkpoint(tiny_checkpoint)


@pytest.fixture(scope="module")
def scene() -> np.ndarray:
    rgb, _ = generate_scene(7, size=(53, 77))  # odd size: not a multiple of 4
    return rgb


def _check_mask(mask: np.ndarray, shape: tuple[int, int]) -> None:
    assert isinstance(mask, np.ndarray)
    assert mask.shape == shape and mask.dtype == np.int64
    assert mask.min() >= 0 and mask.max() < NUM_CLASSES


def test_from_checkpoint_reads_the_metadata(seg: Segmenter, tiny_checkpoint: Path) -> None:
    assert seg.num_classes == NUM_CLASSES
    assert seg.class_names[0] == "road" and len(seg.palette) == NUM_CLASSES
    assert tuple(seg.palette[0]) == (128, 64, 128)
    model, meta = load_checkpoint(tiny_checkpoint)
    assert meta.model == "hrnetv2_w18_small_v1" and not model.training


def test_numpy_rgb_pil_and_path_agree(seg: Segmenter, scene: np.ndarray, tmp_path: Path) -> None:
    path = tmp_path / "scene.png"
    Image.fromarray(scene).save(path)
    ref = seg.predict(scene)
    _check_mask(ref, scene.shape[:2])
    for other in (Image.fromarray(scene), path, str(path)):
        np.testing.assert_array_equal(seg.predict(other), ref)
    np.testing.assert_array_equal(seg.predict(scene.astype(np.float32) / 255.0), ref)


def test_tensor_inputs(seg: Segmenter, scene: np.ndarray) -> None:
    ref = seg.predict(scene)
    chw = torch.from_numpy(scene).permute(2, 0, 1).contiguous()
    out = seg.predict(chw)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.int64 and out.shape == scene.shape[:2]
    np.testing.assert_array_equal(out.numpy(), ref)
    np.testing.assert_array_equal(seg.predict(chw.float() / 255.0).numpy(), ref)
    batch = seg.predict(torch.stack([chw, chw.flip(-1)]))
    assert batch.shape == (2, *scene.shape[:2])
    np.testing.assert_array_equal(batch[0].numpy(), ref)
    grey = seg.predict(chw[0])  # HxW tensor
    assert grey.shape == scene.shape[:2]


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "LA", "I;16"])
def test_pil_modes(seg: Segmenter, scene: np.ndarray, mode: str) -> None:
    img = Image.fromarray(scene)
    if mode == "RGBA":
        img.putalpha(128)
    elif mode == "I;16":
        img = Image.fromarray((np.asarray(img.convert("L"), dtype=np.uint16) * 257).astype(np.uint16))
    else:
        img = img.convert(mode)
    _check_mask(seg.predict(img), scene.shape[:2])


def test_greyscale_and_rgba_numpy(seg: Segmenter, scene: np.ndarray) -> None:
    grey = np.asarray(Image.fromarray(scene).convert("L"))
    ref = seg.predict(grey)
    _check_mask(ref, grey.shape)
    np.testing.assert_array_equal(seg.predict(np.repeat(grey[..., None], 3, axis=2)), ref)
    rgba = np.dstack([scene, np.full(scene.shape[:2], 7, np.uint8)])
    np.testing.assert_array_equal(seg.predict(rgba), seg.predict(scene))  # alpha is ignored


@pytest.mark.parametrize("size", [(1, 1), (17, 5), (33, 200), (129, 31)])
def test_any_size(seg: Segmenter, size: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    _check_mask(seg.predict(rng.integers(0, 256, (*size, 3), dtype=np.uint8)), size)


def test_probabilities(seg: Segmenter, scene: np.ndarray) -> None:
    mask, probs = seg.predict(scene, return_probs=True)
    assert probs.shape == (NUM_CLASSES, *scene.shape[:2])
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(probs.argmax(axis=0), mask)


def test_fast_path_matches_plain_model(tiny_checkpoint: Path, scene: np.ndarray) -> None:
    fast = Segmenter.from_checkpoint(tiny_checkpoint, fast=True)
    plain = Segmenter.from_checkpoint(tiny_checkpoint, fast=False)
    x, _ = to_image_tensor(scene)
    np.testing.assert_allclose(fast.probabilities(x).numpy(), plain.probabilities(x).numpy(), atol=1e-4)


def test_sliding_window_and_tta_options(tiny_checkpoint: Path, scene: np.ndarray) -> None:
    big = np.tile(scene, (2, 3, 1))  # 106 x 231
    seg = Segmenter.from_checkpoint(
        tiny_checkpoint,
        protocol=EvalProtocol(mode="slide", window=(64, 96), scales=(0.75, 1.0), flip=True),
        batch_windows=2,
    )
    _check_mask(seg.predict(big), big.shape[:2])
    whole = Segmenter.from_checkpoint(tiny_checkpoint, protocol=EvalProtocol(mode="slide", window=(512, 512)))
    ref = Segmenter.from_checkpoint(tiny_checkpoint)
    np.testing.assert_array_equal(whole.predict(big), ref.predict(big))  # window >= image: whole forward


def test_predict_batch_and_colorize(seg: Segmenter, tmp_path: Path) -> None:
    paths = []
    for i, size in enumerate([(40, 60), (61, 33), (48, 48)]):
        rgb, _ = generate_scene(i, size=size)
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(rgb).save(paths[-1])
    masks = seg.predict_batch(paths)
    assert [m.shape for m in masks] == [(40, 60), (61, 33), (48, 48)]
    color = seg.colorize(masks[0])
    assert color.shape == (40, 60, 3) and color.dtype == np.uint8
    expected = np.asarray(seg.palette, dtype=np.uint8)[masks[0]]
    np.testing.assert_array_equal(color, expected)
    ignore = seg.colorize(np.full((2, 2), 255))
    assert (ignore == 0).all()
    overlay = seg.overlay(paths[0], masks[0])
    assert overlay.shape == (40, 60, 3)


def test_bad_inputs_fail_with_a_clear_message(seg: Segmenter, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"missing\.png"):
        seg.predict(tmp_path / "missing.png")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"broken\.png"):
        seg.predict(broken)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        seg.predict(np.full((8, 8, 3), 200.0, dtype=np.float32))
    with pytest.raises(ValueError, match="channels"):
        seg.predict(np.zeros((8, 8, 5), dtype=np.uint8))
    with pytest.raises(TypeError):
        seg.predict([[1, 2], [3, 4]])  # type: ignore[arg-type]


def test_checkpoint_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        Segmenter.from_checkpoint(tmp_path / "nope.ckpt")
    bad = tmp_path / "bad.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"lr": 0.1}}, bad)
    with pytest.raises(ValueError, match="model"):
        Segmenter.from_checkpoint(bad)


def test_model_meta_round_trip() -> None:
    meta = ModelMeta(
        model="hrnetv2_w18_small_v1", labels=LabelSet.generic(3), model_options={"fuse_mode": "nearest"}
    )
    again = ModelMeta.from_dict(__import__("json").loads(meta.to_json()))
    assert again == meta
    assert again.labels.class_names == ("class_0", "class_1", "class_2") and len(again.labels.palette) == 3
    assert build_from_meta(again).fuse_mode == "nearest"
