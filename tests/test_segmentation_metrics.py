"""Segmentation metrics from one confusion matrix (FCN's Section 5 definitions), on masks whose
answer is computed here by hand, against scikit-learn's confusion matrix, and as results rows."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from papers.segmentation_metrics import confusion_matrix, scores


def test_the_four_metrics_are_fcns_definitions_on_a_hand_computed_case():
    target = torch.tensor([[0, 0, 1], [1, 1, 2], [2, 2, 255]])
    predicted = torch.tensor([[0, 1, 1], [1, 0, 2], [2, 1, 0]])
    confusion = confusion_matrix(predicted, target, 3)
    # rows: label, columns: prediction; the 255 pixel is left out
    assert confusion.tolist() == [[1, 1, 0], [1, 2, 0], [0, 1, 2]]
    got = scores(confusion)
    iou = [1 / (2 + 2 - 1), 2 / (3 + 4 - 2), 2 / (3 + 2 - 2)]
    assert got["pixel_acc"] == pytest.approx(5 / 8)
    assert got["mean_acc"] == pytest.approx((1 / 2 + 2 / 3 + 2 / 3) / 3)
    assert got["miou"] == pytest.approx(sum(iou) / 3)
    assert got["fwiou"] == pytest.approx((2 * iou[0] + 3 * iou[1] + 3 * iou[2]) / 8)
    assert got["per_class"] == pytest.approx(iou)


def test_a_class_neither_labelled_nor_predicted_is_left_out_of_the_means():
    target = torch.tensor([0, 0, 2, 2])
    predicted = torch.tensor([0, 2, 2, 2])
    got = scores(confusion_matrix(predicted, target, 3))
    assert math.isnan(got["per_class"][1])
    assert got["miou"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert got["mean_acc"] == pytest.approx((1 / 2 + 1) / 2)


def test_the_matrix_is_scikit_learns_on_random_masks_with_ignored_pixels():
    from sklearn.metrics import confusion_matrix as reference

    generator = torch.Generator().manual_seed(0)
    target = torch.randint(0, 5, (2, 17, 23), generator=generator)
    target[:, ::4] = 255
    predicted = torch.randint(0, 5, (2, 17, 23), generator=generator)
    kept = (target != 255).flatten().numpy()
    expected = reference(target.flatten().numpy()[kept], predicted.flatten().numpy()[kept], labels=range(5))
    assert np.array_equal(confusion_matrix(predicted, target, 5).numpy(), expected)


@pytest.mark.parametrize(
    ("predicted", "target", "message"),
    [
        (torch.zeros(2, 3), torch.zeros(3, 2), "differ"),
        (torch.zeros(4), torch.tensor([0, 1, 7, 255]), "a label outside 0..2"),
        (torch.tensor([0, 3, 0, 0]), torch.zeros(4), "a prediction outside 0..2"),
    ],
)
def test_masks_that_do_not_fit_are_refused(predicted, target, message):
    with pytest.raises(ValueError, match=message):
        confusion_matrix(predicted.long(), target.long(), 3)


def test_every_pixel_ignored_is_refused_rather_than_scored():
    with pytest.raises(ValueError, match="no labelled pixel"):
        scores(confusion_matrix(torch.zeros(4).long(), torch.full((4,), 255), 3))


def test_a_measured_miou_answers_the_same_metric_on_the_same_data_only():
    from papers.results import Measured, answer
    from papers.spec import Result

    result = Result(
        variant="fcn8s",
        metric="miou",
        value=62.2,
        unit="percent",
        dataset="PASCAL VOC 2012",
        split="test",
        source="Table 4",
    )
    same = Measured(variant="fcn8s", metric="miou", value=61.0, dataset="PASCAL VOC 2012", split="test")
    assert answer(result, [same]) == pytest.approx(61.0)
    assert answer(result, [same.model_copy(update={"metric": "fwiou"})]) is None
    assert answer(result, [same.model_copy(update={"dataset": "PASCAL VOC 2011"})]) is None


def test_the_boundary_band_lies_within_width_pixels_of_a_label_change():
    from papers.segmentation_metrics import boundary_band

    target = torch.zeros(9, 9, dtype=torch.long)
    target[:, 5:] = 1  # one vertical boundary between columns 4 and 5
    assert boundary_band(target, 0).any(0).nonzero().flatten().tolist() == [4, 5]
    assert boundary_band(target, 2).any(0).nonzero().flatten().tolist() == [2, 3, 4, 5, 6, 7]
    assert boundary_band(target, 2).all(0).tolist() == boundary_band(target, 2).any(0).tolist()
    assert not boundary_band(torch.zeros(5, 5, dtype=torch.long), 3).any()


def test_ignored_pixels_are_never_in_the_band():
    from papers.segmentation_metrics import boundary_band

    target = torch.zeros(6, 6, dtype=torch.long)
    target[:, 3:] = 255
    band = boundary_band(target, 1)
    assert band[:, 1:3].all() and not band[:, 3:].any() and not band[:, 0].any()


def test_trimap_accuracy_counts_only_the_band():
    from papers.segmentation_metrics import trimap_accuracy

    target = torch.zeros(8, 8, dtype=torch.long)
    target[:, 4:] = 2
    predicted = target.clone()
    predicted[:, 3] = 2  # one column wrong, on the boundary
    predicted[0, 0] = 1  # far from the boundary: not counted
    assert trimap_accuracy(predicted, target, 1) == (24, 32)
    assert trimap_accuracy(target, target, 1) == (32, 32)
