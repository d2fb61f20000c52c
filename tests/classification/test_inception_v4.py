"""Inception-v4 and Inception-ResNet: the figures' shapes checked, timm's Inception-v4 and
Inception-ResNet-v2 load strictly and compute the same, and where timm's models leave the paper's."""

from __future__ import annotations

import pytest
import torch

import papers

pytest.importorskip("timm")

PAPER = "inception-v4"
PAPER_VARIANTS = ["inception_v4", "inception_resnet_v1", "inception_resnet_v2"]
TIMM_VARIANTS = ["inception_v4.timm", "inception_resnet_v2.timm"]


def test_every_variant_builds_on_the_meta_device():
    variants = [v.id for v in papers.get_spec(PAPER).variants]
    assert variants == ["inception_v4", "inception_v4.timm", *PAPER_VARIANTS[1:], "inception_resnet_v2.timm"]
    for variant in variants:
        model = papers.build_model(variant, device="meta")
        assert any(True for _ in model.parameters()), variant


def test_every_static_check_of_the_paper_passes():
    checks = papers.check(PAPER)
    assert not [c for c in checks if c.status == "fail"]
    shapes = {(c.variant, c.scope) for c in checks if c.status == "pass"}
    assert {(v, "model") for v in PAPER_VARIANTS} <= shapes  # Figures 9 and 15: 1000 classes
    assert ("inception_resnet_v1", "node:mixed_7a.cat") in shapes  # Figure 15: 8×8×1792
    errors = [c for c in checks if c.metric in ("top1_error", "top5_error")]
    assert len(errors) == 18 and all(c.status == "not_measurable" for c in errors)


def test_timm_inception_v4_has_the_papers_sizes_but_turns_three_kernel_pairs():
    paper = papers.build_model("inception_v4", device="meta").state_dict()
    timm = papers.build_model("inception_v4.timm", device="meta").state_dict()
    assert paper.keys() == timm.keys()
    turned = {k for k in paper if paper[k].shape != timm[k].shape}
    stem = {f"features.4.branch1.{i}.conv.weight" for i in (1, 2)}
    block_b = {f"features.{b}.branch2.{i}.conv.weight" for b in range(11, 18) for i in (1, 2, 3, 4)}
    block_c = {f"features.{b}.branch2_{i}.conv.weight" for b in range(19, 22) for i in (1, 2)}
    assert turned == stem | block_b | block_c
    assert all(paper[k].shape[2:] == timm[k].shape[2:][::-1] for k in turned)
    a, b = papers.measure("inception_v4"), papers.measure("inception_v4.timm")
    assert (a.params, a.macs) == (b.params, b.macs)


def test_residuals_are_scaled_before_the_sum():
    def scales(variant):
        flat = papers.expand_variant(variant)
        return [node.args["other"] for node in flat.nodes if node.op == "scale"]

    assert scales("inception_resnet_v1") == [0.17] * 5 + [0.1] * 10 + [0.2] * 5
    assert scales("inception_resnet_v2") == [0.17] * 5 + [0.1] * 10 + [0.2] * 5
    # the released v2: 10/20/9 scaled blocks and a last, unscaled 8×8 block without ReLU
    assert scales("inception_resnet_v2.timm") == [0.17] * 10 + [0.1] * 20 + [0.2] * 9 + [1.0]
    names = {node.name for node in papers.expand_variant("inception_resnet_v2.timm").nodes}
    assert "repeat_2.8.relu" in names and "block8.add" in names and "block8.relu" not in names


def test_feature_stages_end_each_resolution():
    expected = {
        "inception_v4": [(64, 147), (160, 73), (384, 35), (1024, 17), (1536, 8)],
        "inception_resnet_v1": [(64, 147), (192, 71), (256, 35), (896, 17), (1792, 8)],
        "inception_resnet_v2": [(64, 147), (160, 73), (384, 35), (1152, 17), (2144, 8)],
        "inception_resnet_v2.timm": [(64, 147), (192, 71), (320, 35), (1088, 17), (1536, 8)],
    }
    stages = [f"stage{i}" for i in range(1, 6)]
    for variant, sizes in expected.items():
        model = papers.build_model(variant, features=stages, device="meta")
        out = model(torch.empty(1, 3, 299, 299, device="meta"))
        assert [tuple(out[s].shape) for s in stages] == [(1, c, n, n) for c, n in sizes], variant


def test_num_classes_resets_the_head_and_dropout_keeps_0_8():
    model = papers.build_model("inception_resnet_v1", device="meta", num_classes=10)
    assert model.get_submodule("classif").out_features == 10
    assert model.get_submodule("head_drop").p == pytest.approx(0.2)
    assert model(torch.empty(2, 3, 299, 299, device="meta")).shape == (2, 10)
