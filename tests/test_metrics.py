"""Metrics: hand-computed confusion matrix, ignore pixels, an absent class, whole-split accumulation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torchmetrics.classification import MulticlassJaccardIndex

from hrseg.metrics import SegmentationMetrics, confusion_matrix_scores, metric_key, scores_to_log_dict

IGNORE = 255


def test_known_predictions_against_hand_computed_matrix():
    # 4 classes; class 3 appears in neither prediction nor ground truth (official: IoU 0 in the mean).
    target = torch.tensor([[0, 0, 1, 1], [2, 2, IGNORE, 0]])
    preds = torch.tensor([[0, 1, 1, 1], [2, 0, 3, 0]])  # the "3" sits on an ignore pixel: not counted
    metric = SegmentationMetrics(num_classes=4, ignore_index=IGNORE)
    metric.update(preds.unsqueeze(0), target.unsqueeze(0))
    out = metric.compute()
    # rows = ground truth, cols = prediction, ignore pixel dropped
    expected = torch.tensor(
        [
            [2, 1, 0, 0],  # gt 0: pred 0, 1, 0
            [0, 2, 0, 0],  # gt 1: pred 1, 1
            [1, 0, 1, 0],  # gt 2: pred 2, 0
            [0, 0, 0, 0],
        ]
    )
    assert torch.equal(out["confmat"], expected)
    # IoU_c = TP / (TP + FP + FN)
    iou = torch.tensor([2 / (3 + 3 - 2), 2 / (2 + 3 - 2), 1 / (2 + 1 - 1), 0.0])
    torch.testing.assert_close(out["iou"], iou)
    torch.testing.assert_close(out["mIoU"], iou.mean())  # absent class 3 pulls the mean down
    torch.testing.assert_close(out["mIoU_present"], iou[:3].mean())  # cityscapesScripts-style average
    torch.testing.assert_close(out["pixel_acc"], torch.tensor(5 / 7))
    torch.testing.assert_close(out["mean_acc"], torch.tensor((2 / 3 + 1.0 + 0.5 + 0.0) / 4))


def test_matches_torchmetrics_with_zero_division_zero():
    g = torch.Generator().manual_seed(1)
    preds = torch.randint(0, 6, (3, 20, 20), generator=g)
    target = torch.randint(0, 5, (3, 20, 20), generator=g)  # class 5 never in the ground truth
    target[:, :3] = IGNORE
    ours = SegmentationMetrics(6, IGNORE)
    ref = MulticlassJaccardIndex(num_classes=6, ignore_index=IGNORE, average=None, zero_division=0)
    for i in range(3):  # accumulated over the split, not averaged per image
        ours.update(preds[i : i + 1], target[i : i + 1])
        ref.update(preds[i : i + 1], target[i : i + 1])
    torch.testing.assert_close(ours.compute()["iou"], ref.compute())


def test_accumulates_over_split_not_per_image():
    metric = SegmentationMetrics(2, IGNORE)
    # image 1: perfect on a big class-0 image; image 2: all wrong on a tiny image
    metric.update(torch.zeros(1, 10, 10, dtype=torch.long), torch.zeros(1, 10, 10, dtype=torch.long))
    metric.update(torch.zeros(1, 1, 2, dtype=torch.long), torch.ones(1, 1, 2, dtype=torch.long))
    out = metric.compute()
    torch.testing.assert_close(out["iou"], torch.tensor([100 / 102, 0.0]))
    torch.testing.assert_close(out["pixel_acc"], torch.tensor(100 / 102))


def test_logits_are_argmaxed_and_reset_clears():
    metric = SegmentationMetrics(3, IGNORE)
    logits = torch.zeros(1, 3, 2, 2)
    logits[:, 2] = 1.0
    metric.update(logits, torch.full((1, 2, 2), 2))
    assert float(metric.compute()["mIoU"]) == pytest.approx(1 / 3)
    metric.reset()
    assert int(metric.confmat.sum()) == 0


def test_out_of_range_labels_raise_on_compute():
    metric = SegmentationMetrics(3, IGNORE)
    metric.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.tensor([[[0, 7], [1, IGNORE]]]))
    with pytest.raises(ValueError, match="outside"):
        metric.compute()


def test_log_dict_keys_use_class_names():
    scores = confusion_matrix_scores(torch.eye(3, dtype=torch.long))
    logged = scores_to_log_dict(scores, "val", ["road", "traffic light", "sky"])
    assert set(logged) == {
        "val/mIoU",
        "val/mIoU_present",
        "val/pixel_acc",
        "val/mean_acc",
        "val/iou_road",
        "val/iou_traffic_light",
        "val/iou_sky",
    }
    assert metric_key(" motor-cycle ") == "motor_cycle"


def test_no_class_present_has_one_answer_everywhere(tmp_path: Path) -> None:
    """An empty split (every pixel ignored) scores 0, mIoU_present too: training metrics, the rectangular
    (void-column) matrix of ``hrseg evaluate`` and ``hrseg_scores`` agree."""
    from PIL import Image

    from hrseg.evaluation import hrseg_scores

    metric = SegmentationMetrics(3, ignore_index=255)
    metric.update(torch.zeros(1, 4, 4, dtype=torch.long), torch.full((1, 4, 4), 255))
    out = metric.compute()
    assert float(out["mIoU_present"]) == 0.0 and float(out["mIoU"]) == 0.0
    void = confusion_matrix_scores(torch.zeros(3, 4, dtype=torch.long))
    assert float(void["mIoU_present"]) == 0.0 and float(void["pixel_acc"]) == 0.0
    gt, pred = tmp_path / "a_000000_000000_gtFine_labelIds.png", tmp_path / "a_000000_000000_pred.png"
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(gt)  # label id 0: "unlabeled", ignored
    Image.fromarray(np.full((4, 4), 7, np.uint8)).save(pred)
    scores = hrseg_scores([(pred, gt)])
    assert scores["mIoU_present"] == 0.0 and scores["mIoU"] == 0.0


def test_void_predictions_count_as_misses() -> None:
    """A (C, C + 1) matrix: the extra column (predicted ids outside the classes) lowers recall and IoU."""
    cm = torch.tensor([[6, 0, 2], [0, 4, 0]])
    out = confusion_matrix_scores(cm)
    torch.testing.assert_close(out["iou"], torch.tensor([0.75, 1.0]))
    torch.testing.assert_close(out["pixel_acc"], torch.tensor(10 / 12))
    with pytest.raises(ValueError, match="C \\+ k"):
        confusion_matrix_scores(torch.zeros(3, 2))
