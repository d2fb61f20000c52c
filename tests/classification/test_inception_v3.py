"""Inception-v3: the abstract's size and cost checked, torchvision's Inception3 (with and without
its auxiliary head) loads strictly and computes the same, the auxiliary head as an option."""

from __future__ import annotations

import pytest
import torch

import papers

torchvision = pytest.importorskip("torchvision")

PAPER = "inception-v3"
VARIANT = "inception_v3"


def test_the_variant_builds_on_the_meta_device_with_and_without_the_auxiliary_head():
    assert [v.id for v in papers.get_spec(PAPER).variants] == [VARIANT]
    plain = papers.build_model(VARIANT, device="meta")
    with_aux = papers.build_model(VARIANT, device="meta", aux_logits=True)
    names = {name for name, _ in with_aux.named_parameters()} - {n for n, _ in plain.named_parameters()}
    assert names and all(name.startswith("AuxLogits.") for name in names)


def test_every_static_check_of_the_paper_passes():
    checks = papers.check(PAPER)
    assert not [c for c in checks if c.status == "fail"]
    assert {c.metric for c in checks if c.status == "pass"} == {"params", "macs", "output_shape"}
    errors = [c for c in checks if c.metric in ("top1_error", "top5_error")]
    assert len(errors) == 2 and all(c.status == "not_measurable" for c in errors)


def test_torchvision_is_compared_at_its_smallest_input_and_with_the_auxiliary_head_at_299():
    # the comparisons themselves run in tests/test_references.py, from the spec's data
    cases = papers.get_spec(PAPER).variant(VARIANT).equivalence
    smallest = torchvision.models.Inception_V3_Weights.IMAGENET1K_V1.meta["min_size"][0]
    assert {(c.options["image_size"], c.options.get("aux_logits", False)) for c in cases} == {
        (smallest, False),
        (299, True),
    }


def test_aux_logits_adds_a_second_output_and_num_classes_resets_both_heads():
    x = torch.empty(2, 3, 299, 299, device="meta")  # batch 2: training-mode batch norm on 1×1 maps
    plain = papers.build_model(VARIANT, device="meta", num_classes=10)
    assert isinstance(plain(x), torch.Tensor) and plain(x).shape == (2, 10)
    model = papers.build_model(VARIANT, device="meta", aux_logits=True, num_classes=10)
    out = model(x)
    assert out.logits.shape == (2, 10) and out.aux.shape == (2, 10)
    assert model.get_submodule("AuxLogits.fc").out_features == 10
    assert model.get_submodule("AuxLogits.conv1.conv").kernel_size == (5, 5)


def test_feature_stages_end_each_resolution():
    model = papers.build_model(
        VARIANT, features=["stage1", "stage2", "stage3", "stage4", "stage5"], device="meta"
    )
    out = model(torch.empty(1, 3, 299, 299, device="meta"))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "stage1": (1, 64, 147, 147),
        "stage2": (1, 192, 71, 71),
        "stage3": (1, 288, 35, 35),
        "stage4": (1, 768, 17, 17),
        "stage5": (1, 2048, 8, 8),
    }


def test_the_17x17_modules_factorise_7x7_into_1x7_and_7x1():
    model = papers.build_model(VARIANT, device="meta")
    kernels = [model.get_submodule(f"Mixed_6b.branch7x7dbl_{i}.conv").kernel_size for i in range(2, 6)]
    assert kernels == [(7, 1), (1, 7), (7, 1), (1, 7)]
