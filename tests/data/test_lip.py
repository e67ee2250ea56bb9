"""LIP: the distributed TrainVal trees, the training flip that swaps left/right parts, the 473x473 resize,
and every bad file named by ``hrseg data check``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hrseg.colors import denormalize
from hrseg.commands.data import main as data_main
from hrseg.data import DatasetError
from hrseg.data.checks import read_image
from hrseg.data.lip import LIPDataModule
from hrseg.metadata import get_label_set

# lib/datasets/lip.py: right_idx [15, 17, 19] and left_idx [14, 16, 18] trade places in a flipped label map
SWAP = {14: 15, 15: 14, 16: 17, 17: 16, 18: 19, 19: 18}
SIZE = (24, 44)  # (H, W): two columns per value 0..19, then a band of 255


def _mask(shift: int) -> np.ndarray:
    mask = np.full(SIZE, 255, dtype=np.uint8)
    for v in range(20):
        mask[:, 2 * v : 2 * v + 2] = v
    mask[SIZE[0] // 2 :, :40] = np.roll(mask[SIZE[0] // 2 :, :40], 2 * shift, axis=1)
    return mask


def make_lip_tree(root: Path, ids: dict[str, list[str]] | None = None) -> Path:
    """``TrainVal_images/{split}_images/<id>.jpg`` + ``{split}_id.txt`` and the parsing annotations."""
    ids = ids or {"train": ["100034_483681", "10005_205677"], "val": ["100142_449784"]}
    rng = np.random.default_rng(1)
    for split, names in ids.items():
        img_dir = root / "TrainVal_images" / f"{split}_images"
        seg_dir = root / "TrainVal_parsing_annotations" / f"{split}_segmentations"
        img_dir.mkdir(parents=True, exist_ok=True)
        seg_dir.mkdir(parents=True, exist_ok=True)
        (root / "TrainVal_images" / f"{split}_id.txt").write_text("".join(f"{n}\n" for n in names))
        for i, name in enumerate(names):
            Image.fromarray(rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8)).save(img_dir / f"{name}.jpg")
            Image.fromarray(_mask(i), mode="L").save(seg_dir / f"{name}.png")
    return root


def _dm(root: Path, **kw) -> LIPDataModule:
    options = {"crop_size": None, "train_resize": None, "scale_range": None, "num_workers": 0}
    return LIPDataModule(root=str(root), **{**options, **kw})


def test_label_set() -> None:
    labels = get_label_set("lip")
    assert labels.num_classes == 20 and labels.ignore_index == 255 and labels.class_names[0] == "background"
    assert [labels.class_names[i] for i in (14, 15, 18, 19)] == [
        "left-arm",
        "right-arm",
        "left-shoe",
        "right-shoe",
    ]
    assert labels.flip_permutation() == [SWAP.get(i, i) for i in range(20)]


def test_masks_read_as_class_ids(tmp_path: Path) -> None:
    root = make_lip_tree(tmp_path)
    ds = _dm(root).build_dataset("val", train=False)
    assert [s.name for s in ds.samples] == ["100142_449784"]
    image, mask, _ = ds.load(0)
    assert image.shape == (*SIZE, 3)
    np.testing.assert_array_equal(mask, _mask(0))  # 0 background is a class, 255 ignored


def test_training_flip_swaps_left_and_right_classes(tmp_path: Path) -> None:
    root = make_lip_tree(tmp_path)
    sample = LIPDataModule(root=str(root)).samples("train")[1]
    raw_image, raw_mask = read_image(sample.image), _mask(1)
    flipped = _dm(root, hflip_prob=1.0).build_dataset("train", train=True)[1]
    expected = np.vectorize(lambda v: SWAP.get(int(v), int(v)))(raw_mask[:, ::-1])
    np.testing.assert_array_equal(flipped["mask"].numpy(), expected)
    # the image is mirrored with its mask (denormalised back to the decoded JPEG)
    np.testing.assert_allclose(denormalize(flipped["image"].numpy()), raw_image[:, ::-1], atol=1)
    kept = _dm(root, hflip_prob=0.0).build_dataset("train", train=True)[1]
    np.testing.assert_array_equal(kept["mask"].numpy(), raw_mask)
    np.testing.assert_allclose(denormalize(kept["image"].numpy()), raw_image, atol=1)


def test_flip_draws_image_and_mask_together(tmp_path: Path) -> None:
    root = make_lip_tree(tmp_path)
    ds = _dm(root, hflip_prob=0.5).build_dataset("train", train=True)
    raw = _mask(0)
    outcomes = set()
    for seed in range(24):
        item = ds[(0, seed)]  # the training loader's (index, seed) keys
        mask = item["mask"].numpy()
        flipped = not np.array_equal(mask, raw)
        if flipped:
            np.testing.assert_array_equal(
                mask, np.vectorize(lambda v: SWAP.get(int(v), int(v)))(raw[:, ::-1])
            )
        image = read_image(ds.samples[0].image)
        np.testing.assert_allclose(
            denormalize(item["image"].numpy()), image[:, ::-1] if flipped else image, atol=1
        )
        outcomes.add(flipped)
    assert outcomes == {True, False}


def test_official_resize_then_scale_and_crop(tmp_path: Path) -> None:
    root = make_lip_tree(tmp_path)
    resized = _dm(root, train_resize=(30, 16), hflip_prob=0.0).build_dataset("train", train=True)[0]
    assert resized["image"].shape == (3, 30, 16) and resized["mask"].shape == (30, 16)  # aspect not kept
    assert set(torch.unique(resized["mask"]).tolist()) <= set(range(20)) | {255}
    dm = LIPDataModule(root=str(root), crop_size=(20, 20), train_resize=(20, 20), num_workers=0)
    assert dm.scale_range == (0.5, 1.6)  # SCALE_FACTOR 11: 0.5 + k / 10, k = 0..11
    item = dm.build_dataset("train", train=True)[0]
    assert item["image"].shape == (3, 20, 20) and item["mask"].shape == (20, 20)


def test_bad_split_and_missing_tree(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="train_split must be one of"):
        LIPDataModule(root=str(tmp_path), train_split="test")
    with pytest.raises(DatasetError, match=r"train_id\.txt: LIP id list not found"):
        LIPDataModule(root=str(tmp_path)).setup("fit")


def test_data_check_names_each_bad_file(tmp_path: Path, capsys) -> None:
    ids = ["1_1", "2_2", "3_3", "4_4", "5_5", "6_6"]
    root = make_lip_tree(tmp_path, {"train": ids, "val": ["7_7"]})
    seg = root / "TrainVal_parsing_annotations" / "train_segmentations"
    (root / "TrainVal_images" / "train_images" / "1_1.jpg").unlink()  # missing image
    (seg / "2_2.png").unlink()  # missing label
    Image.fromarray(np.full(SIZE, 20, dtype=np.uint8), mode="L").save(seg / "3_3.png")  # 20: no LIP class
    (seg / "4_4.png").write_bytes(b"\x89PNG broken")  # corrupt
    Image.fromarray(np.zeros((5, 5), dtype=np.uint8), mode="L").save(seg / "5_5.png")  # wrong size
    code = data_main(["check", "--datamodule", "lip", "--root", str(root), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 1
    assert "1_1.jpg: image listed in" in out
    assert "2_2.png: missing label" in out
    assert "3_3.png: label values out of range: 20" in out
    assert "4_4.png:" in out
    assert "5_5.png: size mismatch" in out
    assert "FAILED: 5 problem(s)" in out


def test_synth_layout_reads_back(tmp_path: Path, capsys) -> None:
    out = tmp_path / "lip"
    assert data_main(["synth", "--layout", "lip", "--output", str(out), "--num", "2", "--size", "48x32",
                      "--no-progress"]) == 0  # fmt: skip
    assert data_main(["check", "--datamodule", "lip", "--root", str(out), "--no-progress"]) == 0
    assert "OK: no problems found" in capsys.readouterr().out
    assert (out / "TrainVal_images/val_id.txt").read_text().count("\n") == 1


def test_predict_with_lip_classes(tmp_path: Path) -> None:
    """``--classes lip`` describes released 20-class weights: predictions are written in the LIP palette."""
    from hrseg import build_model
    from hrseg.commands import main

    torch.manual_seed(0)
    weights = tmp_path / "lip_w18_small.pth"
    torch.save(build_model("hrnetv2_w18_small_v1", num_classes=20).state_dict(), weights)
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 48, 3), dtype=np.uint8)).save(
        tmp_path / "p.png"
    )
    args = ["predict", "--ckpt_path", str(weights), "--model", "hrnetv2_w18_small_v1", "--classes", "lip"]
    assert main([*args, "--input", str(tmp_path / "p.png"), "--output", str(tmp_path / "out")]) == 0
    ids = np.asarray(Image.open(tmp_path / "out" / "p_trainIds.png"))
    color = np.asarray(Image.open(tmp_path / "out" / "p_color.png").convert("RGB"))
    palette = np.array(get_label_set("lip").palette, dtype=np.uint8)
    assert ids.shape == (32, 48) and ids.max() < 20
    np.testing.assert_array_equal(color, palette[ids])
