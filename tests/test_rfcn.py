"""R-FCN (Dai et al. 2016): k²(C + 1) position-sensitive score maps and 4k² box maps on ResNet-101,
position-sensitive RoI pooling and voting by averaging (no learnable layer per RoI), in the two-stage
task layer under torchvision's contract."""

from __future__ import annotations

import json

import pytest
import torch

import papers
from papers.errors import PapersError
from papers.spec import validate_spec
from tests.conftest import minimal_spec

SMALL = {"min_size": 128, "max_size": 160}
IMAGES = [(3, 150, 190), (3, 170, 130)]


pytestmark = pytest.mark.usefixtures("one_thread")


def _images() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return [torch.rand(*shape, generator=generator) for shape in IMAGES]


@pytest.fixture(scope="module")
def detector():
    """R-FCN on ResNet-101 at random initialisation, with batch norms calibrated on the test images
    (an uncalibrated 101-layer network's maps grow so large that every proposal degenerates)."""
    torch.manual_seed(0)
    model = papers.build_model(
        "rfcn_resnet101", norm="batchnorm2d", num_classes=4, box_score_thresh=0.0, **SMALL
    )
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None  # running statistics: this one batch's
    model.train()
    with torch.no_grad():
        batch, _ = model.transform(_images())
        model.head_outputs(batch)
    return model


def test_the_score_maps_have_k2_c_plus_1_and_4k2_channels_and_nothing_learnable_follows_the_roi_layer():
    voc = papers.build_model("rfcn_resnet101", device="meta")
    assert (voc.rfcn_cls.out_channels, voc.rfcn_bbox.out_channels) == (1029, 196)  # 7² · 21, 4 · 7²
    assert voc.conv_new_1.out_channels == 1024 and voc.conv_new_1.kernel_size == (1, 1)
    pooler = voc.roi_heads_layer.box_roi_pool
    assert (pooler.kind, pooler.output_size, pooler.level) == ("ps_pool", 7, "score_maps")
    assert sum(p.numel() for p in voc.roi_heads_layer.box_head.graph.parameters()) == 0
    # conv5 à trous: stride 1 and dilation 2 in every 3×3 of conv5, so the maps stay at stride 16
    conv5 = [voc.get_submodule(f"backbone.layer4.{block}.conv2") for block in range(3)]
    assert all(m.stride == (1, 1) and m.dilation == (2, 2) for m in conv5)
    # num_classes and k reach both graphs: COCO's 81 classes give the 3,969 maps Light-Head R-CNN cites
    coco = papers.build_model("rfcn_resnet101", device="meta", num_classes=81)
    assert coco.rfcn_cls.out_channels == 3969


def test_position_sensitive_pooling_and_voting_equal_a_hand_computation():
    k, classes = 2, 3  # C + 1 = 3 class scores and 4 box deltas per bin: 7 · k² = 28 maps
    model = papers.build_model("rfcn_resnet101", device="meta", k=k, num_classes=classes)
    pooler, head = model.roi_heads_layer.box_roi_pool, model.roi_heads_layer.box_head
    generator = torch.Generator().manual_seed(2)
    maps = torch.randn(1, (classes + 4) * k * k, 10, 10, generator=generator)
    # integral bins at scale 1 (map and image both 10 × 10), off the map's last row and column, which
    # torchvision's kernel leaves out of every bin
    boxes = torch.tensor([[1.0, 1.0, 5.0, 5.0], [2.0, 1.0, 8.0, 5.0]])
    pooled = pooler({"score_maps": maps}, [boxes], [(10, 10)])
    scores, deltas = head(pooled)
    expected = torch.zeros(len(boxes), classes + 4)
    for r, (x0, y0, x1, y1) in enumerate(boxes.int().tolist()):
        w, h = (x1 - x0) // k, (y1 - y0) // k
        for c in range(classes + 4):
            # bin (i, j) averages only its own map of output c (Section 2, Eqn. 1)
            bins = [
                maps[0, c * k * k + i * k + j][y0 + i * h : y0 + (i + 1) * h, x0 + j * w : x0 + (j + 1) * w]
                for i in range(k)
                for j in range(k)
            ]
            expected[r, c] = torch.stack([b.mean() for b in bins]).mean()  # the k² scores vote by averaging
    assert torch.allclose(scores, expected[:, :classes], atol=1e-6)
    # the 4 class-agnostic deltas, given to torchvision's RoIHeads once per class
    assert deltas.shape == (2, 4 * classes)
    assert torch.allclose(deltas, expected[:, classes:].repeat(1, classes), atol=1e-6)


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


def test_in_training_it_returns_finite_losses_that_reach_the_score_maps(detector):
    detector.train()
    detector.zero_grad()
    targets = [
        {"boxes": torch.tensor([[10.0, 20.0, 90.0, 100.0]]), "labels": torch.tensor([2])},
        {"boxes": torch.tensor([[5.0, 5.0, 60.0, 120.0]]), "labels": torch.tensor([3])},
    ]
    losses = detector(_images(), targets)
    assert set(losses) == {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg"}
    assert all(torch.isfinite(value) and value.ndim == 0 for value in losses.values())
    sum(losses.values()).backward()
    for name in ("rfcn_cls.weight", "rfcn_bbox.weight", "rpn.conv.weight", "backbone.layer3.0.conv1.weight"):
        gradient = detector.get_parameter(name).grad
        assert gradient is not None and float(gradient.abs().sum()) > 0, name
    with pytest.raises(ValueError, match="training mode takes targets"):
        detector(_images())


def test_the_plugin_loads_strictly_and_the_static_checks_pass(run):
    result = run("plugins", "--json")
    assert result.exit_code == 0
    [rfcn] = [plugin for plugin in json.loads(result.stdout) if plugin["name"] == "rfcn"]
    assert rfcn["error"] is None and rfcn["contributes"]["specs"] == ["rfcn"]
    checked = run("check", "rfcn")
    assert checked.exit_code == 0 and "0 failed" in checked.stdout
    assert all(check.status != "fail" for check in papers.check("rfcn_resnet101"))


def test_a_vote_that_is_not_classes_plus_four_values_and_a_second_position_sensitive_map_are_refused():
    from papers_plugins.detection.rfcn_layers import scores_and_boxes

    with pytest.raises(ValueError, match="3 class scores and 4 box deltas expected, got 8"):
        scores_and_boxes(torch.zeros(2, 8), classes=3)
    data = minimal_spec()
    data["topics"] = ["detection"]
    data["graphs"]["net"]["detection"] = {
        "kind": "two_stage",
        "levels": ["a"],
        "objectness": ["o"],
        "rpn_deltas": ["d"],
        "anchors": {"sizes": [[16]], "aspect_ratios": [[1.0]]},
        "roi_pool": {"kind": "ps_pool", "levels": ["a", "b"]},
        "box_head": {"graph": "net"},
    }
    with pytest.raises(PapersError, match="`kind: ps_pool` reads one map"):
        validate_spec(data)
