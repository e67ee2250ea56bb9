"""PASCAL-Context, 59 classes: the labelling most papers use, background ignored (reduce_zero_label).

Class order, names and colours: mmsegmentation's ``PascalContextDataset59``; the classes are the 59 of the
459-class release picked by their ids (``SOURCE_IDS``: the official HRNet ``lib/datasets/pascal_ctx.py`` and
mmsegmentation's converter, as a sorted ``_mapping`` table). Files hold the 60-class values (0 background,
1..59 the classes): ``hrseg data convert --datamodule pascal_context_59`` writes them, mmsegmentation's
``SegmentationClassContext`` PNGs hold them too (docs/reference/datasets.md "PASCAL-Context").
"""

from __future__ import annotations

from typing import Any

#: (name, id in the 459-class ``labels.txt``), in train-id order (the order of the sorted ids)
CLASSES: tuple[tuple[str, int], ...] = (
    ("aeroplane", 2), ("bag", 9), ("bed", 18), ("bedclothes", 19), ("bench", 22), ("bicycle", 23),
    ("bird", 25), ("boat", 31), ("book", 33), ("bottle", 34), ("building", 44), ("bus", 45),
    ("cabinet", 46), ("car", 59), ("cat", 65), ("ceiling", 68), ("chair", 72), ("cloth", 80),
    ("computer", 85), ("cow", 98), ("cup", 104), ("curtain", 105), ("dog", 113), ("door", 115),
    ("fence", 144), ("floor", 158), ("flower", 159), ("food", 162), ("grass", 187), ("ground", 189),
    ("horse", 207), ("keyboard", 220), ("light", 232), ("motorbike", 258), ("mountain", 259),
    ("mouse", 260), ("person", 284), ("plate", 295), ("platform", 296), ("pottedplant", 308),
    ("road", 324), ("rock", 326), ("sheep", 347), ("shelves", 349), ("sidewalk", 354), ("sign", 355),
    ("sky", 360), ("snow", 366), ("sofa", 368), ("table", 397), ("track", 415), ("train", 416),
    ("tree", 420), ("truck", 424), ("tvmonitor", 427), ("wall", 440), ("water", 445), ("window", 454),
    ("wood", 458),
)  # fmt: skip

#: mmsegmentation's PASCAL-Context colours: background first, then the 59 classes
PALETTE_60: tuple[tuple[int, int, int], ...] = (
    (120, 120, 120), (180, 120, 120), (6, 230, 230), (80, 50, 50), (4, 200, 3), (120, 120, 80),
    (140, 140, 140), (204, 5, 255), (230, 230, 230), (4, 250, 7), (224, 5, 255), (235, 255, 7),
    (150, 5, 61), (120, 120, 70), (8, 255, 51), (255, 6, 82), (143, 255, 140), (204, 255, 4),
    (255, 51, 7), (204, 70, 3), (0, 102, 200), (61, 230, 250), (255, 6, 51), (11, 102, 255),
    (255, 7, 71), (255, 9, 224), (9, 7, 230), (220, 220, 220), (255, 9, 92), (112, 9, 255),
    (8, 255, 214), (7, 255, 224), (255, 184, 6), (10, 255, 71), (255, 41, 10), (7, 255, 255),
    (224, 255, 8), (102, 8, 255), (255, 61, 6), (255, 194, 7), (255, 122, 8), (0, 255, 20),
    (255, 8, 41), (255, 5, 153), (6, 51, 255), (235, 12, 255), (160, 150, 20), (0, 163, 255),
    (140, 140, 140), (250, 10, 15), (20, 255, 0), (31, 255, 0), (255, 31, 0), (255, 224, 0),
    (153, 255, 0), (0, 0, 255), (255, 71, 0), (0, 235, 255), (0, 173, 255), (31, 0, 255),
)  # fmt: skip

LABEL_SET: dict[str, Any] = {
    "name": "pascal_context_59",
    "class_names": tuple(name for name, _ in CLASSES),
    "palette": PALETTE_60[1:],
    # 60-class files: 0 (background, every other class, unlabelled) ignored, 1..59 -> 0..58; 255 stays ignored
    "id_to_train": ((0, None), *((k + 1, k) for k in range(len(CLASSES))), (255, None)),
}
