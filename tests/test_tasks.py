"""Task layers: a detector's and a segmenter's graph wrapped into torchvision's contracts.

The proof for detection is torchvision's own RetinaNet: its state_dict loads strictly into the
RetinaNet built from ``tests/specs/retinanet_demo.yaml``, and in eval mode both give the same boxes,
scores and labels; in training mode the same losses.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import papers
import papers.registry
from papers import hookspecs
from papers.errors import GraphError, PapersError
from papers.plugins import PluginInfo, PluginManager
from papers.registry import Registry
from papers.spec import validate_spec
from papers.tasks.detection import DenseDetector
from papers.tasks.segmentation import Segmenter
from tests.conftest import minimal_spec

SPECS = Path(__file__).parent / "specs"


class _TestSpecs:
    @hookspecs.hookimpl
    def papers_specs(self):
        return sorted(SPECS.glob("*.yaml"))


@pytest.fixture(scope="module")
def _registry() -> Registry:
    manager = PluginManager()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PAPERS_PLUGINS", "")
        manager.load_entry_points()
    manager.register(_TestSpecs(), PluginInfo("test_specs", "tests", "0", "tests"))
    return Registry(manager)


@pytest.fixture
def registry(_registry, monkeypatch) -> Registry:
    """The built-ins and the test specs (tests/specs) as the current registry."""
    monkeypatch.setattr(papers.registry, "_current", _registry)
    return _registry


SMALL = {"min_size": 128, "max_size": 160}
IMAGES = [(3, 120, 150), (3, 140, 100)]


def torchvision_retinanet(num_classes: int, **options):
    from torchvision.models.detection import retinanet_resnet50_fpn

    torch.manual_seed(0)
    return retinanet_resnet50_fpn(weights=None, weights_backbone=None, num_classes=num_classes, **options)


def test_a_detection_graph_builds_as_a_detector_with_torchvisions_state_dict(registry):
    model = papers.build_model("retinanet_demo", num_classes=5, **SMALL)
    assert isinstance(model, DenseDetector)
    reference = torchvision_retinanet(5, **SMALL)
    assert set(model.state_dict()) == set(reference.state_dict())
    raw = papers.build_model("retinanet_demo", raw=True, num_classes=5)
    assert not isinstance(raw, DenseDetector)


def test_retinanet_detections_are_torchvisions(registry):
    reference = torchvision_retinanet(5, score_thresh=0.0, **SMALL)
    ours = papers.build_model("retinanet_demo", num_classes=5, score_thresh=0.0, **SMALL)
    ours.load_state_dict(reference.state_dict(), strict=True)
    ours.eval()
    reference.eval()
    torch.manual_seed(1)
    images = [torch.rand(*shape) for shape in IMAGES]
    with torch.no_grad():
        mine, theirs = ours(images), reference(images)
    assert len(mine) == len(theirs) == 2
    for a, b in zip(mine, theirs, strict=True):
        assert set(a) == {"boxes", "scores", "labels"}
        assert len(a["boxes"]) == 300  # detections_per_img: every candidate passes a threshold of 0
        for key in a:
            assert torch.equal(a[key], b[key]), key
        # boxes are in the input image's pixels
        assert float(a["boxes"][:, 2].max()) <= 150 and float(a["boxes"][:, 3].max()) <= 140


def test_retinanet_losses_are_torchvisions(registry):
    reference = torchvision_retinanet(5, **SMALL)
    ours = papers.build_model("retinanet_demo", num_classes=5, **SMALL)
    ours.load_state_dict(reference.state_dict(), strict=True)
    torch.manual_seed(1)
    images = [torch.rand(*shape) for shape in IMAGES]
    targets = [
        {
            "boxes": torch.tensor([[10.0, 20.0, 60.0, 80.0], [30.0, 30.0, 100.0, 90.0]]),
            "labels": torch.tensor([1, 3]),
        },
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},  # an image with no object
    ]
    mine, theirs = ours(images, targets), reference(images, targets)
    assert set(mine) == set(theirs) == {"classification", "bbox_regression"}
    for key in mine:
        assert torch.allclose(mine[key], theirs[key], rtol=1e-6, atol=0), key
    sum(mine.values()).backward()
    assert ours.head.classification_head.cls_logits.weight.grad is not None


def test_task_build_options_keep_torchvisions_names_and_are_validated(registry):
    model = papers.build_model("retinanet_demo", num_classes=5, nms_thresh=0.3, detections_per_img=7, **SMALL)
    assert model.task.nms_thresh == 0.3 and model.task.detections_per_img == 7
    assert model.transform.min_size == (128,)
    with pytest.raises(PapersError, match="nms_thresh"):
        papers.build_model("retinanet_demo", num_classes=5, nms_thresh=3.0)
    with pytest.raises(ValueError, match="training mode takes targets"):  # as torchvision raises
        papers.build_model("retinanet_demo", num_classes=5, **SMALL).train()([torch.rand(3, 64, 64)])


def test_a_task_section_must_name_outputs_the_graph_gives(registry):
    data = minimal_spec(
        outputs=[{"name": "logits", "node": "fc"}],
        segmentation={"out": "scores"},
    )
    with pytest.raises(GraphError, match=r"segmentation\.out names 'scores'"):
        from papers.graph import expand

        expand(validate_spec(data), "net", {}, registry.catalogue)
    data = minimal_spec(
        detection={"levels": ["p3"], "anchors": {"sizes": [[32], [64]], "aspect_ratios": [[1.0]]}}
    )
    with pytest.raises(PapersError, match=r"anchors\.sizes gives 2 levels"):
        validate_spec(data)


def test_a_segmentation_graph_returns_out_and_aux_at_the_input_size(registry, tmp_path):
    data = minimal_spec(
        nodes=[
            {
                "name": "conv",
                "op": "conv2d",
                "args": {"out_channels": 8, "kernel_size": 3, "stride": 4, "padding": 1},
            },
            {"name": "relu", "op": "relu"},
            {"name": "classifier", "op": "conv2d", "args": {"out_channels": 3, "kernel_size": 1}},
            {
                "name": "aux_classifier",
                "op": "conv2d",
                "in": "conv",
                "args": {"out_channels": 3, "kernel_size": 1},
            },
        ],
        outputs=[{"name": "out", "node": "classifier"}, {"name": "aux", "node": "aux_classifier"}],
        segmentation={"out": "out", "aux": "aux"},
    )
    data["graphs"]["net"].pop("classifier")
    from papers.build import build
    from papers.graph import expand
    from papers.tasks import wrap

    flat = expand(validate_spec(data), "net", {}, registry.catalogue)
    network = build(flat, registry.catalogue, as_dict=True)
    model = wrap(network, flat.task, {})
    assert isinstance(model, Segmenter)
    images = torch.randn(2, 3, 16, 16)
    result = model.eval()(images)
    assert set(result) == {"out", "aux"} and result["out"].shape == (2, 3, 16, 16)
    expected = torch.nn.functional.interpolate(network(images)["out"], size=(16, 16), mode="bilinear")
    assert torch.equal(result["out"], expected)
    assert set(wrap(network, flat.task, {"aux_loss": False})(images)) == {"out"}
    assert set(model.state_dict()) == set(network.state_dict())
