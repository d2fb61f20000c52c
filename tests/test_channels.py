"""Channel removal on the graph language (``papers_plugins.compression.channels``): which layers'
channels can go and where they travel; removing channels whose weights and batch-norm γ and β are
zero leaves the outputs as they were (a VGG with batch norm and a linear layer after a flatten, a
ResNet's inner block convolutions, GoogLeNet's concatenations); refusals are one line naming the
layer."""

from __future__ import annotations

import pytest
import torch

import papers
from papers.build import build
from papers.errors import SpecError
from papers.graph import FlatGraph, FlatNode
from papers.registry import get_registry
from papers_plugins.compression.channels import (
    channel_layers,
    copy_kept,
    narrow,
    remove_channels,
    top_channels,
    widths_of,
)

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL_VGG = {"widths": [8, 16, 16, 32, 32], "image_size": 32, "num_classes": 10}
"""VGG-11 with batch norm at CIFAR's size, narrow: its 7×7 pooling makes the flatten give each
channel a block of 49 features of the first linear layer."""


def seeded(variant: str, **options) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = papers.build_model(variant, **options).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # statistics and affine parameters as a trained network has them
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5, generator=generator)
                module.running_var.uniform_(0.5, 2.0, generator=generator)
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.uniform_(-0.2, 0.2, generator=generator)
    return model


def zero_channels(model, layers, fraction: float = 0.4) -> dict[str, list[int]]:
    """Zero a random ``fraction`` of each layer's filters (weight, bias) and its batch norm's γ and β;
    the kept channels by layer."""
    generator = torch.Generator().manual_seed(2)
    kept = {}
    with torch.no_grad():
        for layer in layers:
            dropped = torch.randperm(layer.width, generator=generator)[: int(layer.width * fraction)]
            conv = model.get_submodule(layer.name)
            conv.weight[dropped] = 0
            if conv.bias is not None:
                conv.bias[dropped] = 0
            for follower in layer.followers:
                norm = model.get_submodule(follower.name)
                norm.weight[dropped] = 0
                norm.bias[dropped] = 0
            kept[layer.name] = sorted(set(range(layer.width)) - set(dropped.tolist()))
    return kept


def assert_same_outputs(variant: str, options: dict, select) -> tuple[torch.nn.Module, torch.nn.Module]:
    flat = papers.expand_variant(variant, **options)
    layers = [layer for layer in channel_layers(flat).values() if select(layer)]
    assert layers
    model = seeded(variant, **options)
    kept = zero_channels(model, layers)
    images = torch.randn(3, *flat.inputs["image"], generator=torch.Generator().manual_seed(3))
    narrowed, narrowed_flat = remove_channels(model, flat, kept)
    with torch.no_grad():
        expected, got = model(images), narrowed(images)
    assert float((got - expected).abs().max()) <= 1e-5 * float(expected.abs().max())
    for layer in layers:
        assert narrowed.get_submodule(layer.name).weight.shape[0] == len(kept[layer.name])
        assert widths_of(narrowed_flat)[layer.name] == len(kept[layer.name])
    fewer = sum(p.numel() for p in narrowed.parameters()) < sum(p.numel() for p in model.parameters())
    assert fewer
    return model, narrowed


# -- the dependency walk ------------------------------------------------------------------------------


def test_a_vgg_layer_is_followed_through_its_batch_norm_to_the_next_conv_and_the_flatten_blocks():
    layers = channel_layers(papers.expand_variant("vgg11_bn", **SMALL_VGG))
    first = layers["features.0"]
    assert first.removable and first.width == 8
    assert [(c.name, c.role) for c in first.followers] == [("features.1", "follow")]
    assert [(c.name, c.op) for c in first.next_layers] == [("features.4", "conv2d")]
    last = layers["features.25"]
    (linear,) = last.next_layers
    assert (linear.name, linear.offset, linear.block) == ("classifier.0", 0, 49)
    assert layers["classifier.0"].removable and layers["classifier.3"].removable
    assert (
        layers["classifier.6"].reason == "its output reaches the graph output 'output' (node 'classifier.6')"
    )


def test_a_resnet_blocks_second_conv_and_the_stem_reach_a_residual_addition():
    layers = channel_layers(papers.expand_variant("resnet20"))
    assert layers["layer1.0.conv1"].removable
    assert [c.name for c in layers["layer1.0.conv1"].next_layers] == ["layer1.0.conv2"]
    assert layers["layer1.0.conv2"].reason == "its output reaches the residual addition 'layer1.0.add'"
    assert layers["conv1"].reason == "its output reaches the residual addition 'layer1.0.add'"
    assert [name for name, layer in layers.items() if layer.removable] == [
        f"layer{s}.{i}.conv1" for s in (1, 2, 3) for i in range(3)
    ]


def test_a_concatenation_shifts_a_branchs_channels_by_the_branches_before_it():
    layers = channel_layers(papers.expand_variant("googlenet", image_size=64))
    branch = layers["inception3a.branch3.1.conv"]  # after 64 (1×1) and 128 (3×3) channels
    reads = {c.name: c.offset for c in branch.next_layers}
    assert reads["inception3b.branch1.conv"] == 64 + 128
    assert layers["conv1.conv"].reason == "its output reaches lrn 'norm1', which mixes neighbouring channels"


# -- exactness: zero channels removed, the same outputs -----------------------------------------------


def test_removing_zeroed_channels_of_a_vgg_with_batch_norm_and_a_linear_after_flatten_is_exact():
    model, narrowed = assert_same_outputs("vgg11_bn", SMALL_VGG, lambda layer: layer.removable)
    assert (
        narrowed.get_submodule("classifier.0").in_features < model.get_submodule("classifier.0").in_features
    )


def test_removing_zeroed_channels_of_a_resnets_inner_block_convs_is_exact():
    assert_same_outputs("resnet20", {}, lambda layer: layer.removable)


def test_removing_zeroed_channels_of_googlenets_concatenated_branches_is_exact():
    assert_same_outputs("googlenet", {"image_size": 64}, lambda layer: layer.name.startswith("inception3"))


def test_copy_kept_keeps_the_chosen_filters_and_the_batch_norm_statistics():
    flat = papers.expand_variant("resnet20")
    model = seeded("resnet20")
    kept = {"layer1.0.conv1": [1, 5, 9]}
    narrowed_flat = narrow(flat, {"layer1.0.conv1": 3}, field="kept")
    after = build(narrowed_flat, get_registry().catalogue)
    copy_kept(model, after, flat, kept)
    before_state, after_state = model.state_dict(), after.state_dict()
    index = torch.tensor([1, 5, 9])
    assert torch.equal(after_state["layer1.0.conv1.weight"], before_state["layer1.0.conv1.weight"][index])
    for name in ("weight", "bias", "running_mean", "running_var"):
        assert torch.equal(after_state[f"layer1.0.bn1.{name}"], before_state[f"layer1.0.bn1.{name}"][index])
    assert torch.equal(after_state["layer1.0.conv2.weight"], before_state["layer1.0.conv2.weight"][:, index])
    assert torch.equal(after_state["fc.weight"], before_state["fc.weight"])


def test_top_channels_are_the_highest_scores_in_ascending_order():
    assert top_channels(torch.tensor([0.1, 3.0, 2.0, 0.5]), 2) == [1, 2]
    with pytest.raises(ValueError, match="keeping 0 of 4"):
        top_channels(torch.ones(4), 0)


# -- refusals: one line naming the layer ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("widths", "message"),
    [
        ({"layer1.0.conv1": 0}, "layer 'layer1.0.conv1': width 0 removes every one of its 16 channels"),
        ({"layer1.0.conv1": 17}, "layer 'layer1.0.conv1': width 17 is above its 16 channels"),
        ({"layer1.0.conv9": 8}, "no layer 'layer1.0.conv9' whose channels can be removed"),
        (
            {"layer1.0.conv2": 8},
            "layer 'layer1.0.conv2': its channels cannot be removed: its output reaches the residual "
            "addition 'layer1.0.add'",
        ),
    ],
)
def test_a_bad_plan_is_one_spec_error_naming_the_layer_and_field(widths, message):
    with pytest.raises(SpecError) as caught:
        narrow(papers.expand_variant("resnet20"), widths, field="variants[0].methods[0].settings")
    assert message in caught.value.message and "\n" not in caught.value.message
    assert caught.value.field == "variants[0].methods[0].settings"


def test_kept_channels_out_of_range_or_twice_are_refused():
    flat = papers.expand_variant("resnet20")
    model = seeded("resnet20")
    with pytest.raises(SpecError, match="kept channel 16 is not one of its 16"):
        remove_channels(model, flat, {"layer1.0.conv1": [0, 16]})
    with pytest.raises(SpecError, match="given twice"):
        remove_channels(model, flat, {"layer1.0.conv1": [3, 3]})


def test_a_depthwise_convolution_follows_its_input_and_frozen_batch_norms_are_cut():
    def node(name, op, inputs, **args):
        return FlatNode(name, op, args, tuple(inputs), "test")

    flat = FlatGraph(
        inputs={"image": (3, 8, 8)},
        nodes=(
            node("conv", "conv2d", ["image"], out_channels=8, kernel_size=3, padding=1),
            node("bn", "frozen_batchnorm2d", ["conv"]),
            node("relu", "relu", ["bn"]),
            node("dw", "conv2d", ["relu"], out_channels=8, kernel_size=3, padding=1, groups=8),
            node("dw_bn", "batchnorm2d", ["dw"]),
            node("pw", "conv2d", ["dw_bn"], out_channels=4, kernel_size=1),
            node("flatten", "flatten", ["pw"], start_dim=1),
            node("fc", "linear", ["flatten"], out_features=10),
        ),
        outputs={"logits": "fc"},
        features={},
    )
    layers = channel_layers(flat)
    assert "dw" not in layers, "a depthwise convolution's channels are its input's"
    assert [(c.name, c.role) for c in layers["conv"].followers] == [
        ("bn", "follow"),
        ("dw", "follow"),
        ("dw_bn", "follow"),
    ]
    assert [c.name for c in layers["conv"].next_layers] == ["pw"]
    assert layers["pw"].next_layers[0].block == 64
    narrowed = narrow(flat, {"conv": 5, "pw": 3}, field="kept")
    assert narrowed.node("dw").args["out_channels"] == 5 and narrowed.node("dw").args["groups"] == 5
    model = build(flat, get_registry().catalogue).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
        for layer in ("conv", "bn", "dw", "dw_bn"):  # the channels die, and stay dead past the depthwise
            for tensor in ("weight", "bias"):
                getattr(model.get_submodule(layer), tensor)[[1, 4, 6]] = 0
    images = torch.randn(2, 3, 8, 8, generator=generator)
    after, _ = remove_channels(model, flat, {"conv": [0, 2, 3, 5, 7]})
    with torch.no_grad():
        expected, got = model(images), after(images)
    assert float((got - expected).abs().max()) <= 1e-5 * float(expected.abs().max())
    assert after.get_submodule("dw").weight.shape == (5, 1, 3, 3)
