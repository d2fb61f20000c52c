"""Two-stage detectors (Faster R-CNN, FPN): the region task layer against torchvision's own model.

torchvision's ``fasterrcnn_resnet50_fpn`` (FrozenBatchNorm2d, as it has it with pretrained weights)
loads strictly into ours, built from ``specs/detection/fpn.yaml``; with random batch-norm statistics
both give the same RPN head outputs, proposals and detections on two small images of different sizes.
"""

from __future__ import annotations

import pytest
import torch
import yaml

import papers
from papers.errors import PapersError
from papers.graph import expand
from papers.registry import get_registry
from papers.spec import validate_spec
from papers.tasks.region import RegionDetector
from tests.conftest import minimal_spec
from tests.equivalence import randomise_batch_norms, relative_difference

SMALL = {"min_size": 128, "max_size": 192}
IMAGES = [(3, 150, 190), (3, 170, 130)]
LEVELS = ["p2", "p3", "p4", "p5", "p6"]


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def torchvision_faster_rcnn(**options):
    """``fasterrcnn_resnet50_fpn`` as torchvision builds it with pretrained backbone weights (frozen
    batch norms, three trainable stages), at random initialisation."""
    from torchvision.models import resnet50
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.ops import FrozenBatchNorm2d

    torch.manual_seed(0)
    backbone = _resnet_fpn_extractor(resnet50(weights=None, norm_layer=FrozenBatchNorm2d), 3)
    return FasterRCNN(backbone, num_classes=91, **options)


def _images() -> list[torch.Tensor]:
    torch.manual_seed(1)
    return [torch.rand(*shape) for shape in IMAGES]


def test_fasterrcnn_resnet50_fpn_gives_torchvisions_head_outputs_proposals_and_detections():
    reference = torchvision_faster_rcnn(box_score_thresh=0.0, **SMALL)
    randomise_batch_norms(reference)
    ours = papers.build_model("fasterrcnn_resnet50_fpn", device="meta", box_score_thresh=0.0, **SMALL)
    assert isinstance(ours, RegionDetector)
    ours.load_state_dict(reference.state_dict(), strict=True, assign=True)
    ours.eval()
    reference.eval()
    images = _images()
    with torch.no_grad():
        batch, _ = reference.transform(images)
        features = reference.backbone(batch.tensors)
        objectness, deltas = reference.rpn.head(list(features.values()))
        proposals, _ = reference.rpn(batch, features)
        outputs = ours.head_outputs(batch)
        mine, _ = ours.propose(batch, outputs)
        for index, level in enumerate(LEVELS):
            for a, b in (
                (outputs[level], features[str(index) if index < 4 else "pool"]),
                (outputs[f"objectness_{level}"], objectness[index]),
                (outputs[f"deltas_{level}"], deltas[index]),
            ):
                assert a.shape == b.shape and relative_difference(a, b) <= 1e-5, level
        for a, b in zip(mine, proposals, strict=True):
            assert a.shape == b.shape and len(a) > 100
            assert relative_difference(a, b) <= 1e-5
        detected, expected = ours(images), reference(images)
    for a, b, shape in zip(detected, expected, IMAGES, strict=True):
        assert set(a) == {"boxes", "scores", "labels"}
        assert len(a["boxes"]) == len(b["boxes"]) == 100  # box_detections_per_img, nothing thresholded
        assert torch.equal(a["labels"], b["labels"])
        assert relative_difference(a["boxes"], b["boxes"]) <= 1e-4
        assert relative_difference(a["scores"], b["scores"]) <= 1e-5
        # boxes are in the input image's pixels (clipped there, up to rescaling's rounding)
        assert (
            float(a["boxes"][:, 2].max()) <= shape[2] + 1e-3
            and float(a["boxes"][:, 3].max()) <= shape[1] + 1e-3
        )


def test_a_training_call_returns_torchvisions_four_losses_with_gradients():
    model = papers.build_model("fasterrcnn_resnet50_fpn", num_classes=4, min_size=96, max_size=128)
    model.train()
    targets = [
        {
            "boxes": torch.tensor([[10.0, 20.0, 60.0, 80.0], [30.0, 30.0, 100.0, 90.0]]),
            "labels": torch.tensor([1, 3]),
        },
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},  # an image with no object
    ]
    losses = model([image[:, :120, :110] for image in _images()], targets)
    assert set(losses) == {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg"}
    assert all(torch.isfinite(value) and value.ndim == 0 for value in losses.values())
    sum(losses.values()).backward()
    for name in (
        "rpn.head.conv.0.0.weight",
        "roi_heads.box_predictor.cls_score.weight",
        "backbone.fpn.inner_blocks.0.0.weight",
    ):
        gradient = model.get_parameter(name).grad
        assert (
            gradient is not None and bool(torch.isfinite(gradient).all()) and float(gradient.abs().sum()) > 0
        ), name
    with pytest.raises(ValueError, match="training mode takes targets"):
        model(_images())


def test_build_options_keep_torchvisions_names_and_reach_the_task_layer():
    model = papers.build_model(
        "fasterrcnn_resnet50_fpn",
        device="meta",
        num_classes=5,
        box_score_thresh=0.3,
        box_nms_thresh=0.4,
        box_detections_per_img=7,
        rpn_post_nms_top_n_test=50,
        rpn_nms_thresh=0.6,
        min_size=320,
        max_size=480,
    )
    roi_heads, rpn = model.roi_heads_layer, model.rpn_layer
    assert (roi_heads.score_thresh, roi_heads.nms_thresh, roi_heads.detections_per_img) == (0.3, 0.4, 7)
    assert (
        roi_heads.fg_bg_sampler.batch_size_per_image == 512
        and roi_heads.fg_bg_sampler.positive_fraction == 0.25
    )
    assert roi_heads.box_coder.weights == (10.0, 10.0, 5.0, 5.0)
    assert rpn._post_nms_top_n["testing"] == 50 and rpn.nms_thresh == 0.6
    assert model.transform.min_size == (320,) and model.transform.max_size == 480
    # num_classes is the graph's and reaches the box head graph, whose parameter has the same name
    assert model.roi_heads.box_predictor.cls_score.out_features == 5
    assert model.roi_heads.box_predictor.bbox_pred.out_features == 20
    with pytest.raises(PapersError, match="box_nms_thresh"):
        papers.build_model("fasterrcnn_resnet50_fpn", device="meta", box_nms_thresh=2.0)


def _two_stage(**section):
    """A tiny two-stage detector spec: one map, its objectness and deltas, and a box head graph."""
    data = minimal_spec()
    data["topics"] = ["detection"]
    data["graphs"]["net"] = {
        "inputs": {"image": [3, 32, 32]},
        "nodes": [
            {"name": "conv", "op": "conv2d", "args": {"out_channels": 8, "kernel_size": 3, "padding": 1}},
            {"name": "cls", "op": "conv2d", "in": "conv", "args": {"out_channels": 1, "kernel_size": 1}},
            {"name": "box", "op": "conv2d", "in": "conv", "args": {"out_channels": 4, "kernel_size": 1}},
        ],
        "outputs": [
            {"name": "c", "node": "conv"},
            {"name": "o", "node": "cls"},
            {"name": "d", "node": "box"},
        ],
        "detection": {
            "kind": "two_stage",
            "levels": ["c"],
            "objectness": ["o"],
            "rpn_deltas": ["d"],
            "anchors": {"sizes": [[16]], "aspect_ratios": [[1.0]]},
            "roi_pool": {"kind": "pool", "levels": ["c"]},
            "box_head": {"graph": "head"},
            **section,
        },
    }
    data["graphs"]["head"] = {
        "inputs": {"pooled": [8, 2, 2]},
        "nodes": [
            {"name": "flat", "op": "flatten", "args": {"start_dim": 1}},
            {"name": "cls_score", "op": "linear", "args": {"out_features": 3}},
            {"name": "bbox_pred", "op": "linear", "in": "flat", "args": {"out_features": 12}},
        ],
        "outputs": [
            {"name": "class_logits", "node": "cls_score"},
            {"name": "box_regression", "node": "bbox_pred"},
        ],
    }
    return data


def test_a_detection_section_naming_a_missing_output_is_refused_naming_the_field():
    registry = get_registry()
    expand(validate_spec(_two_stage()), "net", {}, registry.catalogue)  # the valid one expands
    with pytest.raises(PapersError, match=r"detection\.rpn_deltas names 'deltas'") as caught:
        expand(validate_spec(_two_stage(rpn_deltas=["deltas"])), "net", {}, registry.catalogue)
    assert caught.value.field == "graphs.net.detection.rpn_deltas"
    with pytest.raises(PapersError, match=r"detection\.roi_pool\.levels names 'p9'"):
        expand(
            validate_spec(_two_stage(roi_pool={"kind": "pool", "levels": ["p9"]})),
            "net",
            {},
            registry.catalogue,
        )
    with pytest.raises(PapersError, match="objectness names 2 outputs, `levels` 1"):
        validate_spec(_two_stage(objectness=["o", "o"]))
    with pytest.raises(PapersError, match="reads one map"):
        validate_spec(_two_stage(roi_pool={"kind": "pool", "levels": ["c", "o"]}))


@pytest.mark.parametrize(
    ("section", "field", "message"),
    [
        (
            {"rpn_deltas": ["deltas"]},
            "graphs.net.detection.rpn_deltas",
            "names 'deltas', which is not an output",
        ),
        ({"box_head": {"graph": "heads"}}, "graphs.net.detection.box_head.graph", "no graph 'heads'"),
    ],
)
def test_validate_refuses_a_two_stage_section_in_one_line_naming_file_and_field(
    run, tmp_path, section, field, message
):
    path = tmp_path / "detector.yaml"
    path.write_text(yaml.safe_dump(_two_stage(**section)), encoding="utf-8")
    result = run("validate", str(path))
    assert result.exit_code == 2 and result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert f"{path}: {field}:" in result.stderr and message in result.stderr
    path.write_text(yaml.safe_dump(_two_stage()), encoding="utf-8")
    assert run("validate", str(path)).exit_code == 0


def test_the_rpn_object_logit_is_the_papers_two_class_softmax():
    from papers_plugins.detection.faster_rcnn_layers import ObjectLogit

    torch.manual_seed(2)
    scores = torch.randn(2, 18, 5, 4)  # 2k scores, k = 9: the background scores first
    probabilities = scores.view(2, 2, 9, 5, 4).softmax(dim=1)[:, 1]
    assert torch.allclose(torch.sigmoid(ObjectLogit()(scores)), probabilities, atol=1e-6)
    with pytest.raises(ValueError, match="two scores per anchor"):
        ObjectLogit()(torch.randn(1, 9, 2, 2))


def test_faster_rcnn_zf_pools_rois_from_conv5_and_detects_and_trains():
    from torchvision.ops import roi_pool

    model = papers.build_model(
        "faster_rcnn_zf", num_classes=4, min_size=128, max_size=160, box_score_thresh=0.0
    )
    assert model.roi_heads.box_predictor.cls_score.out_features == 4  # num_classes reaches the box head
    model.eval()
    images = _images()
    with torch.no_grad():
        batch, _ = model.transform(images)
        outputs = model.head_outputs(batch)
        assert outputs["objectness"].shape[1] == 9 and outputs["rpn_deltas"].shape[1] == 36
        boxes = [torch.tensor([[0.0, 0.0, 64.0, 48.0], [16.0, 32.0, 120.0, 100.0]])] * 2
        pooled = model.roi_heads_layer.box_roi_pool(outputs, boxes, batch.image_sizes)
        assert torch.equal(pooled, roi_pool(outputs["conv5"], boxes, 6, 1 / 16))  # stride 16, ZF's 6×6
        detections = model(images)
    assert [set(d) for d in detections] == [{"boxes", "scores", "labels"}] * 2
    assert all(len(d["boxes"]) > 0 and int(d["labels"].max()) < 4 for d in detections)
    model.train()
    targets = [{"boxes": torch.tensor([[10.0, 20.0, 90.0, 100.0]]), "labels": torch.tensor([2])}] * 2
    losses = model(images, targets)
    assert set(losses) == {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg"}
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())
    assert float(model.get_parameter("rpn.cls_score.weight").grad.abs().sum()) > 0


@pytest.mark.parametrize(
    "variant",
    [
        "fasterrcnn_resnet50_fpn",
        "fpn_resnet50",
        "fpn_box_head",
        "faster_rcnn_vgg16",
        "faster_rcnn_zf",
        "zf5",
        "faster_rcnn_vgg16_box_head",
        "faster_rcnn_zf_box_head",
    ],
)
def test_every_new_variant_builds_on_the_meta_device_and_its_static_checks_pass(variant):
    papers.build_model(variant, device="meta")
    failed = [check for check in papers.check(variant) if check.status == "fail"]
    assert not failed, failed


def _wrapped(data):
    """The tiny two-stage spec's detector, built as `build_model` builds one (both graphs)."""
    from papers.build import build
    from papers.tasks import wrap

    spec, catalogue = validate_spec(data), get_registry().catalogue

    def build_graph(name, args):
        other = expand(spec, name, args, catalogue)
        return build(other, catalogue, as_dict=True), other

    flat = expand(spec, "net", {}, catalogue)
    return wrap(
        build(flat, catalogue, as_dict=True), flat.task, {"min_size": 32, "max_size": 32}, build_graph
    )


def test_a_tiny_two_stage_spec_detects_and_a_box_head_clashing_with_the_detector_is_refused():
    model = _wrapped(_two_stage()).eval()
    torch.manual_seed(3)
    with torch.no_grad():
        [detections] = model([torch.rand(3, 32, 32)])
    assert set(detections) == {"boxes", "scores", "labels"}
    clash = _two_stage()
    clash["graphs"]["head"]["nodes"][1]["name"] = "conv"  # the detector graph's first layer
    clash["graphs"]["head"]["outputs"][0]["node"] = "conv"
    with pytest.raises(PapersError, match="both name a layer 'conv'") as caught:
        _wrapped(clash)
    assert caught.value.field == "detection.box_head.graph"
    unpooled = _two_stage()
    unpooled["graphs"]["head"]["inputs"] = {"pooled": [8, 2, 3]}
    unpooled["graphs"]["head"]["nodes"][1]["args"]["out_features"] = 3
    with pytest.raises(PapersError, match=r"takes one input \[C, s, s\]"):
        _wrapped(unpooled)
