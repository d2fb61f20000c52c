"""The VGG paper end to end: Table 2 checked, torchvision's weights load and compute the same (every
VGG variant's equivalence with torchvision is one of the spec-declared cases in test_references.py)."""

from __future__ import annotations

import pytest
import torch

import papers

torchvision = pytest.importorskip("torchvision")

PAPER_VARIANTS = ["vgg11", "vgg11_lrn", "vgg13", "vgg16_c", "vgg16", "vgg19"]


def assert_same_outputs(ours: torch.nn.Module, reference: torch.nn.Module, x: torch.Tensor) -> None:
    ours.eval()
    reference.eval()
    with torch.no_grad():
        a, b = ours(x), reference(x)
    assert a.shape == b.shape
    assert (a - b).abs().max() <= 1e-5 * b.abs().max()


def test_materialised_model_takes_torchvision_weights():
    reference = torchvision.models.vgg11()
    ours = papers.build_model("vgg11")
    assert {k: v.shape for k, v in ours.state_dict().items()} == {
        k: v.shape for k, v in reference.state_dict().items()
    }
    ours.load_state_dict(reference.state_dict(), strict=True)
    assert_same_outputs(ours, reference, torch.randn(1, 3, 32, 32))


def test_every_static_check_of_the_paper_passes():
    checks = papers.check("vgg")
    static = [c for c in checks if c.status != "not_measurable"]
    assert {c.variant for c in static if c.metric == "params"} == set(PAPER_VARIANTS)
    assert all(c.status == "pass" for c in static), [c for c in static if c.status != "pass"]


def test_reported_errors_are_not_measurable_without_weights():
    checks = papers.check("vgg16")
    assert {c.variant for c in checks} == {"vgg16"}
    errors = [c for c in checks if c.metric in ("top1_error", "top5_error")]
    assert errors and all(c.status == "not_measurable" for c in errors)


def test_vgg16_counts_match_torchvisions_published_metadata():
    # torchvision's weight metadata for vgg16: 138,357,544 parameters and 15.47 G multiply-adds
    m = papers.measure("vgg16")
    assert m.params == torchvision.models.VGG16_Weights.IMAGENET1K_V1.meta["num_params"]
    assert round(m.macs / 1e9, 2) == torchvision.models.VGG16_Weights.IMAGENET1K_V1.meta["_ops"]


def test_a_lrn_differs_from_a_by_one_lrn_after_the_first_convolution():
    ops = [layer.op for layer in papers.measure("vgg11_lrn").layers]
    plain = [layer.op for layer in papers.measure("vgg11").layers]
    assert ops[:4] == ["conv2d", "relu", "lrn", "maxpool2d"]
    assert ops[:2] + ops[3:] == plain


def test_num_classes_resets_the_head_and_smaller_inputs_build():
    model = papers.build_model("vgg11", num_classes=10, image_size=32)
    assert model.get_submodule("classifier.6").out_features == 10
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_feature_stages_return_maps_at_each_pooling():
    model = papers.build_model("vgg16", features=["stage1", "stage3", "stage5"], device="meta")
    out = model(torch.empty(1, 3, 224, 224, device="meta"))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "stage1": (1, 64, 112, 112),
        "stage3": (1, 256, 28, 28),
        "stage5": (1, 512, 7, 7),
    }


def test_the_built_model_compiles_to_straight_line_code():
    model = papers.build_model("vgg11", device="meta")
    assert 'getattr(self.features, "0")' in model.code
    assert " if " not in model.code and " for " not in model.code
