"""FCN (arXiv 1411.4038): VGG-16 made fully convolutional, the 100-pixel padding and the final crop,
FCN-32s/16s/8s with bilinear-initialised upsampling and zero-initialised scoring; torchvision's
fcn_resnet50/101 on a dilated ResNet. Their strict equivalence runs in tests/test_references.py."""

from __future__ import annotations

import pytest
import torch

import papers
from papers.layers import bilinear_kernel


@pytest.mark.parametrize("variant", ["fcn32s", "fcn16s", "fcn8s"])
@pytest.mark.parametrize("size", [64, 500])
def test_the_crop_gives_scores_at_the_input_size(variant, size):
    shapes = papers.measure(variant, image_size=size).node_shapes
    assert tuple(shapes["conv1_1"])[-1] == size + 198  # padding 100, 3×3
    assert tuple(shapes["score"])[-3:] == (21, size, size)


def test_fc6_and_fc7_are_convolutions():
    flat = papers.expand_variant("fcn32s")
    nodes = {node.name: node for node in flat.nodes}
    assert nodes["fc6"].op == "conv2d" and nodes["fc6"].args["out_channels"] == 4096
    assert nodes["fc6"].args["kernel_size"] == 7
    assert nodes["fc7"].args["kernel_size"] == 1 and nodes["fc7"].args["out_channels"] == 4096
    assert nodes["conv1_1"].args["padding"] == 100
    assert all(nodes[f"pool{s}"].args["ceil_mode"] for s in range(1, 6))


@pytest.mark.parametrize(
    ("variant", "skips", "crops"),
    [
        ("fcn32s", set(), {"score": 19}),
        ("fcn16s", {"score_pool4"}, {"score_pool4c": 5, "score": 27}),
        ("fcn8s", {"score_pool4", "score_pool3"}, {"score_pool4c": 5, "score_pool3c": 9, "score": 31}),
    ],
)
def test_skips_and_crop_offsets(variant, skips, crops):
    nodes = {node.name: node for node in papers.expand_variant(variant).nodes}
    assert {n for n in nodes if n.startswith("score_pool") and not n.endswith("c")} == skips
    assert {n: nodes[n].args["offset"] for n in nodes if nodes[n].op == "crop_as"} == crops


def test_upsampling_is_bilinear_and_scoring_starts_at_zero():
    torch.manual_seed(0)
    model = papers.build_model("fcn8s", raw=True, image_size=64, num_classes=3)
    for name, kernel in [("upscore2", 4), ("upscore_pool4", 4), ("upscore8", 16)]:
        weight = getattr(model, name).weight
        assert weight.shape == (3, 3, kernel, kernel)
        expected = torch.zeros_like(weight)
        for c in range(3):
            expected[c, c] = bilinear_kernel((kernel, kernel))
        assert torch.equal(weight, expected)
    for name in ["score_fr", "score_pool4", "score_pool3"]:
        assert not getattr(model, name).weight.any() and not getattr(model, name).bias.any()
    # a zero-initialised net scores every class 0 everywhere, at the input's size
    out = papers.build_model("fcn8s", image_size=64, num_classes=3).eval()(torch.rand(1, 3, 64, 56))
    assert out["out"].shape == (1, 3, 64, 56) and not out["out"].any()


def test_a_bilinear_transposed_convolution_interpolates():
    # upscore2's filter doubles a ramp into a ramp (away from the borders)
    model = papers.build_model("fcn16s", raw=True, image_size=64, num_classes=1)
    ramp = torch.arange(6.0).repeat(6, 1)[None, None]
    up = model.upscore2(ramp)[0, 0]
    row = up[5, 3:9]
    assert torch.allclose(row[1:] - row[:-1], torch.full((5,), 0.5))


@pytest.mark.parametrize("variant", ["fcn_resnet50", "fcn_resnet101"])
def test_torchvisions_fcn_is_dilated_with_out_and_aux_at_the_input_size(variant):
    shapes = papers.measure(variant, image_size=64).node_shapes
    assert tuple(shapes["backbone.layer4.2.relu"])[-3:] == (2048, 8, 8)  # output stride 8
    nodes = {node.name: node.args for node in papers.expand_variant(variant).nodes}
    assert nodes["backbone.layer3.0.conv2"]["dilation"] == 1  # the previous stage's, as torchvision
    assert nodes["backbone.layer3.1.conv2"]["dilation"] == 2
    assert nodes["backbone.layer4.0.conv2"]["dilation"] == 2
    assert nodes["backbone.layer4.1.conv2"]["dilation"] == 4
    model = papers.build_model(variant, device="meta", image_size=64).eval()
    out = model(torch.empty(1, 3, 40, 48, device="meta"))
    assert {k: tuple(v.shape) for k, v in out.items()} == {"out": (1, 21, 40, 48), "aux": (1, 21, 40, 48)}
