"""DeepLabv3 (arXiv 1706.05587): output stride 16 and 8 as build options, ASPP's rates doubled at 8,
block4's multi-grid, logits at the input's size. torchvision's deeplabv3_resnet50/101 are compared
strictly in tests/test_references.py (the spec's `equivalence:` cases)."""

from __future__ import annotations

import pytest
import torch

import papers
from papers.errors import PapersError


def _conv_args(variant: str, match, **options):
    flat = papers.expand_variant(variant, **options)
    return {node.name: node.args for node in flat.nodes if match(node.name)}


@pytest.mark.parametrize(("output_stride", "size"), [(16, 4), (8, 8)])
def test_the_output_stride_is_a_build_option(output_stride, size):
    shapes = papers.measure(
        "deeplabv3_resnet101_os16", image_size=64, output_stride=output_stride
    ).node_shapes
    assert tuple(shapes["backbone.layer4.2.relu"])[-2:] == (size, size)
    assert tuple(shapes["classifier.4"])[-3:] == (21, size, size)


@pytest.mark.parametrize(
    ("variant", "rates", "block4"),
    [
        # Section 3.3: rates 6, 12, 18 at output stride 16, doubled at 8; Section 3.2: block4's
        # unit rates (1, 2, 4) times the block's rate (2 at output stride 16, 4 at 8)
        ("deeplabv3_resnet101_os16", [6, 12, 18], [2, 4, 8]),
        ("deeplabv3_resnet101_os8", [12, 24, 36], [4, 8, 16]),
        # torchvision: rates 12, 24, 36, no multi-grid, layer4's first block at layer3's dilation
        ("deeplabv3_resnet50", [12, 24, 36], [2, 4, 4]),
    ],
)
def test_aspp_rates_and_multi_grid(variant, rates, block4):
    aspp = _conv_args(variant, lambda n: n.startswith("classifier.0.convs.") and n.endswith(".0"))
    assert [aspp[f"classifier.0.convs.{j}.0"]["dilation"] for j in (1, 2, 3)] == rates
    assert [aspp[f"classifier.0.convs.{j}.0"]["padding"] for j in (1, 2, 3)] == rates
    convs = _conv_args(variant, lambda n: n.startswith("backbone.layer4.") and n.endswith("conv2"))
    assert [convs[f"backbone.layer4.{i}.conv2"]["dilation"] for i in range(3)] == block4
    assert all(args["stride"] == 1 for args in convs.values())


def test_the_image_pooling_branch_is_upsampled_and_concatenated():
    shapes = papers.measure("deeplabv3_resnet101_os16", image_size=64).node_shapes
    assert tuple(shapes["classifier.0.convs.4.0"])[-2:] == (1, 1)
    assert tuple(shapes["image_pool"])[-3:] == (256, 4, 4)
    assert tuple(shapes["aspp"])[-3:] == (5 * 256, 4, 4)


@pytest.mark.parametrize(
    ("variant", "keys"), [("deeplabv3_resnet101_os8", {"out"}), ("deeplabv3_resnet50", {"out", "aux"})]
)
def test_logits_come_at_the_input_size(variant, keys):
    model = papers.build_model(variant, device="meta", image_size=48, num_classes=5).eval()
    out = model(torch.empty(2, 3, 48, 40, device="meta"))
    assert set(out) == keys
    assert all(tuple(t.shape) == (2, 5, 48, 40) for t in out.values())


def test_aux_loss_false_drops_the_auxiliary_output():
    model = papers.build_model("deeplabv3_resnet50", device="meta", image_size=48, aux_loss=False).eval()
    assert set(model(torch.empty(1, 3, 48, 48, device="meta"))) == {"out"}


def test_an_unknown_option_is_refused():
    with pytest.raises(PapersError, match="atrous"):
        papers.expand_variant("deeplabv3_resnet101_os16", atrous=3)
