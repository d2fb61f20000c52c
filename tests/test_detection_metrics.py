"""Detection metrics: VOC's AP (hand-written after the devkit) against hand-computed curves, COCO's
through pycocotools on tiny ground truths whose answer is known."""

from __future__ import annotations

import pytest
import torch

from papers.detection_metrics import DETECTION_METRICS, coco_metrics, voc_ap, voc_map


def _target(boxes, labels, difficult=None):
    target = {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels),
    }
    if difficult is not None:
        target["difficult"] = torch.tensor(difficult)
    return target


def _found(boxes, scores, labels):
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "scores": torch.tensor(scores, dtype=torch.float32),
        "labels": torch.tensor(labels, dtype=torch.int64),
    }


def test_the_metric_names_are_the_issues():
    assert DETECTION_METRICS == ("voc07_map", "voc_map", "coco_ap", "ap50", "ap75", "ap_s", "ap_m", "ap_l")


def test_perfect_detections_score_one_everywhere():
    targets = [_target([[0, 0, 10, 10], [20, 20, 60, 70]], [1, 2]), _target([[5, 5, 120, 130]], [1])]
    found = [_found(t["boxes"].tolist(), [0.9] * len(t["labels"]), t["labels"].tolist()) for t in targets]
    for use_07_metric in (True, False):
        mean, per_class = voc_map(found, targets, use_07_metric=use_07_metric)
        assert mean == 1.0 and per_class == {1: 1.0, 2: 1.0}
    coco = coco_metrics(found, targets)
    assert coco["coco_ap"] == pytest.approx(1.0) and coco["ap50"] == pytest.approx(1.0)
    # one small (100 px²), one medium (2,000 px²) and one large (13,225 px²) object
    assert coco["ap_s"] == pytest.approx(1.0) and coco["ap_m"] == pytest.approx(1.0)
    assert coco["ap_l"] == pytest.approx(1.0)


# Three objects; detections by score: hit, miss, hit, duplicate of the first, hit. So recall
# 1/3, 1/3, 2/3, 2/3, 1 and precision 1, 1/2, 2/3, 1/2, 3/5.
TARGETS = [_target([[0, 0, 10, 10], [20, 20, 30, 30]], [1, 1]), _target([[0, 0, 10, 10]], [1])]
FOUND = [
    _found(
        [[0, 0, 10, 10], [50, 50, 60, 60], [0, 0, 10, 10], [20, 20, 30, 30]], [0.9, 0.8, 0.6, 0.5], [1] * 4
    ),
    _found([[0, 0, 10, 10]], [0.7], [1]),
]


def test_voc2007_is_the_mean_of_eleven_interpolated_precisions():
    # recall >= 0, 0.1, 0.2, 0.3: best precision 1; >= 0.4, 0.5, 0.6: 2/3; >= 0.7 ... 1.0: 3/5
    expected = (4 * 1 + 3 * 2 / 3 + 4 * 3 / 5) / 11
    assert voc_map(FOUND, TARGETS, use_07_metric=True)[0] == pytest.approx(expected, abs=1e-12)


def test_voc2010_is_the_area_under_the_monotone_curve():
    expected = 1 / 3 * 1 + 1 / 3 * 2 / 3 + 1 / 3 * 3 / 5  # 34/45
    assert voc_map(FOUND, TARGETS, use_07_metric=False)[0] == pytest.approx(expected, abs=1e-12)


def test_voc_ap_of_a_curve_given_directly():
    recall, precision = [0.2, 0.4, 0.4, 0.8], [1.0, 1.0, 0.5, 0.8]
    assert voc_ap(recall, precision, use_07_metric=False) == pytest.approx(0.4 * 1.0 + 0.4 * 0.8)
    # thresholds 0-0.4 reach precision 1; 0.5-0.8: 0.8; 0.9 and 1.0: no point, 0
    assert voc_ap(recall, precision, use_07_metric=True) == pytest.approx((5 * 1.0 + 4 * 0.8) / 11)


def test_recall_exactly_at_a_threshold_counts_as_the_devkit_counts_it():
    # 3 of 10 objects found: recall 0.3 reaches the 0.3 threshold (MATLAB's 0:0.1:1 gives 0.3 itself)
    assert voc_ap([0.3], [1.0], use_07_metric=True) == pytest.approx(4 / 11)


def test_a_difficult_object_is_neither_a_positive_nor_a_false_positive():
    targets = [_target([[0, 0, 10, 10], [20, 20, 30, 30]], [1, 1], difficult=[False, True])]
    found = [_found([[20, 20, 30, 30], [50, 50, 60, 60], [0, 0, 10, 10]], [0.9, 0.8, 0.7], [1, 1, 1])]
    # the difficult hit is ignored: a miss then a hit of the one positive, precision 1/2 at recall 1
    assert voc_map(found, targets, use_07_metric=False)[0] == pytest.approx(0.5)
    assert voc_map(found, targets, use_07_metric=True)[0] == pytest.approx(0.5)
    counted = [_target([[0, 0, 10, 10], [20, 20, 30, 30]], [1, 1])]  # the same object not difficult
    assert voc_map(found, counted, use_07_metric=False)[0] == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_the_mean_is_over_classes_with_objects_and_a_missed_class_scores_zero():
    targets = [_target([[0, 0, 10, 10], [20, 20, 30, 30]], [1, 2])]
    found = [_found([[0, 0, 10, 10], [40, 40, 50, 50]], [0.9, 0.8], [1, 3])]  # class 3 has no object
    mean, per_class = voc_map(found, targets, use_07_metric=False)
    assert per_class == {1: 1.0, 2: 0.0} and mean == 0.5


def test_below_half_overlap_is_a_false_positive():
    targets = [_target([[0, 0, 10, 10]], [1])]
    found = [_found([[5, 0, 15, 10]], [0.9], [1])]  # IoU 1/3
    assert voc_map(found, targets, use_07_metric=False)[0] == 0.0


def test_coco_ap_averages_over_iou_thresholds():
    targets = [_target([[0, 0, 100, 100]], [1])]  # 10,000 px²: a large object
    found = [_found([[0, 0, 100, 62]], [0.9], [1])]  # IoU 0.62: a hit at 0.50, 0.55 and 0.60 only
    coco = coco_metrics(found, targets, classes=["background", "thing"])
    assert coco["ap50"] == pytest.approx(1.0) and coco["ap75"] == pytest.approx(0.0)
    assert coco["coco_ap"] == pytest.approx(0.3)
    assert coco["ap_l"] == pytest.approx(0.3)
    assert coco["ap_s"] is None and coco["ap_m"] is None  # no small or medium object


def test_coco_with_no_detection_is_zero_where_there_are_objects():
    targets = [_target([[0, 0, 10, 10]], [1])]
    empty = [_found([], [], [])]
    assert coco_metrics(empty, targets) == {
        "coco_ap": 0.0,
        "ap50": 0.0,
        "ap75": 0.0,
        "ap_s": 0.0,
        "ap_m": None,
        "ap_l": None,
    }


def test_coco_ignores_a_difficult_object_as_a_crowd_region():
    targets = [_target([[0, 0, 40, 40], [50, 50, 90, 90]], [1, 1], difficult=[False, True])]
    found = [_found([[50, 50, 90, 90], [0, 0, 40, 40]], [0.9, 0.8], [1, 1])]
    assert coco_metrics(found, targets)["coco_ap"] == pytest.approx(1.0)
