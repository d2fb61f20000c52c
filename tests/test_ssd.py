"""SSD (Liu et al. 2016): the paper's SSD300 and SSD512 and torchvision's ssd300_vgg16.

torchvision's model loads strictly into ``ssd300_vgg16`` built from ``specs/detection/ssd.yaml``; both
give the same raw head outputs, default boxes, detections (every candidate, ``score_thresh=0``) and
losses (matching, hard negative mining, smooth L1 and softmax cross-entropy).
"""

from __future__ import annotations

import pytest
import torch

import papers
from papers.errors import PapersError
from papers.spec import validate_spec
from papers.tasks.detection import SingleShotDetector
from tests.conftest import minimal_spec
from tests.equivalence import relative_difference

IMAGES = [(3, 120, 150), (3, 140, 100)]
LEVELS = ["conv4_3", "fc7", "conv8_2", "conv9_2", "conv10_2", "conv11_2"]


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _images() -> list[torch.Tensor]:
    torch.manual_seed(1)
    return [torch.rand(*shape) for shape in IMAGES]


@pytest.fixture(scope="module")
def pair():
    from torchvision.models.detection import ssd300_vgg16

    torch.manual_seed(0)
    reference = ssd300_vgg16(weights=None, weights_backbone=None, score_thresh=0.0).eval()
    with torch.no_grad():  # a scale that is not the initial 20 everywhere
        reference.backbone.scale_weight.uniform_(5.0, 30.0)
    ours = papers.build_model("ssd300_vgg16", device="meta", score_thresh=0.0)
    ours.load_state_dict(reference.state_dict(), strict=True, assign=True)
    return ours.eval(), reference


def test_torchvisions_state_dict_loads_strictly_with_the_same_names(pair):
    ours, reference = pair
    assert isinstance(ours, SingleShotDetector)
    assert set(ours.state_dict()) == set(reference.state_dict())
    assert "backbone.scale_weight" in ours.state_dict()


def test_the_maps_head_outputs_and_default_boxes_are_torchvisions(pair):
    ours, reference = pair
    with torch.no_grad():
        batch, _ = reference.transform(_images())
        features = list(reference.backbone(batch.tensors).values())
        expected = reference.head(features)
        outputs = ours.network(batch.tensors)
        boxes = ours.anchor_generator(batch, [outputs[level] for level in LEVELS])
        expected_boxes = reference.anchor_generator(batch, features)
    for level, feature in zip(LEVELS, features, strict=True):
        assert relative_difference(outputs[level], feature) <= 1e-5, level
    for name in ("cls_logits", "bbox_regression"):
        assert outputs[name].shape == expected[name].shape
        assert relative_difference(outputs[name], expected[name]) <= 1e-5, name
    for a, b in zip(boxes, expected_boxes, strict=True):
        assert a.shape == (8732, 4) and torch.equal(a, b)


def test_the_detections_are_torchvisions(pair):
    ours, reference = pair
    with torch.no_grad():
        mine, theirs = ours(_images()), reference(_images())
    for a, b, shape in zip(mine, theirs, IMAGES, strict=True):
        assert len(a["boxes"]) == 200  # detections_per_img: every candidate passes a threshold of 0
        assert torch.equal(a["labels"], b["labels"])
        for key in ("boxes", "scores"):
            assert relative_difference(a[key], b[key]) <= 1e-5, key
        assert float(a["boxes"][:, 2].max()) <= shape[2] and float(a["boxes"][:, 3].max()) <= shape[1]


def test_the_losses_are_torchvisions(pair):
    ours, reference = pair
    targets = [
        {
            "boxes": torch.tensor([[10.0, 20.0, 60.0, 80.0], [30.0, 30.0, 100.0, 90.0]]),
            "labels": torch.tensor([1, 3]),
        },
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},  # no object
    ]
    ours.train()
    reference.train()
    try:
        mine, theirs = ours(_images(), targets), reference(_images(), targets)
    finally:
        ours.eval()
        reference.eval()
    assert set(mine) == set(theirs) == {"classification", "bbox_regression"}
    for key in mine:
        assert torch.allclose(mine[key], theirs[key], rtol=1e-5, atol=0), key
    sum(mine.values()).backward()
    assert ours.backbone.scale_weight.grad is not None


def test_the_papers_ssd300_and_ssd512_lay_8732_and_24564_default_boxes():
    for variant, size, count in (("ssd300", 300, 8732), ("ssd512", 512, 24564)):
        model = papers.build_model(variant, device="meta")
        outputs = model.network(torch.empty(1, 3, size, size, device="meta"))
        assert outputs["cls_logits"].shape == (1, count, 21), variant
        levels = [outputs[name] for name in model.task.levels]
        image = torch.empty(1, 3, size, size)
        from torchvision.models.detection.image_list import ImageList

        batch = ImageList(image, [(size, size)])
        boxes = model.anchor_generator(batch, [torch.empty(level.shape) for level in levels])
        assert boxes[0].shape == (count, 4), variant


def test_conv4_3_is_l2_normalised_with_a_learned_scale_of_20():
    model = papers.build_model("ssd300", image_size=300)
    assert torch.equal(model.backbone.scale_weight, torch.full((512,), 20.0))
    x = torch.randn(1, 512, 4, 4)
    norms = model.backbone(x).norm(dim=1)
    assert torch.allclose(norms, torch.full_like(norms, 20.0), rtol=1e-5)


def test_conv4_3s_initial_scale_is_a_build_option():
    model = papers.build_model("ssd300", image_size=300, widths=[8, 16, 32, 64, 64], l2norm_scale=7.0)
    assert torch.equal(model.backbone.scale_weight, torch.full((64,), 7.0))
    norms = model.backbone(torch.randn(1, 64, 4, 4)).norm(dim=1)
    assert torch.allclose(norms, torch.full_like(norms, 7.0), rtol=1e-5)


def test_the_papers_default_box_scales_and_task_settings():
    task = papers.build_model("ssd300", device="meta").task
    assert task.default_boxes.scales[:2] == [0.1, 0.2] and task.default_boxes.scales[5] == 0.9
    assert (task.iou_thresh, task.positive_fraction) == (0.5, 0.25)  # 3 negatives per positive
    assert (task.score_thresh, task.nms_thresh, task.detections_per_img) == (0.01, 0.45, 200)
    assert task.size == 300 and task.default_boxes.steps is None  # centres (i + 0.5)/|f_k|


def test_build_options_keep_torchvisions_names_and_are_validated():
    model = papers.build_model("ssd300_vgg16", device="meta", nms_thresh=0.3, topk_candidates=50)
    assert (model.nms_thresh, model.topk_candidates) == (0.3, 50)
    assert model.neg_to_pos_ratio == 3.0
    assert model.transform.fixed_size == (300, 300)
    with pytest.raises(PapersError, match="positive_fraction"):
        papers.build_model("ssd300_vgg16", device="meta", positive_fraction=0.0)


def test_an_ssd_section_refuses_what_it_does_not_read_and_counts_its_levels():
    section = {"kind": "ssd", "levels": ["p3"], "default_boxes": {"aspect_ratios": [[2]]}}
    validate_spec(minimal_spec(detection=section))
    with pytest.raises(PapersError, match="does not use focal_gamma"):
        validate_spec(minimal_spec(detection={**section, "focal_gamma": 2.0}))
    with pytest.raises(PapersError, match=r"default_boxes\.aspect_ratios gives 2 levels"):
        validate_spec(minimal_spec(detection={**section, "default_boxes": {"aspect_ratios": [[2], [2]]}}))
    with pytest.raises(PapersError, match="one more than the 1 levels"):
        validate_spec(
            minimal_spec(detection={**section, "default_boxes": {"aspect_ratios": [[2]], "scales": [0.1]}})
        )


def test_ssd300_vgg16_has_the_parameters_torchvisions_weights_declare():
    from torchvision.models.detection import SSD300_VGG16_Weights

    model = papers.build_model("ssd300_vgg16", device="meta")
    count = sum(parameter.numel() for parameter in model.parameters())
    assert count == SSD300_VGG16_Weights.COCO_V1.meta["num_params"] == 35_641_826


def test_the_image_transform_is_the_fixed_size():
    task = papers.build_model("ssd512", device="meta").task
    assert (task.transform.min_size, task.transform.max_size, task.transform.size_divisible) == (512, 512, 1)
    section = {"kind": "ssd", "levels": ["p3"], "default_boxes": {"aspect_ratios": [[2]]}}
    with pytest.raises(PapersError, match=r"transform\.min_size is 300"):
        validate_spec(minimal_spec(detection={**section, "transform": {"min_size": 800}}))
