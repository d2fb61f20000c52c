"""AlexNet (Krizhevsky et al. 2012): the two-tower network as grouped convolutions, torchvision's model."""

from __future__ import annotations

import pytest
import torch

import papers

pytest.importorskip("torchvision")

VARIANTS = ["alexnet", "alexnet.torchvision"]


def conv_layers(model: torch.nn.Module) -> list[torch.nn.Conv2d]:
    return [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_builds_on_meta(variant):
    model = papers.build_model(variant, device="meta")
    assert model(torch.empty(1, 3, 224, 224, device="meta")).shape == (1, 1000)


def test_static_checks_of_the_paper_pass():
    checks = papers.check("alexnet")
    assert not [c for c in checks if c.status == "fail"]
    static = {(c.variant, c.metric): c.status for c in checks if c.status != "not_measurable"}
    assert static == {("alexnet", "params"): "pass", ("alexnet", "output_shape"): "pass"}


def test_torchvision_variant_counts_match_torchvisions_published_metadata():
    from torchvision.models import AlexNet_Weights

    m = papers.measure("alexnet.torchvision")
    assert m.params == AlexNet_Weights.IMAGENET1K_V1.meta["num_params"]
    assert round(m.macs / 1e9, 3) == AlexNet_Weights.IMAGENET1K_V1.meta["_ops"]


def test_paper_conv1_gives_96_maps_of_55x55_from_a_224_input():
    m = papers.measure("alexnet")
    assert m.input_shapes == {"image": [1, 3, 224, 224]}
    assert m.node_shapes["features.0"] == [1, 96, 55, 55]


def test_paper_towers_are_grouped_convolutions_with_the_kernel_shapes_of_section_3_5():
    convs = conv_layers(papers.build_model("alexnet", device="meta"))
    assert [c.groups for c in convs] == [1, 2, 1, 2, 2]
    # 96 of 11×11×3, 256 of 5×5×48, 384 of 3×3×256, 384 of 3×3×192, 256 of 3×3×192
    assert [tuple(c.weight.shape) for c in convs] == [
        (96, 3, 11, 11),
        (256, 48, 5, 5),
        (384, 256, 3, 3),
        (384, 192, 3, 3),
        (256, 192, 3, 3),
    ]
    assert convs[0].stride == (4, 4)


def test_a_grouped_layer_keeps_the_towers_apart():
    torch.manual_seed(0)
    conv2 = papers.build_model("alexnet", device="meta").get_submodule("features.4").to_empty(device="cpu")
    conv2.reset_parameters()
    x = torch.randn(1, 96, 27, 27, requires_grad=True)
    out = conv2(x)
    (grad,) = torch.autograd.grad(out[0, :128].sum(), x)  # the first tower's output maps
    assert grad[0, :48].abs().sum() > 0 and grad[0, 48:].abs().sum() == 0


def test_lrn_follows_the_relu_of_conv1_and_conv2_and_computes_the_papers_formula():
    model = papers.build_model("alexnet", device="meta")
    ops = [type(m).__name__ for m in model.get_submodule("features").children()]
    assert ops[:8] == [
        "Conv2d",
        "ReLU",
        "LocalResponseNorm",
        "MaxPool2d",
        "Conv2d",
        "ReLU",
        "LocalResponseNorm",
        "MaxPool2d",
    ]
    assert "LocalResponseNorm" not in ops[8:]
    lrn = model.get_submodule("features.2")  # no parameters: runs on CPU tensors as it is
    a = torch.rand(1, 96, 3, 3) * 10
    squares = torch.nn.functional.pad(a.pow(2), (0, 0, 0, 0, 2, 2))
    window = sum(squares[:, i : i + 96] for i in range(5))  # n = 5 neighbouring maps
    expected = a / (2 + 1e-4 * window) ** 0.75  # k = 2, α = 1e-4, β = 0.75
    assert torch.allclose(lrn(a), expected, rtol=1e-5)


def test_pooling_is_overlapping_3x3_stride_2():
    pools = [m for m in papers.build_model("alexnet", device="meta").modules() if "Pool" in type(m).__name__]
    assert [(p.kernel_size, p.stride) for p in pools] == [(3, 2)] * 3


def test_paper_drops_the_outputs_of_the_hidden_layers_torchvision_their_inputs():
    def head(variant: str) -> list[str]:
        model = papers.build_model(variant, device="meta")
        return [type(m).__name__ for m in model.get_submodule("classifier").children()]

    assert head("alexnet") == ["Linear", "ReLU", "Dropout", "Linear", "ReLU", "Dropout", "Linear"]
    assert head("alexnet.torchvision") == ["Dropout", "Linear", "ReLU", "Dropout", "Linear", "ReLU", "Linear"]


@pytest.mark.parametrize(
    ("variant", "widths"),
    [("alexnet", (96, 256, 256)), ("alexnet.torchvision", (64, 192, 256))],
)
def test_feature_stages_are_the_three_poolings(variant, widths):
    model = papers.build_model(variant, features=["stage1", "stage2", "stage3"], device="meta")
    out = model(torch.empty(1, 3, 224, 224, device="meta"))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "stage1": (1, widths[0], 27, 27),
        "stage2": (1, widths[1], 13, 13),
        "stage3": (1, widths[2], 6, 6),
    }


def test_num_classes_resets_the_head():
    model = papers.build_model("alexnet", num_classes=10, device="meta")
    assert model.get_submodule("classifier.6").out_features == 10
    assert model(torch.empty(1, 3, 224, 224, device="meta")).shape == (1, 10)
