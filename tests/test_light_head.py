"""Light-Head R-CNN (Li et al. 2017): the large separable convolution to a thin 10 × 7 × 7 map,
position-sensitive RoIAlign and the one 2048-d fc subnet on ResNet-101, in the two-stage task layer
under torchvision's contract."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import papers

SMALL = {"min_size": 128, "max_size": 160}
IMAGES = [(3, 150, 190), (3, 170, 130)]


pytestmark = pytest.mark.usefixtures("one_thread")


def _images() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return [torch.rand(*shape, generator=generator) for shape in IMAGES]


@pytest.fixture(scope="module")
def detector():
    """Light-Head R-CNN on ResNet-101 at random initialisation, with batch norms calibrated on the test
    images (an uncalibrated 101-layer network's maps grow so large that every proposal degenerates)."""
    torch.manual_seed(0)
    model = papers.build_model(
        "light_head_rcnn_resnet101", norm="batchnorm2d", num_classes=4, box_score_thresh=0.0, **SMALL
    )
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = None  # running statistics: this one batch's
    model.train()
    with torch.no_grad():
        batch, _ = model.transform(_images())
        model.head_outputs(batch)
    return model


def test_the_large_separable_convolution_gives_a_thin_490_channel_map_through_c_mid_channels():
    model = papers.build_model("light_head_rcnn_resnet101", device="meta")
    left, right = ([model.get_submodule(f"conv_new_1.{s}.{n}") for n in (0, 1)] for s in ("left", "right"))
    assert (left[0].kernel_size, left[1].kernel_size) == ((15, 1), (1, 15))  # k × 1, then 1 × k
    assert (right[0].kernel_size, right[1].kernel_size) == ((1, 15), (15, 1))  # 1 × k, then k × 1
    assert {left[0].in_channels, right[0].in_channels} == {2048}  # ResNet-101's conv5
    assert {left[0].out_channels, right[0].out_channels} == {256}  # C_mid, setting L
    assert {left[1].out_channels, right[1].out_channels} == {490}  # α · p · p = 10 · 7 · 7
    pooler = model.roi_heads_layer.box_roi_pool
    assert (pooler.kind, pooler.output_size, pooler.level) == ("ps_align", 7, "thin_map")
    # the subnet: one 2048-d fc on the 490 pooled values, no dropout, C + 1 scores and 4 shared deltas
    assert (model.ps_fc_1.in_features, model.ps_fc_1.out_features) == (490, 2048)
    assert (model.cls_fc.out_features, model.bbox_fc.out_features) == (81, 4)
    assert not any(isinstance(m, nn.Dropout) for m in model.roi_heads_layer.box_head.graph.modules())
    # the small setting's C_mid is the same graph's parameter
    small = papers.build_model("light_head_rcnn_resnet101", device="meta", c_mid=64)
    assert small.get_submodule("conv_new_1.left.0").out_channels == 64
    assert small.get_submodule("conv_new_1.right.1").in_channels == 64


def test_position_sensitive_roialign_reads_one_map_per_bin_and_the_subnet_predicts_from_it():
    model = papers.build_model("light_head_rcnn_resnet101", device="meta", num_classes=3)
    pooler, head = model.roi_heads_layer.box_roi_pool, model.roi_heads_layer.box_head
    # every map constant, equal to its index: bin (i, j) of output c must read map c·49 + i·7 + j
    maps = torch.arange(490, dtype=torch.float32).view(1, 490, 1, 1).expand(1, 490, 20, 20).contiguous()
    boxes = torch.tensor([[16.0, 16.0, 200.0, 260.0], [0.0, 40.0, 90.0, 120.0]])  # stride 16: 320 pixels
    pooled = pooler({"thin_map": maps}, [boxes], [(320, 320)])
    c, i, j = torch.meshgrid(torch.arange(10), torch.arange(7), torch.arange(7), indexing="ij")
    assert pooled.shape == (2, 10, 7, 7)
    assert torch.allclose(pooled, (c * 49 + i * 7 + j).float().expand(2, -1, -1, -1), atol=1e-4)
    for name in ("ps_fc_1", "cls_fc", "bbox_fc"):  # small real weights in place of the meta ones
        layer = getattr(model, name)
        generator = torch.Generator().manual_seed(3)
        layer.weight = nn.Parameter(torch.randn(layer.weight.shape, generator=generator) * 1e-3)
        layer.bias = nn.Parameter(torch.randn(layer.bias.shape, generator=generator))
    scores, deltas = head(pooled)
    hidden = torch.relu(model.ps_fc_1(pooled.flatten(1)))
    assert torch.allclose(scores, model.cls_fc(hidden), atol=1e-5)
    # the 4 class-agnostic deltas, given to torchvision's RoIHeads once per class
    assert torch.allclose(deltas, model.bbox_fc(hidden).repeat(1, 3), atol=1e-5)


def test_in_eval_it_returns_boxes_scores_and_labels_in_input_pixels(detector):
    detector.eval()
    with torch.no_grad():
        detections = detector(_images())
    assert [set(d) for d in detections] == [{"boxes", "scores", "labels"}] * 2
    for found, shape in zip(detections, IMAGES, strict=True):
        assert len(found["boxes"]) > 0
        assert int(found["labels"].min()) >= 1 and int(found["labels"].max()) < 4
        assert float(found["boxes"][:, 2].max()) <= shape[2] + 1e-3
        assert float(found["boxes"][:, 3].max()) <= shape[1] + 1e-3


def test_in_training_it_returns_finite_losses_that_reach_the_thin_map(detector):
    detector.train()
    detector.zero_grad()
    targets = [
        {"boxes": torch.tensor([[10.0, 20.0, 90.0, 100.0]]), "labels": torch.tensor([2])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},  # no object
    ]
    losses = detector(_images(), targets)
    assert set(losses) == {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg"}
    assert all(torch.isfinite(value) and value.ndim == 0 for value in losses.values())
    sum(losses.values()).backward()
    for name in ("conv_new_1.left.0.weight", "conv_new_1.right.1.weight", "ps_fc_1.weight", "bbox_fc.weight"):
        gradient = detector.get_parameter(name).grad
        assert gradient is not None and float(gradient.abs().sum()) > 0, name


def test_the_plugin_loads_strictly_and_the_static_checks_pass(run):
    result = run("plugins", "--json")
    assert result.exit_code == 0
    [plugin] = [p for p in json.loads(result.stdout) if p["name"] == "light_head_rcnn"]
    assert plugin["error"] is None and plugin["contributes"]["specs"] == ["light_head_rcnn"]
    checked = run("check", "light_head_rcnn")
    assert checked.exit_code == 0 and "0 failed" in checked.stdout
    for variant in ("light_head_rcnn_resnet101", "light_head_rcnn_subnet"):
        assert all(check.status != "fail" for check in papers.check(variant)), variant
