"""The ResNet paper: Table 1 and Table 6 checked, torchvision's weights load and compute the same,
the paper's bottleneck differs from torchvision's only in where it strides, option-A shortcuts."""

from __future__ import annotations

import pytest
import torch

import papers

torchvision = pytest.importorskip("torchvision")

PAPER = "resnet"
TORCHVISION_VARIANTS = [
    "resnet18",
    "resnet34",
    "resnet50.torchvision",
    "resnet101.torchvision",
    "resnet152.torchvision",
]
IMAGENET_PAPER_VARIANTS = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]
CIFAR_VARIANTS = {"resnet20": 3, "resnet32": 5, "resnet44": 7, "resnet56": 9, "resnet110": 18}


def test_every_variant_builds_on_the_meta_device():
    variants = [v.id for v in papers.get_spec(PAPER).variants]
    assert set(TORCHVISION_VARIANTS) | set(IMAGENET_PAPER_VARIANTS) | set(CIFAR_VARIANTS) <= set(variants)
    for variant in variants:
        model = papers.build_model(variant, device="meta")
        assert any(True for _ in model.parameters()), variant


def test_every_static_check_of_the_paper_passes():
    checks = papers.check(PAPER)
    assert not [c for c in checks if c.status == "fail"]
    static = {(c.variant, c.metric) for c in checks if c.status == "pass"}
    assert {(v, "macs") for v in IMAGENET_PAPER_VARIANTS} <= static  # Table 1
    assert {(v, "params") for v in CIFAR_VARIANTS} <= static  # Table 6
    errors = [c for c in checks if c.metric in ("top1_error", "top5_error", "error")]
    assert errors and all(c.status == "not_measurable" for c in errors)


def test_paper_resnet50_takes_torchvision_weights_but_strides_in_the_first_1x1():
    torch.manual_seed(0)
    reference = papers.reference_model("resnet50.torchvision").eval()
    ours = papers.build_model("resnet50", device="meta")
    ours.load_state_dict(reference.state_dict(), strict=True, assign=True)
    ours.eval()
    # the same modules and shapes; only the stride moves from conv2 to conv1 of each downsampling block
    for name in ("layer2.0", "layer3.0", "layer4.0"):
        assert ours.get_submodule(f"{name}.conv1").stride == (2, 2)
        assert ours.get_submodule(f"{name}.conv2").stride == (1, 1)
        assert reference.get_submodule(f"{name}.conv1").stride == (1, 1)
        assert reference.get_submodule(f"{name}.conv2").stride == (2, 2)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        a, b = ours(x), reference(x)
    assert a.shape == b.shape == (1, 1000)
    assert not torch.allclose(a, b, rtol=1e-3, atol=1e-3 * float(b.abs().max()))


def test_torchvision_v15_costs_more_multiply_adds_than_the_paper():
    paper, v15 = papers.measure("resnet50"), papers.measure("resnet50.torchvision")
    assert paper.params == v15.params
    assert round(paper.macs / 1e9, 2) == 3.86
    # torchvision's published count for its resnet50: 4.089 G multiply-adds
    assert round(v15.macs / 1e9, 3) == torchvision.models.ResNet50_Weights.IMAGENET1K_V1.meta["_ops"]


def test_resnet50_feature_stages_end_each_layer():
    model = papers.build_model("resnet50", features=["stage1", "stage2", "stage3", "stage4"], device="meta")
    out = model(torch.empty(1, 3, 224, 224, device="meta"))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "stage1": (1, 256, 56, 56),
        "stage2": (1, 512, 28, 28),
        "stage3": (1, 1024, 14, 14),
        "stage4": (1, 2048, 7, 7),
    }


def test_cifar_resnet20_gives_ten_logits_and_has_6n_plus_2_weighted_layers():
    torch.manual_seed(0)
    model = papers.build_model("resnet20").eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 32, 32))
    assert out.shape == (1, 10) and torch.isfinite(out).all()
    for variant in ("resnet20", "resnet110"):
        n = CIFAR_VARIANTS[variant]
        layers = [layer.op for layer in papers.measure(variant).layers]
        assert layers.count("conv2d") + layers.count("linear") == 6 * n + 2, variant
        assert layers.count("resnet_shortcut_a") == 2, variant  # where 16→32 and 32→64


def test_option_a_shortcut_subsamples_and_zero_pads_the_new_channels():
    model = papers.build_model("resnet20").eval()
    shortcut = model.get_submodule("layer2.0.shortcut")
    x = torch.randn(2, 16, 32, 32)
    y = shortcut(x)
    assert y.shape == (2, 32, 16, 16)
    assert torch.equal(y[:, :16], x[:, :, ::2, ::2])
    assert not y[:, 16:].any()


def test_cifar_stage_widths_and_resolutions():
    model = papers.build_model("resnet56", features=["stage1", "stage2", "stage3"], device="meta")
    out = model(torch.empty(1, 3, 32, 32, device="meta"))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "stage1": (1, 16, 32, 32),
        "stage2": (1, 32, 16, 16),
        "stage3": (1, 64, 8, 8),
    }


def test_shortcut_options_a_b_c_differ_only_in_their_shortcuts():
    # Table 3: A has no projection, B projects where dimensions grow (3 blocks), C in all 16 blocks
    def projections(variant):
        keys = papers.build_model(variant, device="meta").state_dict()
        return {k.rsplit(".downsample", 1)[0] for k in keys if ".downsample." in k}

    assert projections("resnet34_a") == set()
    assert projections("resnet34") == {"layer2.0", "layer3.0", "layer4.0"}
    assert len(projections("resnet34_c")) == 3 + 4 + 6 + 3
    plain = {k for k in papers.build_model("resnet34", device="meta").state_dict() if ".downsample." not in k}
    assert plain == set(papers.build_model("resnet34_a", device="meta").state_dict())


def test_num_classes_resets_the_head():
    model = papers.build_model("resnet18", num_classes=10, device="meta")
    assert model.get_submodule("fc").out_features == 10
    assert (
        papers.build_model("resnet20", num_classes=100, device="meta").get_submodule("fc").out_features == 100
    )
