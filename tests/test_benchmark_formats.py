"""Benchmark prediction formats and the official evaluator.

Cityscapes: ``write_prediction(format="cityscapes")`` writes ``<city>_<seq>_<frame>_labelIds.png`` from train
ids through the official table; ``hrseg evaluate`` scores a folder with hrseg's metric and cityscapesScripts'
evaluator, which must agree (cityscapesScripts averages over the classes present: hrseg's ``mIoU_present``).
VOC: indexed PNGs in the VOC colour map.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hrseg.commands import main
from hrseg.data import write_cityscapes
from hrseg.deploy import write_prediction
from hrseg.deploy.writer import cityscapes_stem
from hrseg.evaluation import evaluate_folder, match_predictions
from hrseg.metadata import get_label_set, voc_colormap


@pytest.fixture(scope="module")
def cityscapes_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Generated Cityscapes val split; the "train" class removed from the ground truth (-> "car")."""
    root = tmp_path_factory.mktemp("cs")
    write_cityscapes(root, 0, 4, num_test=0, size=(64, 128), progress=False)
    for gt in (root / "gtFine" / "val").rglob("*_gtFine_labelIds.png"):
        ids = np.asarray(Image.open(gt)).copy()
        ids[ids == 31] = 26  # train -> car: a class absent from ground truth (and predictions below)
        Image.fromarray(ids).save(gt)
    return root


def _noisy_predictions(root: Path, out: Path, seed: int = 0) -> None:
    """Predictions from the ground truth with 25% random errors, never "train"."""
    lut = get_label_set("cityscapes").lookup_table()
    rng = np.random.default_rng(seed)
    palette = [(0, 0, 0)] * 19
    for gt in sorted((root / "gtFine" / "val").rglob("*_gtFine_labelIds.png")):
        tid = lut[np.asarray(Image.open(gt))].astype(np.int64)
        pred = np.where(tid == 255, rng.integers(0, 19, tid.shape), tid)
        noise = rng.random(tid.shape) < 0.25
        pred[noise] = rng.integers(0, 19, int(noise.sum()))
        names = get_label_set("cityscapes").class_names
        pred[pred == names.index("train")] = names.index("car")
        name = gt.parent.name + "/" + gt.name.replace("_gtFine_labelIds.png", "_leftImg8bit")
        write_prediction(out, name, pred, palette, format="cityscapes")


def test_label_ids_png_round_trips_to_train_ids(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    train_ids = rng.integers(0, 19, (37, 53))
    paths = write_prediction(tmp_path, "aachen_000001_000019_leftImg8bit", train_ids, [], format="cityscapes")
    assert list(paths) == ["labelIds"] and paths["labelIds"].name == "aachen_000001_000019_labelIds.png"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["aachen_000001_000019_labelIds.png"]  # nothing else
    label_ids = np.asarray(Image.open(paths["labelIds"]))
    assert label_ids.dtype == np.uint8 and set(np.unique(label_ids)) <= {
        7,
        8,
        *range(11, 14),
        *range(17, 29),
        31,
        32,
        33,
    }
    np.testing.assert_array_equal(get_label_set("cityscapes").lookup_table()[label_ids], train_ids)
    assert cityscapes_stem("frankfurt/frankfurt_000000_000294_leftImg8bit") == "frankfurt_000000_000294"
    with pytest.raises(ValueError, match="not a Cityscapes image name"):
        write_prediction(tmp_path, "street", train_ids, [], format="cityscapes")
    with pytest.raises(ValueError, match=r"train ids 0\.\.18"):
        write_prediction(tmp_path, "aachen_000001_000019", np.full((4, 4), 19), [], format="cityscapes")


def test_voc_palette_png(tmp_path: Path) -> None:
    labels = np.random.default_rng(2).integers(0, 21, (20, 30))
    labels[0] = 255  # a boundary
    path = write_prediction(tmp_path, "2007_000033", labels, [], format="voc")["voc"]
    img = Image.open(path)
    assert path.name == "2007_000033.png" and img.mode == "P"
    np.testing.assert_array_equal(np.asarray(img), labels)
    palette = img.getpalette()
    assert palette is not None and [tuple(palette[3 * i : 3 * i + 3]) for i in (0, 1, 15, 255)] == [
        tuple(voc_colormap(256)[i]) for i in (0, 1, 15, 255)
    ]


def test_hrseg_miou_equals_cityscapesscripts(cityscapes_root: Path, tmp_path: Path) -> None:
    pytest.importorskip("cityscapesscripts")
    _noisy_predictions(cityscapes_root, tmp_path / "preds")
    result = evaluate_folder(tmp_path / "preds", cityscapes_root / "gtFine" / "val")
    ours, theirs = result["hrseg"], result["cityscapesScripts"]
    assert ours["images"] == 4
    assert abs(ours["mIoU_present"] - theirs["mIoU_classes"]) < 1e-6
    absent = [name for name in ours["iou"] if np.isnan(theirs["iou"][name])]
    assert "train" in absent  # absent from ground truth and predictions: cityscapesScripts skips it
    for name, iou in ours["iou"].items():
        if name in absent:
            assert iou == 0.0, name  # ... and hrseg's official mIoU counts it 0
        else:
            assert abs(iou - theirs["iou"][name]) < 1e-6, name
    present = 19 - len(absent)
    assert abs(ours["mIoU"] - ours["mIoU_present"] * present / 19) < 1e-9  # the official HRNet mean over 19


def test_predictions_of_non_class_ids_count_as_misses(cityscapes_root: Path, tmp_path: Path) -> None:
    """A submission may hold label ids outside the 19 classes (e.g. 0): misses, as in cityscapesScripts."""
    pytest.importorskip("cityscapesscripts")
    gt_dir = cityscapes_root / "gtFine" / "val"
    for gt in gt_dir.rglob("*_gtFine_labelIds.png"):
        ids = np.asarray(Image.open(gt)).copy()
        ids[:10] = 0  # "unlabeled"
        Image.fromarray(ids).save(tmp_path / gt.name.replace("_gtFine_labelIds", "_pred"))
    result = evaluate_folder(tmp_path, gt_dir)
    assert abs(result["hrseg"]["mIoU_present"] - result["cityscapesScripts"]["mIoU_classes"]) < 1e-6
    assert result["hrseg"]["mIoU_present"] < 1.0


def test_matching_errors_name_the_files(cityscapes_root: Path, tmp_path: Path) -> None:
    gt_dir = cityscapes_root / "gtFine" / "val"
    with pytest.raises(FileNotFoundError, match="4 of 4 ground-truth images have no prediction"):
        match_predictions(tmp_path, gt_dir)
    _noisy_predictions(cityscapes_root, tmp_path / "a")
    extra = next((tmp_path / "a").rglob("*.png"))
    (tmp_path / "a" / extra.name.replace("_labelIds", "_color")).write_bytes(extra.read_bytes())
    with pytest.raises(ValueError, match="several predictions"):
        match_predictions(tmp_path / "a", gt_dir)


def test_predict_cityscapes_format_then_evaluate_cli(
    tiny_checkpoint: Path, cityscapes_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("cityscapesscripts")
    out = tmp_path / "submission"
    images = cityscapes_root / "leftImg8bit" / "val"
    pattern = str(images / "*" / "*_leftImg8bit.png")  # the city folders, as for the benchmark
    argv = ["predict", "--ckpt_path", str(tiny_checkpoint), "--input", pattern, "--output", str(out)]
    assert main([*argv, "--format", "cityscapes", "--no-progress"]) == 0
    written = sorted(p.name for p in out.rglob("*"))
    assert written == sorted(
        p.name.replace("_leftImg8bit", "_labelIds") for p in images.rglob("*_leftImg8bit.png")
    )
    capsys.readouterr()
    scores = tmp_path / "scores.json"
    gt = cityscapes_root / "gtFine" / "val"
    assert main(["evaluate", "--pred", str(out), "--gt", str(gt), "--json", str(scores)]) == 0
    printed = capsys.readouterr().out
    assert "mIoU (classes present)" in printed and "cityscapesScripts" in printed
    import json

    data = json.loads(scores.read_text())
    assert abs(data["hrseg"]["mIoU_present"] - data["cityscapesScripts"]["mIoU_classes"]) < 1e-6
    with pytest.raises(SystemExit):
        main([*argv, "--format", "cityscapes", "--overlay"])
