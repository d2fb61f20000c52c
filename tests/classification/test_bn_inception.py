"""BN-Inception: the appendix table's network builds, its structure and shapes are the paper's."""

from __future__ import annotations

import torch
from torch import nn

import papers


def test_builds_and_runs_on_meta():
    model = papers.build_model("bn_inception", device="meta")
    assert model(torch.empty(1, 3, 224, 224, device="meta")).shape == (1, 1000)


def test_every_static_check_of_the_paper_passes():
    checks = papers.check("bn-inception")
    assert not [c for c in checks if c.status == "fail"]
    static = [c for c in checks if c.status not in ("not_measurable", "inconsistent")]
    assert all(c.status == "pass" for c in static)
    # the figures the paper contradicts itself on are marked, with the reason, not dropped
    assert len([c for c in checks if c.status == "inconsistent" and c.reason]) == 1
    assert {c.scope for c in static} >= {"model", "node:inception3a.cat", "node:inception5b.cat"}
    accuracy = [c for c in checks if c.metric in ("top1_error", "top5_error", "top1_accuracy")]
    assert len(accuracy) == 9 and all(c.status == "not_measurable" for c in accuracy)


def test_five_by_five_convolutions_are_two_stacked_3x3():
    model = papers.build_model("bn_inception", device="meta")
    kernels = {
        m.kernel_size for name, m in model.named_modules() if isinstance(m, nn.Conv2d) and name != "conv1_dw"
    }
    assert kernels == {(1, 1), (3, 3)}
    for module in ("inception3a", "inception4c", "inception5b"):
        first = model.get_submodule(f"{module}.branch3.1.conv")
        second = model.get_submodule(f"{module}.branch3.2.conv")
        assert first.kernel_size == second.kernel_size == (3, 3)
        assert first.out_channels == second.out_channels


def test_stride_2_modules_have_no_1x1_branch_and_pass_the_pooled_input_through():
    m = papers.measure("bn_inception")
    names = {layer.name for layer in m.layers}
    for module, (before, after) in {"inception3c": (28, 14), "inception4e": (14, 7)}.items():
        assert f"{module}.branch1.conv" not in names
        assert [n for n in names if n.startswith(f"{module}.branch4.")] == [f"{module}.branch4.0"]
        assert m.node_shapes[f"{module}.branch2.0.conv"][-1] == before
        assert m.node_shapes[f"{module}.branch2.1.conv"][-1] == after
        assert m.node_shapes[f"{module}.branch3.2.conv"][-1] == after
    # the max-pooled input keeps its channels: 3c passes 320 through, 4e 608
    assert m.node_shapes["inception3c.branch4.0"] == [1, 320, 14, 14]
    assert m.node_shapes["inception4e.branch4.0"] == [1, 608, 7, 7]


def test_pooling_inside_modules_is_average_or_max_as_in_the_table():
    model = papers.build_model("bn_inception", device="meta")
    kinds = {
        name: type(model.get_submodule(f"inception{name}.branch4.0")).__name__
        for name in ("3a", "3b", "3c", "4a", "4b", "4c", "4d", "4e", "5a", "5b")
    }
    assert kinds == {
        "3a": "AvgPool2d",
        "3b": "AvgPool2d",
        "3c": "MaxPool2d",
        "4a": "AvgPool2d",
        "4b": "AvgPool2d",
        "4c": "AvgPool2d",
        "4d": "AvgPool2d",
        "4e": "MaxPool2d",
        "5a": "AvgPool2d",
        "5b": "MaxPool2d",
    }


def test_batch_norm_before_every_relu_no_lrn_no_dropout_no_conv_bias():
    model = papers.build_model("bn_inception", device="meta")
    modules = dict(model.named_modules())
    relus = [name for name, m in modules.items() if isinstance(m, nn.ReLU)]
    assert relus and all(
        isinstance(modules[name.rpartition(".")[0] + ".bn"], nn.BatchNorm2d) for name in relus
    )
    assert not any(isinstance(m, (nn.LocalResponseNorm, nn.Dropout)) for m in modules.values())
    assert all(m.bias is None for m in modules.values() if isinstance(m, nn.Conv2d))


def test_the_stem_is_a_separable_7x7_with_depth_multiplier_8():
    model = papers.build_model("bn_inception", device="meta")
    depthwise, pointwise = model.get_submodule("conv1_dw"), model.get_submodule("conv1.conv")
    assert (depthwise.kernel_size, depthwise.stride, depthwise.groups) == ((7, 7), (2, 2), 3)
    assert depthwise.out_channels == 3 * 8
    assert (pointwise.kernel_size, pointwise.out_channels) == ((1, 1), 64)
    plain = papers.build_model("bn_inception", separable_stem=False, device="meta")
    assert plain.get_submodule("conv1.conv").kernel_size == (7, 7)


def test_feature_stages_return_maps_at_each_resolution():
    model = papers.build_model(
        "bn_inception", features=["stage1", "stage2", "stage3", "stage4", "stage5"], device="meta"
    )
    out = model(torch.empty(1, 3, 224, 224, device="meta"))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "stage1": (1, 64, 112, 112),
        "stage2": (1, 192, 56, 56),
        "stage3": (1, 320, 28, 28),
        "stage4": (1, 608, 14, 14),
        "stage5": (1, 1024, 7, 7),
    }


def test_num_classes_resets_the_head_and_the_model_runs_on_cpu():
    model = papers.build_model("bn_inception", num_classes=10).eval()
    assert model.get_submodule("fc").out_features == 10
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 10)
