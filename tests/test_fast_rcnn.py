"""Fast R-CNN (Girshick 2015): the multi-task loss against a hand computation, the mini-batch sampling's
fractions and IoU ranges, the truncated SVD of fc6/fc7, and the detector taking proposals."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.models.detection._utils import BoxCoder
from torchvision.ops import box_iou

import papers
from papers_plugins.detection.fast_rcnn_detector import (
    fast_rcnn_detector,
    multitask_loss,
    sample_rois,
    svd_state_dict,
    truncated_svd,
)

SMALL = {"image_size": 64, "hidden": 32, "pooled": 2}
"""VGG-16's conv layers, RoI pooling to 2×2 and 32-d fc6/fc7: the paper's graph, small enough to run."""


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("box_weight", [1.0, 2.0])
def test_the_multitask_loss_is_log_loss_plus_lambda_smooth_l1_of_the_true_class(box_weight):
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    # RoI 0 is background (no box term); RoI 1 is class 2, whose offsets are the last four
    offsets = torch.tensor([[9.0] * 12, [9.0, 9, 9, 9, 9, 9, 9, 9, 0.5, -2.0, 0.0, 1.0]])
    loss = multitask_loss(logits, offsets, torch.tensor([0, 2]), torch.zeros(2, 4), box_weight=box_weight)
    log_loss = ((math.log(math.exp(2) + 2) - 2) + math.log(math.e + 2)) / 2  # -log softmax of u
    smooth_l1 = 0.5 * 0.5**2 + (2 - 0.5) + 0 + 0.5 * 1**2  # 2.125 for RoI 1, averaged over 2 RoIs
    assert loss["loss_classifier"].item() == pytest.approx(log_loss, rel=1e-6)
    assert loss["loss_box_reg"].item() == pytest.approx(box_weight * smooth_l1 / 2, rel=1e-6)


def _proposals_around(truth: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Boxes shifted from the ground truth by 0 to 110 pixels: every IoU from 1 down to 0."""
    shifts = torch.randint(0, 110, (1000, 2), generator=generator).float()
    return truth.repeat(1000, 1) + shifts.repeat(1, 2)


def test_a_mini_batch_takes_64_rois_a_quarter_foreground_at_iou_0_5_and_background_from_0_1_to_0_5():
    generator = torch.Generator().manual_seed(0)
    truth = torch.tensor([[10.0, 10.0, 110.0, 110.0]])
    proposals = _proposals_around(truth, generator)
    iou = box_iou(proposals, truth)[:, 0]
    assert (iou >= 0.5).sum() > 16 and ((iou >= 0.1) & (iou < 0.5)).sum() > 48 and (iou < 0.1).sum() > 0
    torch.manual_seed(0)
    boxes, labels, targets = sample_rois(
        [proposals], [{"boxes": truth, "labels": torch.tensor([7])}], BoxCoder((10.0, 10.0, 5.0, 5.0))
    )
    sampled_iou = box_iou(boxes[0], truth)[:, 0]
    assert len(boxes[0]) == 64 and labels.shape == (64,) and targets.shape == (64, 4)
    assert (labels == 7).sum() == 16 and set(labels.tolist()) == {0, 7}
    assert (sampled_iou[labels == 7] >= 0.5).all()
    background = sampled_iou[labels == 0]
    assert ((background >= 0.1) & (background < 0.5)).all()


def test_truncated_svd_is_the_best_rank_t_factorisation():
    torch.manual_seed(0)
    layer = torch.nn.Linear(40, 24)
    first, second = truncated_svd(layer, 6)
    assert first.shape == (6, 40) and second.shape == (24, 6)
    singular = torch.linalg.svdvals(layer.weight.detach().double())
    error = torch.linalg.matrix_norm((second @ first - layer.weight.detach()).double())
    assert error.item() == pytest.approx(singular[6:].square().sum().sqrt().item(), rel=1e-4)
    with pytest.raises(ValueError, match="a rank from 1 to 24"):
        truncated_svd(layer, 25)


def test_the_svd_variant_at_full_rank_gives_the_full_models_outputs():
    torch.manual_seed(0)
    full = papers.build_model("fast_rcnn_vgg16", **SMALL).eval()
    factored = papers.build_model("fast_rcnn_vgg16", fc6_rank=32, fc7_rank=32, **SMALL).eval()
    factored.load_state_dict(svd_state_dict(full, {"fc6": 32, "fc7": 32}), strict=True)
    image = torch.rand(1, 3, 64, 64)
    rois = torch.tensor([[0.0, 0, 0, 63, 63], [0.0, 8, 16, 40, 60], [0.0, 30, 2, 50, 20]])
    with torch.no_grad():
        for a, b in zip(full(image, rois), factored(image, rois), strict=True):
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)


def test_the_papers_svd_ranks_keep_t_times_u_plus_v_weights():
    model = papers.build_model("fast_rcnn_vgg16_svd", device="meta")
    counts = {name: sum(p.numel() for p in model.get_submodule(name).parameters()) for name in ("fc6", "fc7")}
    assert counts == {"fc6": 1024 * (25088 + 4096) + 4096, "fc7": 256 * (4096 + 4096) + 4096}


def test_the_detector_takes_proposals_and_gives_boxes_in_each_images_pixels_or_the_losses():
    torch.manual_seed(0)
    detector = fast_rcnn_detector(min_size=64, max_size=96, box_score_thresh=0.0, **SMALL)
    images = [torch.rand(3, 70, 90), torch.rand(3, 90, 60)]
    proposals = [
        torch.tensor([[0.0, 0, 40, 30], [10, 10, 80, 60], [50, 20, 89, 69]]),
        torch.tensor([[5.0, 5, 55, 85], [0, 40, 30, 89]]),
    ]
    detector.eval()
    with torch.no_grad():
        detections = detector(images, proposals)
    assert len(detections) == 2
    for found, image in zip(detections, images, strict=True):
        assert set(found) == {"boxes", "scores", "labels"} and len(found["boxes"]) > 0
        assert (found["boxes"][:, 2] <= image.shape[-1]).all() and (
            found["boxes"][:, 3] <= image.shape[-2]
        ).all()
        assert ((found["labels"] >= 1) & (found["labels"] <= 20)).all()
    detector.train()
    targets = [
        {"boxes": torch.tensor([[10.0, 10, 80, 60]]), "labels": torch.tensor([3])},
        {"boxes": torch.tensor([[5.0, 5, 55, 85]]), "labels": torch.tensor([12])},
    ]
    losses = detector(images, proposals, targets)
    assert set(losses) == {"loss_classifier", "loss_box_reg"}
    sum(losses.values()).backward()
    assert detector.network.cls_score.weight.grad is not None


def test_training_a_graph_that_takes_rois_as_a_classifier_is_refused_in_one_line(run, tmp_path):
    result = run("train", "fast_rcnn_vgg16", "--data", "builtin:digits", "--out", str(tmp_path / "run"))
    assert result.exit_code == 2
    assert "the model's inputs are images, rois" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()
