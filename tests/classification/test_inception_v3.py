"""Inception-v3: the abstract's size and cost checked, torchvision's Inception3 (with and without
its auxiliary head) loads strictly and computes the same, the auxiliary head as an option."""

from __future__ import annotations

import pytest
import torch

import papers
from tests.equivalence import assert_equivalent

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


def test_torchvision_state_dict_loads_strictly_and_gives_the_same_outputs_at_75():
    # 75×75 is the smallest input torchvision's Inception3 takes; its auxiliary head needs 299.
    assert_equivalent(
        VARIANT,
        (3, 75, 75),
        reference_kwargs={"aux_logits": False, "init_weights": False},
        build_options={"image_size": 75},
    )


def test_torchvision_default_state_dict_with_the_auxiliary_head_gives_the_same_logits_and_aux():
    torch.manual_seed(0)
    reference = papers.reference_model(VARIANT, aux_logits=True, init_weights=False).eval()
    ours = papers.build_model(VARIANT, device="meta", aux_logits=True)
    ours.load_state_dict(reference.state_dict(), strict=True, assign=True)
    ours.eval()
    grid = {}  # torchvision runs its auxiliary head in training only: feed it the same 17×17 map
    reference.Mixed_6e.register_forward_hook(lambda module, args, out: grid.setdefault("x", out))
    x = torch.randn(1, 3, 299, 299)
    with torch.no_grad():
        out, logits = ours(x), reference(x)
        aux = reference.AuxLogits(grid["x"])
    assert out._fields == ("logits", "aux")
    assert (out.logits - logits).abs().max() <= 1e-5 * logits.abs().max()
    assert (out.aux - aux).abs().max() <= 1e-5 * aux.abs().max()


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
