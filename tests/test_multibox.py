"""MultiBox (Erhan et al., CVPR 2014): K class-agnostic boxes as offsets from k-means priors and K
sigmoid confidences, trained by the bipartite matching objective of Section 3, under torchvision's
detection contract."""

from __future__ import annotations

import itertools
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

import papers
from papers_plugins.detection.multibox import multibox_detector
from papers_plugins.detection.multibox_layers import (
    decode,
    kmeans_priors,
    matching_loss,
    spread_priors,
    training_boxes,
)

SMALL = {"image_size": 95}
"""The smallest AlexNet input that keeps every layer cheap here (three poolings leave 2×2)."""
VARIANTS = {
    "multibox_alexnet_k100": 100,
    "multibox_alexnet_k200": 200,
    "multibox_googlenet_k100": 100,
    "multibox_googlenet_k200": 200,
}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _objective(locations, confidences, truth, assignment, alpha):
    """Section 3's F(x, l, c) written out for an explicit assignment x (box j → prediction
    assignment[j])."""
    x = np.zeros((len(locations), len(truth)))
    for j, i in enumerate(assignment):
        x[i, j] = 1.0
    match = 0.5 * sum(x[i, j] * np.sum((locations[i] - truth[j]) ** 2) for i, j in np.ndindex(*x.shape))
    conf = -np.sum(x * np.log(confidences)[:, None]) - np.sum((1 - x.sum(1)) * np.log(1 - confidences))
    return alpha * match + conf


# --- priors ---------------------------------------------------------------------------------


def test_kmeans_priors_are_the_centres_of_clustered_training_boxes():
    rng = np.random.default_rng(0)
    centres = np.array([[0.1, 0.1, 0.3, 0.4], [0.5, 0.2, 0.9, 0.6], [0.2, 0.5, 0.6, 0.95]])
    boxes = np.concatenate([c + rng.normal(0, 0.01, size=(50, 4)) for c in centres]).clip(0, 1)
    priors = kmeans_priors(boxes, 3)
    assert priors.shape == (3, 4) and priors.dtype == np.float32
    # ordered by area, largest first: the third cluster's (0.18), the second's (0.16), the first's (0.06)
    areas = (priors[:, 2] - priors[:, 0]) * (priors[:, 3] - priors[:, 1])
    assert list(areas) == sorted(areas, reverse=True)
    for centre in centres:
        assert np.abs(priors - centre).max(axis=1).min() < 0.01
    np.testing.assert_array_equal(priors, kmeans_priors(boxes, 3))  # the same seed, the same priors


@pytest.mark.parametrize(
    "boxes, k, message",
    [
        ([[0.1, 0.1, 1.2, 0.5]], 1, "normalised to"),
        ([[0.5, 0.1, 0.2, 0.5]], 1, "x1 ≤ x2"),
        ([[0.1, 0.1, 0.5, 0.5]], 2, "at least as many"),
        ([0.1, 0.1, 0.5, 0.5], 1, r"\[N, 4\]"),
    ],
)
def test_kmeans_priors_refuse_boxes_that_are_not_normalised_corners(boxes, k, message):
    with pytest.raises(ValueError, match=message):
        kmeans_priors(boxes, k)


def test_priors_of_detection_data_are_normalised_boxes():
    boxes = training_boxes("builtin:shapes", "train")
    assert boxes.ndim == 2 and boxes.shape[1] == 4 and len(boxes) >= 180  # 180 images, ≥ 1 object each
    assert boxes.min() >= 0 and boxes.max() <= 1
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    assert kmeans_priors(boxes, 10).shape == (10, 4)


def test_spread_priors_are_distinct_boxes_inside_the_image():
    priors = spread_priors(200)
    assert priors.shape == (200, 4)
    assert priors.min() >= 0 and priors.max() <= 1
    assert (priors[:, 2] > priors[:, 0]).all() and (priors[:, 3] > priors[:, 1]).all()
    assert len(np.unique(priors.round(6), axis=0)) == 200


# --- the objective --------------------------------------------------------------------------


def test_the_objective_by_hand():
    # Two predictions, one object: prediction 2 sits on the object but is unsure (c = 0.4); prediction
    # 1 is a unit of squared distance away but confident (c = 0.8). Assigning 1 costs
    # 0.3/2 · 1 − log 0.8 + log 0.2 = −1.236, assigning 2 costs 0 − log 0.4 + log 0.6 = 0.405: the
    # matching takes prediction 1, and F = 0.15 − log 0.8 − log(1 − 0.4).
    locations = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]])
    logits = torch.logit(torch.tensor([0.8, 0.4]))
    truth = torch.tensor([[0.5, 0.5, 1.0, 1.0]])
    terms = matching_loss(locations, logits, truth, alpha=0.3)
    assert terms.predictions.tolist() == [0] and terms.boxes.tolist() == [0]
    assert terms.location.item() == pytest.approx(0.15)
    assert terms.confidence.item() == pytest.approx(-math.log(0.8) - math.log(0.6), rel=1e-6)
    assert (terms.location + terms.confidence).item() == pytest.approx(0.88397, abs=1e-5)


@pytest.mark.parametrize("seed", range(5))
def test_the_matching_minimises_the_objective_over_every_assignment(seed):
    generator = torch.Generator().manual_seed(seed)
    k, m, alpha = 5, 3, 0.3
    locations = torch.rand(k, 4, generator=generator, dtype=torch.float64)
    confidences = torch.rand(k, generator=generator, dtype=torch.float64) * 0.9 + 0.05
    truth = torch.rand(m, 4, generator=generator, dtype=torch.float64)
    terms = matching_loss(locations, torch.logit(confidences), truth, alpha=alpha)
    loss = (terms.location + terms.confidence).item()
    args = (locations.numpy(), confidences.numpy(), truth.numpy())
    every = [_objective(*args, a, alpha) for a in itertools.permutations(range(k), m)]  # 60 of them
    assert loss == pytest.approx(min(every), rel=1e-9)
    chosen = [0] * m
    for i, j in zip(terms.predictions.tolist(), terms.boxes.tolist(), strict=True):
        chosen[j] = i
    assert _objective(*args, chosen, alpha) == pytest.approx(loss, rel=1e-9)


def test_with_no_object_every_confidence_is_pushed_down():
    logits = torch.tensor([0.0, 2.0, -1.0], requires_grad=True)
    terms = matching_loss(torch.rand(3, 4), logits, torch.zeros(0, 4))
    assert terms.location.item() == 0 and len(terms.predictions) == 0
    expected = -torch.log1p(-torch.sigmoid(logits.detach())).sum()
    assert terms.confidence.item() == pytest.approx(expected.item(), rel=1e-6)
    terms.confidence.backward()
    assert (logits.grad > 0).all()  # descending lowers every confidence


def test_matching_on_the_priors_assigns_by_prior_not_by_prediction():
    priors = torch.tensor([[0.0, 0.0, 0.4, 0.4], [0.6, 0.6, 1.0, 1.0]])
    predicted = torch.tensor([[0.6, 0.6, 1.0, 1.0], [0.0, 0.0, 0.4, 0.4]])  # crossed over
    truth = torch.tensor([[0.6, 0.6, 1.0, 1.0]])
    logits = torch.zeros(2)
    assert matching_loss(predicted, logits, truth, alpha=10.0).predictions.tolist() == [0]
    by_prior = matching_loss(predicted, logits, truth, alpha=10.0, match_on=priors)
    assert by_prior.predictions.tolist() == [1]
    assert by_prior.location.item() == pytest.approx(10.0 / 2 * 4 * 0.6**2)  # the prediction's error


def test_confidences_far_from_a_half_give_finite_losses():
    logits = torch.tensor([-200.0, 200.0], requires_grad=True)
    terms = matching_loss(torch.rand(2, 4), logits, torch.rand(1, 4))
    total = terms.location + terms.confidence
    total.backward()
    assert torch.isfinite(total) and torch.isfinite(logits.grad).all()


def test_boxes_are_priors_plus_offsets_in_order_and_inside_the_image():
    priors = torch.tensor([[0.2, 0.2, 0.6, 0.6], [0.5, 0.5, 0.9, 0.9]])
    offsets = torch.tensor([[0.1, -0.1, 0.0, 0.2], [0.3, 0.0, -0.2, 0.3]])
    boxes = decode(offsets, priors)
    torch.testing.assert_close(boxes[0], torch.tensor([0.3, 0.1, 0.6, 0.8]))
    torch.testing.assert_close(boxes[1], torch.tensor([0.7, 0.5, 0.8, 1.0]))  # x corners swapped, clipped


# --- the graph and the detector -------------------------------------------------------------


@pytest.mark.parametrize("variant, k", VARIANTS.items())
def test_each_variant_replaces_the_trunks_classifier_by_4k_coordinates_and_k_confidences(variant, k):
    flat = papers.expand_variant(variant)
    assert flat.node("location").args["out_features"] == 4 * k
    assert flat.node("confidence").args["out_features"] == k
    assert flat.node("confidences").op == "sigmoid"
    assert not any(node.name in ("backbone.fc", "backbone.classifier.6") for node in flat.nodes)


@pytest.fixture(scope="module")
def detector():
    torch.manual_seed(0)
    return multibox_detector("multibox_alexnet_k100", box_score_thresh=0.0, **SMALL)


def _images() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return [torch.rand(3, 120, 160, generator=generator), torch.rand(3, 90, 70, generator=generator)]


def test_eval_gives_class_agnostic_boxes_in_each_images_pixels(detector):
    detector.eval()
    with torch.inference_mode():
        found = detector(_images())
    assert len(found) == 2
    for result, (height, width) in zip(found, [(120, 160), (90, 70)], strict=True):
        boxes, scores, labels = result["boxes"], result["scores"], result["labels"]
        assert 0 < len(boxes) <= 100 and boxes.shape[1] == 4
        assert (labels == 1).all()
        assert (scores[:-1] >= scores[1:]).all()
        assert boxes[:, 0::2].max() <= width and boxes[:, 1::2].max() <= height and boxes.min() >= 0
        from torchvision.ops import box_iou

        overlap = box_iou(boxes, boxes).fill_diagonal_(0)
        assert overlap.max() <= 0.5 + 1e-6  # suppressed at IoU 0.5


def test_the_priors_travel_with_the_weights(detector):
    state = detector.state_dict()
    torch.testing.assert_close(state["priors"], detector.priors)
    assert "image_mean" not in state and "network.location.weight" in state


def test_training_gives_the_two_terms_of_the_objective_and_gradients(detector):
    detector.train()
    targets = [
        {
            "boxes": torch.tensor([[10.0, 20.0, 80.0, 100.0], [90.0, 5.0, 150.0, 60.0]]),
            "labels": torch.tensor([1, 1]),
        },
        {"boxes": torch.tensor([[5.0, 5.0, 60.0, 80.0]]), "labels": torch.tensor([1])},
    ]
    detector.zero_grad()
    losses = detector(_images(), targets)
    assert set(losses) == {"loss_location", "loss_confidence"}
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    sum(losses.values()).backward()
    assert detector.network.location.weight.grad.abs().sum() > 0
    assert detector.network.confidence.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="takes targets"):
        detector(_images())


def test_training_the_head_moves_a_box_onto_the_object_and_ranks_it_first():
    torch.manual_seed(0)
    model = multibox_detector("multibox_alexnet_k100", **SMALL)
    images = [_images()[0]]
    truth = torch.tensor([[16.0, 24.0, 96.0, 108.0]])
    targets = [{"boxes": truth, "labels": torch.tensor([1])}]
    head = [*model.network.location.parameters(), *model.network.confidence.parameters()]
    optimiser = torch.optim.SGD(head, lr=1.0)
    model.train()
    first = {k: v.item() for k, v in model(images, targets).items()}
    for _ in range(10):
        optimiser.zero_grad()
        losses = model(images, targets)
        sum(losses.values()).backward()
        optimiser.step()
    assert all(losses[k].item() < 0.2 * first[k] for k in first)
    model.eval()
    with torch.inference_mode():
        best = model(images)[0]["boxes"][:1]
    from torchvision.ops import box_iou

    assert box_iou(best, truth).item() > 0.7


def test_priors_of_another_count_are_refused():
    with pytest.raises(ValueError, match=r"priors \[200, 4\]"):
        multibox_detector("multibox_alexnet_k200", priors=spread_priors(100), device="meta")


def test_the_plugin_module_imports_without_torch():
    code = "import sys, papers_plugins.detection.multibox; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_papers_detect_runs_multibox_class_agnostic(tmp_path):
    import json

    from click.testing import CliRunner
    from PIL import Image

    from papers.cli import cli

    picture = tmp_path / "scene.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(picture)
    made = CliRunner().invoke(cli, ["detect", "multibox_alexnet_k100", str(picture), "--json"])
    assert made.exit_code == 0, made.output
    (result,) = json.loads(made.output)
    assert 0 < len(result["boxes"]) <= 100 and set(result["label_names"]) == {"object"}
    assert all(0 <= x1 <= x2 <= 80 and 0 <= y1 <= y2 <= 60 for x1, y1, x2, y2 in result["boxes"])
