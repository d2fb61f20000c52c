"""The builder: fx GraphModules whose names, shapes, counts and initialisation follow the spec."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import fx

from papers.build import build, trace
from papers.errors import GraphError
from papers.graph import expand
from papers.measure import measure_graph
from papers.ops import Catalogue
from papers.spec import validate_spec
from tests.conftest import minimal_spec

CATALOGUE = Catalogue()


def flat_for(data, **bind):
    return expand(validate_spec(data), "net", bind, CATALOGUE)


def test_builds_a_graph_module_with_the_specs_parameter_names():
    model = build(flat_for(minimal_spec()), CATALOGUE)
    assert isinstance(model, fx.GraphModule)
    assert set(model.state_dict()) == {"conv.weight", "conv.bias", "fc.weight", "fc.bias"}
    assert model.conv.in_channels == 3, "input channels are inferred"
    assert model.fc.in_features == 8, "input features are inferred"
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 10)
    assert "def forward(self, image)" in model.code


def test_options_override_parameters():
    model = build(flat_for(minimal_spec(), num_classes=3, width=5), CATALOGUE)
    assert model.fc.out_features == 3 and model.conv.out_channels == 5


def test_meta_build_allocates_nothing():
    model = build(flat_for(minimal_spec()), CATALOGUE, device="meta")
    assert all(p.is_meta for p in model.parameters())


def test_measurement_counts_parameters_and_multiply_adds():
    m = measure_graph("tiny8", flat_for(minimal_spec()), CATALOGUE)
    conv_params, fc_params = 3 * 3 * 3 * 8 + 8, 8 * 10 + 10
    assert m.params == conv_params + fc_params
    conv_macs = (3 * 3 * 3) * 8 * 14 * 14  # per output element: k*k*c_in; 8 channels of 14x14
    assert m.macs == conv_macs + 8 * 10
    assert m.flops == 2 * m.macs
    assert m.output_shape == [1, 10]
    assert [layer.name for layer in m.layers] == ["conv", "relu", "pool", "flat", "fc"]


def test_init_rules_apply_after_the_defaults():
    data = minimal_spec(
        init=[
            {"op": "conv2d", "param": "weight", "fn": "constant", "args": {"val": 0.5}},
            {"op": "linear", "param": "bias", "fn": "zeros"},
        ]
    )
    model = build(flat_for(data), CATALOGUE)
    assert torch.all(model.conv.weight == 0.5)
    assert torch.all(model.fc.bias == 0)
    assert model.fc.weight.abs().sum() > 0, "PyTorch's default initialisation for the rest"


def test_init_rule_arguments_follow_the_graphs_params():
    rule = {"op": "conv2d", "param": "weight", "fn": "constant", "args": {"val": "${width / 16}"}}
    data = minimal_spec(init=[rule])
    assert torch.all(build(flat_for(data), CATALOGUE).conv.weight == 0.5)
    assert torch.all(build(flat_for(data, width=4), CATALOGUE).conv.weight == 0.25), "a build option moves it"
    data["graphs"]["net"]["init"][0]["args"] = {"val": "${depth / 16}"}
    with pytest.raises(GraphError) as caught:
        flat_for(data)
    assert caught.value.field == "graphs.net.init[0].args.val"


def test_several_outputs_come_back_as_a_named_tuple():
    data = minimal_spec(
        nodes=[
            {"name": "conv", "op": "conv2d", "args": {"out_channels": 4, "kernel_size": 3}},
            {"name": "left", "op": "relu", "in": "conv"},
            {"name": "right", "op": "sigmoid", "in": "conv"},
        ],
        outputs=[{"name": "main", "node": "left"}, {"name": "aux", "node": "right"}],
    )
    out = build(flat_for(data), CATALOGUE)(torch.randn(1, 3, 16, 16))
    assert out._fields == ("main", "aux")
    assert torch.all(out.aux > 0)


def test_cut_graph_returns_a_dict_of_features():
    data = minimal_spec()
    data["graphs"]["net"]["nodes"][1]["feature"] = "stage1"
    model = build(flat_for(data).cut(["stage1"]), CATALOGUE, as_dict=True)
    out = model(torch.randn(1, 3, 16, 16))
    assert list(out) == ["stage1"] and out["stage1"].shape == (1, 8, 14, 14)
    assert "fc.weight" not in model.state_dict()


def test_shape_mismatch_names_the_node_and_the_input_shapes():
    data = minimal_spec(
        nodes=[
            {"name": "a", "op": "conv2d", "args": {"out_channels": 4, "kernel_size": 3}},
            {"name": "b", "op": "conv2d", "args": {"out_channels": 6, "kernel_size": 3}, "in": "image"},
            {"name": "sum", "op": "add", "in": ["a", "b"]},
        ]
    )
    with pytest.raises(
        GraphError, match=r"node 'sum' \(add\) fails on input \[1, 4, 14, 14\], \[1, 6, 14, 14\]"
    ):
        trace(flat_for(data), CATALOGUE)


def test_unknown_argument_names_the_node():
    data = minimal_spec(nodes=[{"name": "a", "op": "conv2d", "args": {"out_channels": 4, "kernel": 3}}])
    with pytest.raises(GraphError, match="node 'a'") as caught:
        trace(flat_for(data), CATALOGUE)
    assert caught.value.field == "graphs.net.nodes[0]"


def test_absurd_sizes_are_refused_before_anything_is_allocated():
    data = minimal_spec(
        nodes=[{"name": "a", "op": "conv2d", "args": {"out_channels": 10**8, "kernel_size": 7}}]
    )
    with pytest.raises(GraphError, match="more than 1,000,000,000 parameters"):
        build(flat_for(data), CATALOGUE)


def test_measurement_does_not_leave_dynamo_state_behind():
    import subprocess
    import sys

    code = (
        "import sys, torch; from tests.test_build import *\n"
        "measure_graph('tiny8', flat_for(minimal_spec()), CATALOGUE)\n"
        "from torch.utils.flop_counter import _FlopCounterMode\n"
        "raw = _FlopCounterMode.__dict__['__torch_dispatch__'].__wrapped__\n"
        "assert 'torch._dynamo' not in sys.modules and '_dynamo' not in torch.__dict__\n"
        "assert not hasattr(raw, '__dynamo_disable'), 'no cached answer left'\n"
        "import torch._dynamo\n"
        "assert torch._dynamo.disable.__module__.startswith('torch._dynamo'), 'the real dynamo imports'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parent.parent)


def test_a_layer_with_no_output_is_refused():
    data = minimal_spec(nodes=[{"name": "a", "op": "conv2d", "args": {"out_channels": 0, "kernel_size": 3}}])
    with pytest.raises(GraphError, match=r"node 'a' \(conv2d\) gives an empty output \[1, 0, 14, 14\]"):
        trace(flat_for(data), CATALOGUE)


def test_node_results_may_name_groups_and_block_instances():
    from papers.checks import check_spec

    data = minimal_spec()
    data["graphs"]["net"]["nodes"][:2] = [
        {
            "name": "stem",
            "group": [{"op": "conv2d", "args": {"out_channels": 8, "kernel_size": 3}}, {"op": "relu"}],
        }
    ]
    data["results"] = [
        {
            "variant": "tiny8",
            "metric": "params",
            "value": 224.0,
            "unit": "count",
            "scope": "node",
            "node": "stem",
            "source": "T",
        },
        {
            "variant": "tiny8",
            "metric": "output_shape",
            "value": [8, 14, 14],
            "unit": "shape",
            "scope": "node",
            "node": "stem",
            "source": "T",
        },
    ]
    spec = validate_spec(data)
    flat = flat_for(data)
    checks = check_spec(spec, lambda v: (flat, measure_graph(v, flat, CATALOGUE)))
    assert [c.status for c in checks] == ["pass", "pass"]
    bad = validate_spec({**data, "results": [{**data["results"][0], "node": "nowhere"}]})
    with pytest.raises(GraphError, match="names node 'nowhere'"):
        check_spec(bad, lambda v: (flat, measure_graph(v, flat, CATALOGUE)))


def test_repeated_builds_share_no_tensor_container_or_hook():
    flat = flat_for(minimal_spec())
    first, second = build(flat, CATALOGUE), build(flat, CATALOGUE)
    assert first.conv is not second.conv
    assert first.conv.weight.data_ptr() != second.conv.weight.data_ptr()
    assert first.conv._parameters is not second.conv._parameters
    first.conv.register_forward_hook(lambda module, args, output: output * 0)
    assert not second.conv._forward_hooks, "a hook on one build must not reach another"
    assert second(torch.randn(1, 3, 16, 16)).abs().sum() > 0


def test_repeated_builds_are_initialised_like_the_first_under_the_same_seed():
    flat = flat_for(minimal_spec())
    torch.manual_seed(0)
    first = build(flat, CATALOGUE)  # the first build runs the shape pass, later ones copy its layers
    torch.manual_seed(0)
    second = build(flat, CATALOGUE)
    assert list(first.state_dict()) == list(second.state_dict())
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert first.training and second.training and second.conv.training


def test_expanded_graphs_are_kept_per_variant_and_options():
    import papers

    assert papers.expand_variant("vgg11") is papers.expand_variant("vgg11")
    assert papers.expand_variant("vgg11", num_classes=3) is not papers.expand_variant("vgg11")
    assert papers.expand_variant("vgg11", num_classes=3).node("classifier.6").args["out_features"] == 3


@pytest.mark.parametrize("variant", ["googlenet", "resnet20", "lenet5"])
def test_ops_run_outside_the_flop_counter_would_count_nothing_inside_it(variant, monkeypatch):
    import dataclasses

    import papers
    from papers.measure import _measure
    from papers.registry import get_registry

    catalogue = get_registry().catalogue
    flat = papers.expand_variant(variant)
    fast = _measure(variant, flat, catalogue)
    every = {name: dataclasses.replace(catalogue[name], counts_macs=True) for name in catalogue.names()}
    monkeypatch.setattr(catalogue, "_ops", every)
    counted = _measure(variant, flat, catalogue)
    assert [layer.macs for layer in counted.layers] == [layer.macs for layer in fast.layers]
    assert fast.macs > 0


def test_an_in_place_add_may_only_overwrite_what_nothing_else_reads():
    def spec_adding_into(first: str) -> dict:
        return minimal_spec(
            nodes=[
                {"name": "conv", "op": "conv2d", "args": {"out_channels": 3, "kernel_size": 3, "padding": 1}},
                {"name": "relu", "op": "relu"},
                {"name": "sum", "op": "add_", "in": [first, "conv"]},
                {"name": "pool", "op": "adaptive_avgpool2d", "args": {"output_size": 1}},
            ]
        )

    model = build(flat_for(spec_adding_into("relu")), CATALOGUE)
    assert "+=" in model.code
    with pytest.raises(GraphError, match="overwrites 'conv'"):
        build(flat_for(spec_adding_into("conv")), CATALOGUE)  # conv is read by relu too
    with pytest.raises(GraphError, match="overwrites 'image'"):
        build(flat_for(spec_adding_into("image")), CATALOGUE)
