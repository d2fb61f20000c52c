"""The SENet paper: Table 2 checked, timm's ports of the authors' models load and compute the same,
the SE block's shape (Table 1, Eqn. 5) and SENet-154's changes (Appendix)."""

from __future__ import annotations

import pytest
import torch

import papers

pytest.importorskip("timm")

PAPER = "senet"
VARIANTS = ["seresnet50", "seresnet101", "seresnet152", "seresnext50_32x4d", "seresnext101_32x4d", "senet154"]


def test_every_variant_builds_on_the_meta_device():
    assert [v.id for v in papers.get_spec(PAPER).variants] == VARIANTS
    for variant in VARIANTS:
        model = papers.build_model(variant, device="meta")
        assert any(True for _ in model.parameters()), variant


def test_every_static_check_of_the_paper_passes():
    checks = papers.check(PAPER)
    assert not [c for c in checks if c.status == "fail"]
    static = {(c.variant, c.metric) for c in checks if c.status == "pass"}
    assert {(v, "macs") for v in VARIANTS[:5]} <= static  # Table 2
    assert ("seresnet50", "params") in static
    errors = [c for c in checks if c.metric in ("top1_error", "top5_error")]
    assert errors and all(c.status == "not_measurable" for c in errors)


def test_se_block_matches_table_1_and_eqn_5():
    model = papers.build_model("seresnet50", device="meta")
    # Table 1: fc, [16, 256] in conv2 ... fc, [128, 2048] in conv5
    for stage, channels in enumerate([256, 512, 1024, 2048], start=1):
        se = model.get_submodule(f"layer{stage}.0.se_module")
        assert (se.fc1.out_channels, se.fc2.out_channels) == (channels // 16, channels)
    # Eqn. 5: the SE weights add 2/r · Σ N_s·C_s² parameters, "~2.5 million" in SE-ResNet-50
    weights = sum(
        p.numel() for n, p in model.named_parameters() if ".se_module." in n and n.endswith("weight")
    )
    assert (
        weights == 2 * sum(n * c * c for n, c in zip([3, 4, 6, 3], [256, 512, 1024, 2048], strict=True)) // 16
    )
    assert round(weights / 1e6, 1) == 2.5


def test_se_resnet_strides_in_the_1x1_and_se_resnext_in_the_grouped_3x3():
    resnet = papers.build_model("seresnet50", device="meta")
    resnext = papers.build_model("seresnext50_32x4d", device="meta")
    for name in ("layer2.0", "layer3.0", "layer4.0"):
        assert (
            resnet.get_submodule(f"{name}.conv1").stride,
            resnet.get_submodule(f"{name}.conv2").stride,
        ) == ((2, 2), (1, 1))
        assert (
            resnext.get_submodule(f"{name}.conv1").stride,
            resnext.get_submodule(f"{name}.conv2").stride,
        ) == ((1, 1), (2, 2))
    assert resnext.get_submodule("layer1.0.conv2").groups == 32


def test_senet154_has_the_appendix_changes():
    model = papers.build_model("senet154", device="meta")
    names = dict(model.named_modules())
    # (b) three 3×3 convolutions replace the 7×7 stem
    assert [names[f"layer0.conv{k}"].kernel_size for k in (1, 2, 3)] == [(3, 3)] * 3
    # (a) 64×4d ResNeXt with the first 1×1 halved: 128 channels into a 256-wide grouped 3×3
    block = model.get_submodule("layer1.1")
    assert (block.conv1.out_channels, block.conv2.out_channels, block.conv2.groups) == (128, 256, 64)
    # (c) stride-2 projections are 3×3; the first stage's projection does not stride and stays 1×1
    assert model.get_submodule("layer1.0.downsample.0").kernel_size == (1, 1)
    for stage in (2, 3, 4):
        conv = model.get_submodule(f"layer{stage}.0.downsample.0")
        assert (conv.kernel_size, conv.stride) == ((3, 3), (2, 2))
    # (d) dropout 0.2 before the classifier; the other networks have none
    assert [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)] == [0.2]
    assert not any(
        isinstance(m, torch.nn.Dropout) for m in papers.build_model("seresnet50", device="meta").modules()
    )


def test_feature_stages_end_each_layer():
    model = papers.build_model(
        "senet154", features=["stem", "stage1", "stage2", "stage3", "stage4"], device="meta"
    )
    out = model(torch.empty(1, 3, 224, 224, device="meta"))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "stem": (1, 128, 112, 112),
        "stage1": (1, 256, 56, 56),
        "stage2": (1, 512, 28, 28),
        "stage3": (1, 1024, 14, 14),
        "stage4": (1, 2048, 7, 7),
    }


def test_num_classes_resets_the_head():
    model = papers.build_model("seresnext50_32x4d", num_classes=10, image_size=32)
    assert model.get_submodule("last_linear").out_features == 10
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
