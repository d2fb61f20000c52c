"""RetinaNet (Lin et al. 2017): the paper's entry and torchvision's retinanet_resnet50_fpn.

torchvision's model, its batch norms randomised, loads strictly into ``retinanet_resnet50_fpn`` built
from ``specs/detection/retinanet.yaml``; both give the same raw head outputs, the same detections (every
candidate, ``score_thresh=0``) and the same losses. The paper's own variants compute P6 from C5 and
start the class subnet at the prior π = 0.01.
"""

from __future__ import annotations

import math

import pytest
import torch

import papers
from papers.tasks.detection import DenseDetector
from tests.equivalence import randomise_batch_norms, relative_difference

SMALL = {"min_size": 128, "max_size": 160}
IMAGES = [(3, 120, 150), (3, 140, 100)]


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def torchvision_retinanet(**options):
    from torchvision.models.detection import retinanet_resnet50_fpn

    torch.manual_seed(0)
    model = retinanet_resnet50_fpn(weights=None, weights_backbone=None, **options)
    randomise_batch_norms(model)
    return model.eval()


def _images() -> list[torch.Tensor]:
    torch.manual_seed(1)
    return [torch.rand(*shape) for shape in IMAGES]


@pytest.fixture(scope="module")
def pair():
    reference = torchvision_retinanet(score_thresh=0.0, **SMALL)
    ours = papers.build_model("retinanet_resnet50_fpn", device="meta", score_thresh=0.0, **SMALL)
    ours.load_state_dict(reference.state_dict(), strict=True, assign=True)
    return ours.eval(), reference


def test_torchvisions_state_dict_loads_strictly_with_the_same_names(pair):
    ours, reference = pair
    assert isinstance(ours, DenseDetector)
    assert set(ours.state_dict()) == set(reference.state_dict())


def test_the_raw_head_outputs_are_torchvisions(pair):
    ours, reference = pair
    with torch.no_grad():
        batch, _ = reference.transform(_images())
        features = list(reference.backbone(batch.tensors).values())
        expected = reference.head(features)
        outputs = ours.network(batch.tensors)
    for index, level in enumerate(["p3", "p4", "p5", "p6", "p7"]):
        assert relative_difference(outputs[level], features[index]) <= 1e-5, level
    for name in ("cls_logits", "bbox_regression"):
        mine = outputs[name]
        assert mine.shape == expected[name].shape and relative_difference(mine, expected[name]) <= 1e-5


def test_the_detections_are_torchvisions(pair):
    ours, reference = pair
    with torch.no_grad():
        mine, theirs = ours(_images()), reference(_images())
    for a, b in zip(mine, theirs, strict=True):
        assert len(a["boxes"]) == 300  # detections_per_img: every candidate passes a threshold of 0
        assert torch.equal(a["labels"], b["labels"])
        for key in ("boxes", "scores"):
            assert relative_difference(a[key], b[key]) <= 1e-5, key


def test_the_losses_are_torchvisions(pair):
    ours, reference = pair
    targets = [
        {
            "boxes": torch.tensor([[10.0, 20.0, 60.0, 80.0], [30.0, 30.0, 100.0, 90.0]]),
            "labels": torch.tensor([1, 3]),
        },
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},
    ]
    ours.train()
    reference.train()
    try:
        with torch.no_grad():
            mine, theirs = ours(_images(), targets), reference(_images(), targets)
    finally:
        ours.eval()
        reference.eval()
    assert set(mine) == set(theirs) == {"classification", "bbox_regression"}
    for key in mine:  # batch norms in training mode use the batch's statistics in both
        assert torch.allclose(mine[key], theirs[key], rtol=1e-4, atol=0), key


def test_the_class_subnet_starts_at_the_prior_and_the_others_at_zero_bias():
    model = papers.build_model("retinanet_r50_fpn", image_size=128, **SMALL)
    prior = 0.01
    bias = model.head.classification_head.cls_logits.bias
    assert torch.allclose(bias, torch.full_like(bias, -math.log((1 - prior) / prior)))
    assert torch.allclose(torch.sigmoid(bias), torch.full_like(bias, prior))
    assert torch.count_nonzero(model.head.regression_head.bbox_reg.bias) == 0
    assert torch.count_nonzero(model.get_submodule("head.classification_head.conv.0.0").bias) == 0
    weight = model.get_submodule("head.regression_head.conv.0.0").weight
    assert 0.008 < float(weight.detach().std()) < 0.012  # N(0, 0.01)


def test_the_subnets_sigma_is_a_build_option_for_narrower_subnets():
    model = papers.build_model("retinanet_r50_fpn", image_size=128, **{**SMALL, "subnet_init_std": 0.02})
    for name in ("head.regression_head.conv.0.0", "head.classification_head.cls_logits"):
        assert 0.017 < float(model.get_submodule(name).weight.detach().std()) < 0.023, name
    bias = model.head.classification_head.cls_logits.bias  # the prior does not move
    assert torch.allclose(torch.sigmoid(bias), torch.full_like(bias, 0.01))


def test_group_norms_in_the_subnets_are_a_build_option_and_the_paper_has_none():
    plain = papers.build_model("retinanet_r50_fpn", device="meta", **SMALL)
    assert not any(isinstance(m, torch.nn.GroupNorm) for m in plain.modules())
    normed = papers.build_model("retinanet_r50_fpn", device="meta", **SMALL, subnet_groups=32)
    for subnet in ("classification_head", "regression_head"):
        for i in range(4):  # conv, norm, ReLU: torchvision's Conv2dNormActivation's names
            norm = normed.get_submodule(f"head.{subnet}.conv.{i}.1")
            assert isinstance(norm, torch.nn.GroupNorm) and (norm.num_groups, norm.num_channels) == (32, 256)
    assert sum(isinstance(m, torch.nn.GroupNorm) for m in normed.modules()) == 8, "shared over the levels"


def test_the_focal_losss_alpha_and_gamma_are_build_options_as_in_table_1a():
    from papers.errors import GraphError

    targets = [{"boxes": torch.tensor([[10.0, 20.0, 60.0, 80.0]]), "labels": torch.tensor([2])}]
    losses = {}
    for name, options in (("paper", {}), ("cross entropy", {"focal_gamma": 0.0, "focal_alpha": 0.75})):
        torch.manual_seed(0)
        model = papers.build_model("retinanet_r50_fpn", num_classes=4, **SMALL, **options).train()
        with torch.no_grad():
            losses[name] = model(_images()[:1], targets)
    assert model.task.focal_gamma == 0.0 and model.task.focal_alpha == 0.75
    paper, balanced = losses["paper"], losses["cross entropy"]
    assert torch.equal(paper["bbox_regression"], balanced["bbox_regression"])
    # at the prior π = 0.01 the positives dominate: α 0.75 against 0.25 weighs them 3 times, and the
    # negatives' π^γ factor (1e-4) is gone, so the cross entropy is more than 3 times the focal loss
    assert float(balanced["classification"]) > 3 * float(paper["classification"])
    with pytest.raises(GraphError, match="focal_alpha"):
        papers.build_model("retinanet_r50_fpn", device="meta", **SMALL, focal_alpha=1.5)


def test_nine_anchors_per_location_on_five_levels_with_the_papers_loss_settings():
    model = papers.build_model("retinanet_r50_fpn", device="meta", **SMALL)
    assert model.anchor_generator.num_anchors_per_location() == [9] * 5
    task = model.task
    assert (task.focal_gamma, task.focal_alpha) == (2.0, 0.25)
    assert (task.fg_iou_thresh, task.bg_iou_thresh, task.box_loss) == (0.5, 0.4, "smooth_l1")
    assert model.head.classification_head.cls_logits.out_channels == 9 * 80  # K·A
    assert model.head.regression_head.bbox_reg.out_channels == 4 * 9  # 4A


def test_the_paper_computes_p6_from_c5_and_torchvision_from_p5():
    paper = papers.build_model("retinanet_r101_fpn", device="meta", **SMALL)
    library = papers.build_model("retinanet_resnet50_fpn", device="meta", **SMALL)
    assert paper.backbone.fpn.extra_blocks.p6.in_channels == 2048  # C5
    assert library.backbone.fpn.extra_blocks.p6.in_channels == 256  # P5
    assert len(list(paper.backbone.body.layer3.children())) == 23  # ResNet-101
