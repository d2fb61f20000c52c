"""Wide Residual Networks: CIFAR WRN-n-k on the shared pre-activation unit, and torchvision's WRN-50-2."""

from __future__ import annotations

import pytest
import torch

import papers

CIFAR = ["wrn_16_4", "wrn_16_8", "wrn_28_10", "wrn_40_4", "wrn_40_10"]
IMAGENET = ["wide_resnet50_2", "wide_resnet101_2"]


@pytest.fixture(scope="module")
def checks():
    return papers.check("wide-resnet")


def test_static_checks_pass_and_cover_the_printed_parameter_counts(checks):
    static = [c for c in checks if c.status not in ("not_measurable", "inconsistent")]
    assert all(c.status == "pass" for c in static), [c for c in static if c.status != "pass"]
    inconsistent = [(c.variant, c.metric, c.reported) for c in checks if c.status == "inconsistent"]
    assert inconsistent == [("wide_resnet50_2", "top5_error", 5.79)]
    assert {c.variant for c in static if c.metric == "params"} == {
        "wrn_16_8",
        "wrn_28_10",
        "wrn_40_4",
        "wrn_40_10",
        "wide_resnet50_2",
    }


def test_every_variant_builds_on_meta(checks):
    # The checks traced five variants on the meta device and the equivalence test builds
    # wide_resnet101_2 there; build WRN-16-4, which nothing else measures.
    assert [v.id for v in papers.get_spec("wide-resnet").variants] == CIFAR + IMAGENET
    assert {c.variant for c in checks if c.status == "pass"} == set(CIFAR + IMAGENET) - {
        "wrn_16_4",
        "wide_resnet101_2",
    }
    model = papers.build_model("wrn_16_4", num_classes=100, device="meta")
    assert model.get_submodule("fc").out_features == 100
    assert model(torch.empty(1, 3, 32, 32, device="meta")).shape == (1, 100)


def test_wrn_n_k_has_n_convolutions_and_widths_16k_32k_64k():
    for variant, depth, k in [("wrn_28_10", 28, 10), ("wrn_40_4", 40, 4), ("wrn_16_8", 16, 8)]:
        flat = papers.expand_variant(variant)
        convs = [n for n in flat.nodes if n.op == "conv2d"]
        assert len(convs) == depth  # stem, 6N in the blocks, one 1×1 shortcut per group
        blocks = (depth - 4) // 6
        for s, width in enumerate([16 * k, 32 * k, 64 * k]):
            assert flat.node(f"layer{s + 1}.{blocks - 1}.conv2").args["out_channels"] == width


def test_cifar_blocks_are_the_shared_pre_activation_unit():
    spec = papers.get_spec("wrn_28_10")
    assert "preact-resnet" in spec.uses
    flat = papers.expand_variant("wrn_28_10")
    assert set(flat.blocks.values()) == {"preact-resnet.basic"}
    unit = [n.name.removeprefix("layer2.1.") for n in flat.nodes if n.name.startswith("layer2.1.")]
    assert unit == ["bn1", "relu1", "conv1", "bn2", "relu2", "conv2", "add"]
    assert flat.node("layer2.0.downsample").inputs == ("layer2.0.relu1",)
    assert flat.node("layer1.0.downsample").inputs == ("relu",)


def test_dropout_sits_between_the_convolutions_and_only_acts_in_training():
    flat = papers.expand_variant("wrn_16_4", dropout=0.3)
    assert flat.node("layer1.1.dropout").inputs == ("layer1.1.relu2",)
    assert flat.node("layer1.1.conv2").inputs == ("layer1.1.dropout",)
    assert flat.node("layer1.1.dropout").args == {"p": 0.3}
    assert not any(n.op == "dropout" for n in papers.expand_variant("wrn_16_4").nodes)
    torch.manual_seed(0)
    plain = papers.build_model("wrn_16_4").eval()
    dropped = papers.build_model("wrn_16_4", dropout=0.3)
    dropped.load_state_dict(plain.state_dict(), strict=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(dropped.eval()(x), plain(x))
        assert not torch.equal(dropped.train()(x), dropped.train()(x))


def test_wrn_50_2_doubles_the_inner_width_of_resnet_50():
    flat = papers.expand_variant("wide_resnet50_2")
    assert flat.node("layer1.0.conv1").args["out_channels"] == 128
    assert flat.node("layer1.0.conv2").args["out_channels"] == 128
    assert flat.node("layer1.0.conv3").args["out_channels"] == 256
    assert flat.node("layer4.2.conv2").args["out_channels"] == 1024
    assert flat.node("layer2.0.conv2").args["stride"] == 2 and flat.node("layer2.0.conv1").args["stride"] == 1


def test_feature_stages():
    """WRN-50-2 reuses ResNet's graph, so its stages are ResNet's: `stem` at stride 2, stage1..4 at 4..32."""
    names = ["stem", "stage1", "stage2", "stage3", "stage4"]
    model = papers.build_model("wide_resnet50_2", features=names, device="meta")
    out = model(torch.empty(1, 3, 224, 224, device="meta"))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "stem": (1, 64, 112, 112),
        "stage1": (1, 256, 56, 56),
        "stage2": (1, 512, 28, 28),
        "stage3": (1, 1024, 14, 14),
        "stage4": (1, 2048, 7, 7),
    }
    cifar = papers.build_model("wrn_28_10", features=["stage1", "stage2", "stage3"], device="meta")
    out = cifar(torch.empty(1, 3, 32, 32, device="meta"))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "stage1": (1, 160, 32, 32),
        "stage2": (1, 320, 16, 16),
        "stage3": (1, 640, 8, 8),
    }
