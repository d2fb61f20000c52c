"""GoogLeNet: Table 1 checked, torchvision's GoogLeNet loads and computes the same, auxiliary heads."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import papers

torchvision = pytest.importorskip("torchvision")

VARIANTS = ["googlenet", "googlenet.torchvision"]
WEIGHTS = torchvision.models.GoogLeNet_Weights.IMAGENET1K_V1


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_builds_on_meta(variant):
    model = papers.build_model(variant, device="meta")
    assert model(torch.empty(1, 3, 224, 224, device="meta")).shape == (1, 1000)


def test_every_static_check_of_the_paper_passes():
    checks = papers.check("googlenet")
    assert not [c for c in checks if c.status == "fail"]
    static = [c for c in checks if c.status not in ("not_measurable", "inconsistent")]
    assert all(c.status == "pass" for c in static)
    # the figures the paper contradicts itself on are marked, with the reason, not dropped
    assert len([c for c in checks if c.status == "inconsistent" and c.reason]) == 4
    assert {c.scope for c in static if c.metric == "macs"} >= {
        "model",
        "node:inception3a",
        "node:inception4e",
        "node:inception5b",
    }
    assert sum(c.metric == "output_shape" for c in static) == 17
    errors = [c for c in checks if c.metric == "top5_error"]
    assert len(errors) == 7 and all(c.status == "not_measurable" for c in errors)


def test_torchvision_is_compared_at_its_smallest_input_with_and_without_auxiliary_heads():
    # the comparisons themselves run in tests/test_references.py, from the spec's data
    cases = papers.get_spec("googlenet").variant("googlenet.torchvision").equivalence
    assert {(c.options["image_size"], c.options.get("aux_logits", False)) for c in cases} == {
        (WEIGHTS.meta["min_size"][0], False),
        (WEIGHTS.meta["min_size"][0], True),
    }


def test_torchvision_variant_counts_match_torchvisions_published_metadata():
    m = papers.measure("googlenet.torchvision")
    assert m.params == WEIGHTS.meta["num_params"]
    assert round(m.macs / 1e9, 3) == WEIGHTS.meta["_ops"]


def test_aux_logits_returns_a_named_tuple_of_three_heads():
    model = papers.build_model("googlenet", aux_logits=True, num_classes=10, device="meta")
    out = model(torch.empty(2, 3, 224, 224, device="meta"))
    assert out._fields == ("logits", "aux1", "aux2")
    assert [tuple(t.shape) for t in out] == [(2, 10)] * 3
    assert model.get_submodule("aux1.fc2").out_features == 10


def test_default_returns_logits_only_and_has_no_auxiliary_weights():
    model = papers.build_model("googlenet", device="meta")
    assert isinstance(model(torch.empty(1, 3, 224, 224, device="meta")), torch.Tensor)
    assert not [k for k in model.state_dict() if k.startswith(("aux1.", "aux2."))]


def test_paper_auxiliary_heads_pool_5x5_stride_3_to_4x4():
    # Section 5: 4×4×512 after (4a), 4×4×528 after (4d); then 1×1 conv 128, fc 1024, dropout 0.7
    m = papers.measure("googlenet", aux_logits=True)
    assert m.node_shapes["aux1.pool"] == [1, 512, 4, 4]
    assert m.node_shapes["aux2.pool"] == [1, 528, 4, 4]
    model = papers.build_model("googlenet", aux_logits=True, device="meta")
    assert model.get_submodule("aux1.conv.conv").out_channels == 128
    assert model.get_submodule("aux1.fc1").out_features == 1024
    assert model.get_submodule("aux1.dropout").p == 0.7


def test_paper_network_has_5x5_branches_lrn_and_no_batch_norm():
    model = papers.build_model("googlenet", device="meta")
    assert all(
        model.get_submodule(f"{m}.branch3.1.conv").kernel_size == (5, 5)
        for m in ("inception3a", "inception5b")
    )
    assert isinstance(model.get_submodule("norm1"), nn.LocalResponseNorm)
    assert isinstance(model.get_submodule("norm2"), nn.LocalResponseNorm)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert model.get_submodule("dropout").p == 0.4
    assert model.get_submodule("maxpool4").kernel_size == 3


def test_torchvision_variant_has_3x3_branches_batch_norm_and_no_lrn():
    model = papers.build_model("googlenet.torchvision", device="meta")
    assert model.get_submodule("inception3a.branch3.1.conv").kernel_size == (3, 3)
    assert model.get_submodule("conv1.bn").eps == 1e-3
    assert not any(isinstance(m, nn.LocalResponseNorm) for m in model.modules())


@pytest.mark.parametrize("variant", VARIANTS)
def test_feature_stages_return_maps_at_each_resolution(variant):
    model = papers.build_model(
        variant, features=["stage1", "stage2", "stage3", "stage4", "stage5"], device="meta"
    )
    out = model(torch.empty(1, 3, 224, 224, device="meta"))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "stage1": (1, 64, 112, 112),
        "stage2": (1, 192, 56, 56),
        "stage3": (1, 480, 28, 28),
        "stage4": (1, 832, 14, 14),
        "stage5": (1, 1024, 7, 7),
    }
