"""The ResNeXt paper: Table 1 checked, torchvision's and timm's weights load and compute the same,
the grouped 3×3 convolution strides, and the ablation templates keep the block's cost (Eqn. 4)."""

from __future__ import annotations

import pytest
import torch

import papers

pytest.importorskip("torchvision")
pytest.importorskip("timm")

PAPER = "resnext"
LIBRARY_VARIANTS = ["resnext50_32x4d", "resnext101_32x4d", "resnext101_64x4d", "resnext101_32x8d"]
# Table 2: cardinality C against bottleneck width d at preserved complexity.
TEMPLATES = {
    "resnext50_2x40d": (2, 40),
    "resnext50_4x24d": (4, 24),
    "resnext50_8x14d": (8, 14),
    "resnext50_32x4d": (32, 4),
}


def test_every_variant_builds_on_the_meta_device():
    variants = [v.id for v in papers.get_spec(PAPER).variants]
    assert set(LIBRARY_VARIANTS) | set(TEMPLATES) <= set(variants)
    for variant in variants:
        model = papers.build_model(variant, device="meta")
        assert any(True for _ in model.parameters()), variant


def test_every_static_check_of_the_paper_passes():
    checks = papers.check(PAPER)
    assert not [c for c in checks if c.status == "fail"]
    static = {(c.variant, c.metric) for c in checks if c.status == "pass"}
    assert {("resnext50_32x4d", "params"), ("resnext50_32x4d", "macs")} <= static  # Table 1
    assert {("resnext101_32x4d", "params"), ("resnext101_64x4d", "macs")} <= static
    errors = [c for c in checks if c.metric in ("top1_error", "top5_error")]
    assert errors and all(c.status == "not_measurable" for c in errors)


def test_the_grouped_3x3_convolution_carries_the_stride():
    # Section 4: downsampling by stride-2 convolutions in the 3×3 layer of the first block of conv3-5
    model = papers.build_model("resnext50_32x4d", device="meta")
    for name in ("layer2.0", "layer3.0", "layer4.0"):
        assert model.get_submodule(f"{name}.conv1").stride == (1, 1)
        assert model.get_submodule(f"{name}.conv2").stride == (2, 2)
    # Table 1: 3×3, 128, C=32 in conv2 ... 3×3, 1024, C=32 in conv5
    for stage, width in enumerate([128, 256, 512, 1024], start=1):
        conv = model.get_submodule(f"layer{stage}.1.conv2")
        assert (conv.groups, conv.in_channels, conv.out_channels) == (32, width, width)


@pytest.mark.parametrize("variant", TEMPLATES)
def test_templates_of_table_2_keep_the_residual_function_at_eqn_4(variant):
    cardinality, d = TEMPLATES[variant]
    model = papers.build_model(variant, device="meta")
    block = model.get_submodule("layer1.1")  # a conv2 block without projection
    weights = sum(block.get_submodule(f"conv{k}").weight.numel() for k in (1, 2, 3))
    assert block.conv2.out_channels == cardinality * d  # "width of group conv." in Table 2
    assert weights == cardinality * (256 * d + 3 * 3 * d * d + d * 256)
    assert 69_000 < weights < 72_000  # "~70k" parameters for the template of conv2


def test_feature_stages_end_each_layer():
    model = papers.build_model(
        "resnext50_32x4d", features=["stem", "stage1", "stage2", "stage3", "stage4"], device="meta"
    )
    out = model(torch.empty(1, 3, 224, 224, device="meta"))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "stem": (1, 64, 112, 112),
        "stage1": (1, 256, 56, 56),
        "stage2": (1, 512, 28, 28),
        "stage3": (1, 1024, 14, 14),
        "stage4": (1, 2048, 7, 7),
    }


def test_num_classes_resets_the_head():
    model = papers.build_model("resnext50_32x4d", num_classes=10, image_size=32)
    assert model.get_submodule("fc").out_features == 10
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
