"""PASCAL-Context 59 / 60: the .mat release converted by ``hrseg data convert``, mmsegmentation's PNGs, the
class mapping pixel by pixel, and every bad file named by ``convert`` and ``check``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from hrseg.commands.data import main as data_main
from hrseg.data import DatasetError
from hrseg.data.pascal_context import PascalContext59DataModule, PascalContext60DataModule
from hrseg.metadata import get_label_set

# The official table of 459-class ids (lib/datasets/pascal_ctx.py, mmsegmentation's converter), written out
# here in its published (unsorted) order: sorted, position k is the 60-class value k (0 = background).
OFFICIAL_MAPPING = [
    0, 2, 259, 260, 415, 324, 9, 258, 144, 18, 19, 22, 23, 397, 25, 284, 158, 159, 416, 33, 162, 420, 454,
    295, 296, 427, 44, 45, 46, 308, 59, 440, 445, 31, 232, 65, 354, 424, 68, 326, 72, 458, 34, 207, 80, 355,
    85, 347, 220, 349, 360, 98, 187, 104, 105, 366, 189, 368, 113, 115,
]  # fmt: skip
VALUE_OF = {source: value for value, source in enumerate(sorted(OFFICIAL_MAPPING))}
UNMAPPED = (1, 3, 300, 459)  # accordion, another class, ..., the last id: background after conversion
SIZE = (16, 70)  # (H, W): one column per id of the table and the unmapped ones, the rest 0


def _label_map(shift: int) -> np.ndarray:
    ids = sorted(OFFICIAL_MAPPING) + list(UNMAPPED)
    out = np.zeros(SIZE, dtype=np.uint16)
    for k, source in enumerate(ids):
        out[: SIZE[0] // 2, k] = source
    out[SIZE[0] // 2 :, : len(ids)] = np.roll(out[0, : len(ids)], shift)  # another arrangement below
    return out


def make_context_tree(root: Path, ids: dict[str, list[str]] | None = None, mat: bool = True) -> Path:
    """``VOCdevkit/VOC2010`` with JPEGImages, ImageSets/Main lists and ``trainval/<id>.mat`` label maps."""
    ids = ids or {"train": ["2008_000002", "2008_000003"], "val": ["2010_000001"]}
    voc = root / "VOCdevkit" / "VOC2010"
    for sub in ("JPEGImages", "ImageSets/Main", "trainval"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, names in ids.items():
        (voc / "ImageSets/Main" / f"{split}.txt").write_text("".join(f"{n}\n" for n in names))
        for i, name in enumerate(names):
            Image.fromarray(rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8)).save(
                voc / "JPEGImages" / f"{name}.jpg"
            )
            if mat:
                scipy.io.savemat(str(voc / "trainval" / f"{name}.mat"), {"LabelMap": _label_map(i + 3)})
    return root


def _convert(root: Path, *extra: str) -> int:
    return data_main(
        ["convert", "--datamodule", "pascal_context_59", "--root", str(root), "--no-progress", *extra]
    )


def _expected(label_map: np.ndarray, classes: int) -> np.ndarray:
    """The train ids of a 459-class map, pixel by pixel from the official table."""
    out = np.zeros(label_map.shape, dtype=np.int64)
    for (y, x), source in np.ndenumerate(label_map):
        value = VALUE_OF.get(int(source), 0)
        out[y, x] = value if classes == 60 else (value - 1 if value else 255)
    return out


def test_label_sets_follow_the_official_table() -> None:
    for name, classes in (("pascal_context_59", 59), ("pascal_context_60", 60)):
        labels = get_label_set(name)
        assert labels.num_classes == classes and len(set(labels.class_names)) == classes
        assert len(labels.palette) == classes and labels.ignore_index == 255
    names_60 = get_label_set("pascal_context_60").class_names
    assert names_60[0] == "background" and names_60[1:] == get_label_set("pascal_context_59").class_names
    assert names_60[VALUE_OF[2]] == "aeroplane" and names_60[VALUE_OF[284]] == "person"
    assert names_60[VALUE_OF[458]] == "wood" and names_60[VALUE_OF[427]] == "tvmonitor"


@pytest.mark.parametrize("dm_class", [PascalContext59DataModule, PascalContext60DataModule])
def test_mat_release_converted_and_mapped(tmp_path: Path, dm_class, capsys) -> None:
    root = make_context_tree(tmp_path / "ctx")
    assert _convert(root) == 0
    out = capsys.readouterr().out
    assert "3 written" in out and "OK" in out
    dm = dm_class(root=str(root), num_workers=0)
    classes = dm.labels.num_classes
    for split, count in (("train", 2), ("val", 1)):
        ds = dm.build_dataset(split, train=False)
        assert len(ds) == count
        for i, sample in enumerate(ds.samples):
            raw = scipy.io.loadmat(str(tmp_path / "ctx/VOCdevkit/VOC2010/trainval" / f"{sample.name}.mat"))
            image, mask, _ = ds.load(i)
            assert image.shape[:2] == mask.shape == SIZE
            expected = _expected(raw["LabelMap"], classes)
            np.testing.assert_array_equal(mask, expected)
            # every class occurs, the unmapped ids and 0 are background (59: ignored)
            assert set(np.unique(mask)) == set(range(classes)) | ({255} if classes == 59 else set())
    assert _convert(root) == 0  # a second run keeps what is there
    assert "0 written, 3 already there" in capsys.readouterr().out


def test_mmsegmentation_pngs_and_lists_read_directly(tmp_path: Path) -> None:
    """``SegmentationClassContext`` PNGs of 60-class values with ``ImageSets/SegmentationContext`` lists."""
    root = make_context_tree(tmp_path, mat=False)
    voc = root / "VOCdevkit" / "VOC2010"
    (voc / "ImageSets/SegmentationContext").mkdir(parents=True)
    (voc / "ImageSets/SegmentationContext/train.txt").write_text("2008_000003\n")  # preferred to Main
    (voc / "SegmentationClassContext").mkdir()
    values = np.tile(np.arange(60, dtype=np.uint8), (SIZE[0], 2))[:, : SIZE[1]]
    for name in ("2008_000002", "2008_000003", "2010_000001"):
        Image.fromarray(values, mode="L").save(voc / "SegmentationClassContext" / f"{name}.png")
    for dm_class, expected in (
        (PascalContext60DataModule, values.astype(np.int64)),
        (PascalContext59DataModule, np.where(values == 0, 255, values.astype(np.int64) - 1)),
    ):
        ds = dm_class(root=str(voc), num_workers=0).build_dataset(
            "train", train=False
        )  # root: VOC2010 itself
        assert [s.name for s in ds.samples] == ["2008_000003"]
        np.testing.assert_array_equal(ds.load(0)[1], expected)


def test_convert_names_every_bad_file_and_leaves_no_partial_output(tmp_path: Path, capsys) -> None:
    root = make_context_tree(
        tmp_path, {"train": ["2008_000002", "2008_000003", "2008_000004", "2008_000005"]}
    )
    mats = root / "VOCdevkit/VOC2010/trainval"
    (mats / "2008_000003.mat").write_bytes(b"MATLAB 5.0 MAT-file, truncated")
    scipy.io.savemat(str(mats / "2008_000004.mat"), {"S": np.zeros(SIZE, dtype=np.uint16)})
    scipy.io.savemat(str(mats / "2008_000005.mat"), {"LabelMap": np.full(SIZE, 460, dtype=np.uint16)})
    assert _convert(root) == 1
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if ".mat:" in line]
    assert len(lines) == 3  # one line per bad file
    assert any("2008_000003.mat: cannot read the .mat file" in line for line in lines)
    assert any("2008_000004.mat: no 2-D integer 'LabelMap'" in line and "'S'" in line for line in lines)
    assert any("2008_000005.mat: LabelMap ids outside 0..459" in line for line in lines)
    assert "1 written" in out and "FAILED: 3 file(s) not converted" in out
    written = sorted(p.name for p in (root / "VOCdevkit/VOC2010/SegmentationClassContext").iterdir())
    assert written == ["2008_000002.png"]  # no output, partial or temporary, for the bad inputs


def test_convert_refuses_another_labelling_and_a_missing_release(tmp_path: Path, capsys) -> None:
    assert data_main(["convert", "--datamodule", "pascal_context_60"]) == 2
    assert "--datamodule pascal_context_60 needs --root" in capsys.readouterr().err
    assert data_main(["convert", "--datamodule", "voc", "--root", str(tmp_path)]) == 2  # VOC needs none
    assert _convert(tmp_path) == 1  # no VOC2010 tree
    assert "no PASCAL VOC 2010 tree" in capsys.readouterr().err
    root = make_context_tree(tmp_path / "ctx", mat=False)
    assert _convert(root) == 1
    err = capsys.readouterr().err
    assert "trainval: no PASCAL-Context .mat files" in err and len(err.strip().splitlines()) == 1
    root = make_context_tree(tmp_path / "ctx2")
    (root / "VOCdevkit/VOC2010/labels.txt").write_text("1: accordion\n2: bottle\n")
    assert _convert(root) == 1
    err = capsys.readouterr().err
    assert "labels.txt: not the 459-class labelling" in err and "id 2 is 'bottle'" in err
    assert not (root / "VOCdevkit/VOC2010/SegmentationClassContext").exists()


def test_unconverted_release_points_to_convert(tmp_path: Path) -> None:
    root = make_context_tree(tmp_path)
    with pytest.raises(DatasetError, match="hrseg data convert --datamodule pascal_context_60"):
        PascalContext60DataModule(root=str(root), num_workers=0).setup("validate")


def test_data_check_names_each_bad_file(tmp_path: Path, capsys) -> None:
    ids = ["2008_000002", "2008_000003", "2008_000004", "2008_000005", "2008_000006"]
    root = make_context_tree(tmp_path, {"train": ids, "val": ["2010_000001"]})
    assert _convert(root) == 0
    voc = root / "VOCdevkit" / "VOC2010"
    masks = voc / "SegmentationClassContext"
    (masks / "2008_000002.png").unlink()  # missing label
    Image.fromarray(np.full(SIZE, 61, dtype=np.uint8), mode="L").save(
        masks / "2008_000003.png"
    )  # out of range
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8), mode="L").save(masks / "2008_000004.png")  # wrong size
    (masks / "2008_000005.png").write_bytes(b"not a png")  # corrupt
    (voc / "JPEGImages" / "2008_000006.jpg").unlink()  # missing image
    capsys.readouterr()
    code = data_main(["check", "--datamodule", "pascal_context_59", "--root", str(root), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 1
    assert "2008_000002.png: missing label" in out
    assert "2008_000003.png: label values out of range: 61" in out
    assert "2008_000004.png: size mismatch" in out
    assert "2008_000005.png:" in out
    assert "2008_000006.jpg: image listed in" in out
    assert "split 'val': 1 samples (1 with masks)" in out and "FAILED: 5 problem(s)" in out
