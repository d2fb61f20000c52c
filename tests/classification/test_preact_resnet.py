"""Identity Mappings in Deep Residual Networks: the full pre-activation unit, CIFAR and ImageNet depths.

No library ships these networks, so there is no equivalence test: the structure is tested against the
paper's description (depth, unit order, shortcuts) and Table 4's parameter counts through the checks.
"""

from __future__ import annotations

from collections import Counter

import pytest
import torch

import papers

VARIANTS = [
    "preact_resnet110",
    "preact_resnet164",
    "preact_resnet1001",
    "preact_resnet152",
    "preact_resnet200",
]


@pytest.fixture(scope="module")
def checks():
    return papers.check("preact-resnet")


def weight_layers(variant: str) -> int:
    """Convolutions and fully connected layers on the main path (shortcut projections not counted)."""
    flat = papers.expand_variant(variant)
    return sum(1 for n in flat.nodes if n.op in ("conv2d", "linear") and ".downsample" not in n.name)


def test_static_checks_pass_and_cover_table_4(checks):
    static = [c for c in checks if c.status != "not_measurable"]
    assert all(c.status == "pass" for c in static), [c for c in static if c.status != "pass"]
    params = {c.variant: c.measured for c in static if c.metric == "params"}
    assert set(params) == {"preact_resnet164", "preact_resnet1001"}
    errors = [c for c in checks if c.metric in ("error", "top1_error", "top5_error")]
    assert errors and all(c.status == "not_measurable" for c in errors)


def test_every_variant_builds_on_meta(checks):
    # The checks traced ResNet-164, ResNet-1001 and ResNet-200 on the meta device; build the others.
    assert {c.variant for c in checks if c.status == "pass"} >= {
        "preact_resnet164",
        "preact_resnet1001",
        "preact_resnet200",
    }
    assert [v.id for v in papers.get_spec("preact-resnet").variants] == VARIANTS
    cifar = papers.build_model("preact_resnet110", num_classes=100, device="meta")
    assert cifar.get_submodule("fc").out_features == 100
    assert cifar(torch.empty(1, 3, 32, 32, device="meta")).shape == (1, 100)
    imagenet = papers.build_model("preact_resnet152", device="meta")
    assert imagenet(torch.empty(1, 3, 224, 224, device="meta")).shape == (1, 1000)


def test_the_1001_layer_network_stays_within_the_cores_limits(checks):
    flat = papers.expand_variant("preact_resnet1001")
    assert len(flat.nodes) < 100_000
    assert weight_layers("preact_resnet1001") == 1001
    units = {n.name.rsplit(".", 1)[0] for n in flat.nodes if n.name.endswith(".conv3")}
    assert len(units) == 333  # 111 bottleneck units on each feature map size (Section 4.1)
    # ... and it builds: the parameter check traced it on the meta device
    assert [c.status for c in checks if c.variant == "preact_resnet1001" and c.metric == "params"] == ["pass"]


@pytest.mark.parametrize(
    "variant, depth",
    [
        ("preact_resnet110", 110),
        ("preact_resnet164", 164),
        ("preact_resnet152", 152),
        ("preact_resnet200", 200),
    ],
)
def test_depth_is_the_number_of_weight_layers(variant, depth):
    assert weight_layers(variant) == depth


def test_resnet200_adds_16_units_at_28x28_to_resnet152():
    # Footnote 3: ResNet-200 has 16 more bottleneck units than ResNet-152, on the 28×28 feature map.
    def units(variant):
        flat = papers.expand_variant(variant)
        return Counter(n.name.split(".")[0] for n in flat.nodes if n.name.endswith(".conv3"))

    a, b = units("preact_resnet152"), units("preact_resnet200")
    assert b["layer2"] - a["layer2"] == 16 and all(a[k] == b[k] for k in ("layer1", "layer3", "layer4"))


def test_units_are_full_pre_activation_with_identity_after_the_addition():
    flat = papers.expand_variant("preact_resnet110")
    ops = {n.name: n.op for n in flat.nodes}
    unit = [n.name.removeprefix("layer1.1.") for n in flat.nodes if n.name.startswith("layer1.1.")]
    assert unit == ["bn1", "relu1", "conv1", "bn2", "relu2", "conv2", "add"]
    # the next unit reads the sum itself: nothing between the addition and the next BN
    assert flat.node("layer1.2.bn1").inputs == ("layer1.1.add",)
    assert flat.node("layer1.2.add").inputs == ("layer1.2.conv2", "layer1.1.add")
    # Appendix: the first unit uses the activation right after conv1; the last is followed by BN, ReLU
    assert [ops[n] for n in ("conv1", "bn1", "relu")] == ["conv2d", "batchnorm2d", "relu"]
    assert "layer1.0.bn1" not in ops and flat.node("layer1.0.conv1").inputs == ("relu",)
    assert flat.node("bn_final").inputs == ("layer3.17.add",)
    assert flat.node("avgpool").inputs == ("relu_final",)


def test_projection_shortcuts_are_pre_activated_and_stride_sits_in_the_first_1x1():
    flat = papers.expand_variant("preact_resnet164")
    assert flat.node("layer2.0.downsample").inputs == ("layer2.0.relu1",)
    assert flat.node("layer2.0.conv1").inputs == ("layer2.0.relu1",)
    assert flat.node("layer2.0.conv1").args["stride"] == 2
    assert flat.node("layer2.0.conv2").args["stride"] == 1
    # stage 1 widens 16 -> 64 with a projection that reads the stem's activation
    assert flat.node("layer1.0.downsample").inputs == ("relu",)
    assert "layer2.1.downsample" not in {n.name for n in flat.nodes}
    moved = papers.expand_variant("preact_resnet200", stride_in_1x1=False)
    assert (
        moved.node("layer2.0.conv1").args["stride"] == 1 and moved.node("layer2.0.conv2").args["stride"] == 2
    )


def test_resnet110_widens_by_zero_padding_the_subsampled_activation():
    model = papers.build_model("preact_resnet110", features=["layer2.0.relu1", "layer2.0.zero_pad"]).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    activated, shortcut = out["layer2.0.relu1"], out["layer2.0.zero_pad"]
    assert activated.shape == (2, 16, 32, 32) and shortcut.shape == (2, 32, 16, 16)
    assert torch.equal(shortcut[:, :16], activated[:, :, ::2, ::2])
    assert not shortcut[:, 16:].any()
    names = {n.name for n in papers.expand_variant("preact_resnet110").nodes}
    assert not any(".downsample" in name for name in names)
    projected = papers.expand_variant("preact_resnet110", shortcut="projection")
    assert projected.node("layer2.0.downsample").inputs == ("layer2.0.relu1",)


def test_feature_stages():
    cifar = papers.build_model("preact_resnet164", features=["stage1", "stage2", "stage3"], device="meta")
    out = cifar(torch.empty(1, 3, 32, 32, device="meta"))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "stage1": (1, 64, 32, 32),
        "stage2": (1, 128, 16, 16),
        "stage3": (1, 256, 8, 8),
    }
    names = ["stage1", "stage2", "stage3", "stage4", "stage5"]
    imagenet = papers.build_model("preact_resnet152", features=names, device="meta")
    out = imagenet(torch.empty(1, 3, 224, 224, device="meta"))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "stage1": (1, 64, 112, 112),
        "stage2": (1, 256, 56, 56),
        "stage3": (1, 512, 28, 28),
        "stage4": (1, 1024, 14, 14),
        "stage5": (1, 2048, 7, 7),
    }
