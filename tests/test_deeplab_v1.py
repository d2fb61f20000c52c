"""DeepLab v1 (arXiv 1412.7062): VGG-16 at output stride 8 with atrous convolution (conv5 at rate 2,
fc6 at rate 4 or 12), the 7×7, 4×4 and LargeFOV forms of fc6 and Table 2's parameter counts."""

from __future__ import annotations

import pytest
import torch

import papers
from papers.receptive_field import receptive_field

FC6 = {  # variant: kernel, rate, channels of fc6 (Table 2)
    "deeplab_v1_7x7": (7, 4, 4096),
    "deeplab_v1": (4, 4, 4096),
    "deeplab_v1_4x4": (4, 8, 4096),
    "deeplab_v1_largefov": (3, 12, 1024),
}


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.mark.parametrize("variant", list(FC6))
def test_fc6_and_the_output_stride(variant):
    nodes = {node.name: node.args for node in papers.expand_variant(variant).nodes}
    fc6 = nodes["fc6"]
    assert (fc6["kernel_size"], fc6["dilation"], fc6["out_channels"]) == FC6[variant]
    assert nodes["fc7"]["out_channels"] == FC6[variant][2] and nodes["fc7"]["kernel_size"] == 1
    assert [nodes[f"pool{s}"]["stride"] for s in range(1, 6)] == [2, 2, 2, 1, 1]
    assert all(nodes[f"conv5_{i}"]["dilation"] == 2 for i in (1, 2, 3))
    shapes = papers.measure(variant, image_size=64).node_shapes
    assert tuple(shapes["pool5"])[-2:] == (8, 8) and tuple(shapes["fc8"])[-3:] == (21, 8, 8)


def test_out_comes_at_the_input_size():
    torch.manual_seed(0)
    model = papers.build_model("deeplab_v1_largefov", image_size=32, num_classes=4).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 32, 40))
    assert set(out) == {"out"} and out["out"].shape == (1, 4, 32, 40)


def test_the_full_size_networks_build_on_the_meta_device():
    for variant in FC6:
        model = papers.build_model(variant, device="meta")
        assert sum(p.numel() for p in model.parameters()) == papers.measure(variant).params
        assert model(torch.empty(1, 3, 321, 321, device="meta"))["out"].shape == (1, 21, 321, 321)


def test_largefov_sees_as_far_as_the_7x7_fc6_with_a_seventh_of_the_parameters():
    # fc6's span at stride 8: (7 - 1)·4 = (3 - 1)·12 = (4 - 1)·8 = 24 cells; 4×4 at rate 4 spans 12
    fields = {variant: receptive_field(papers.expand_variant(variant), "fc6") for variant in FC6}
    assert fields["deeplab_v1_7x7"] == fields["deeplab_v1_largefov"] == fields["deeplab_v1_4x4"]
    assert fields["deeplab_v1_7x7"] - fields["deeplab_v1"] == 12 * 8
    params = {
        variant: papers.measure(variant).params for variant in ("deeplab_v1_7x7", "deeplab_v1_largefov")
    }
    assert 6 < params["deeplab_v1_7x7"] / params["deeplab_v1_largefov"] < 7


def test_static_checks_pass():
    checks = papers.check("deeplab_v1")
    assert {(c.variant, c.reported) for c in checks} == {
        ("deeplab_v1_7x7", 134.3),
        ("deeplab_v1_largefov", 20.5),
    }
    assert all(c.status == "pass" for c in checks)
