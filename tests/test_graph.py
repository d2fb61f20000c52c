"""The graph language: naming, repeats, blocks, references, conditions, and the errors it reports."""

from __future__ import annotations

import pytest

from papers.errors import GraphError
from papers.graph import expand
from papers.ops import Catalogue
from papers.spec import validate_spec
from tests.conftest import minimal_spec

CATALOGUE = Catalogue()


def flat_of(nodes, *, params=None, blocks=None, outputs=None, bind=None):
    graph = {"nodes": nodes, "params": params or {}}
    if outputs is not None:
        graph["outputs"] = outputs
    data = minimal_spec(**graph)
    if blocks:
        data["blocks"] = blocks
    return expand(validate_spec(data), "net", bind or {}, CATALOGUE)


def names(flat):
    return [node.name for node in flat.nodes]


def test_group_children_are_named_by_position_like_nn_sequential():
    flat = flat_of(
        [
            {
                "name": "features",
                "group": [
                    {
                        "repeat": 2,
                        "body": [
                            {"op": "conv2d", "args": {"out_channels": 4, "kernel_size": 3}},
                            {"op": "relu"},
                        ],
                    },
                    {"op": "maxpool2d", "args": {"kernel_size": 2}},
                ],
            },
        ]
    )
    assert names(flat) == [f"features.{i}" for i in range(5)]
    assert [n.op for n in flat.nodes] == ["conv2d", "relu", "conv2d", "relu", "maxpool2d"]


def test_when_false_nodes_take_no_position():
    flat = flat_of(
        [
            {
                "name": "g",
                "group": [
                    {"op": "conv2d", "args": {"out_channels": 4, "kernel_size": 1}},
                    {"op": "batchnorm2d", "when": "bn"},
                    {"op": "relu"},
                ],
            },
        ],
        params={"bn": False},
    )
    assert names(flat) == ["g.0", "g.1"]
    assert [n.op for n in flat.nodes] == ["conv2d", "relu"]


def test_repeat_binds_its_variable_and_expressions_use_it():
    flat = flat_of(
        [
            {
                "repeat": "len(widths)",
                "as": "k",
                "body": [
                    {
                        "name": "conv${k + 1}",
                        "op": "conv2d",
                        "args": {"out_channels": "${widths[k]}", "kernel_size": 1},
                    },
                ],
            },
        ],
        params={"widths": [4, 8, 16]},
    )
    assert names(flat) == ["conv1", "conv2", "conv3"]
    assert [n.args["out_channels"] for n in flat.nodes] == [4, 8, 16]
    assert flat.nodes[1].inputs == ("conv1",)


def test_blocks_get_parameters_and_prefixed_names_and_residuals_by_name():
    blocks = {
        "residual": {
            "params": {"width": 4},
            "nodes": [
                {
                    "name": "conv",
                    "op": "conv2d",
                    "args": {"out_channels": "${width}", "kernel_size": 3, "padding": 1},
                },
                {"name": "add", "op": "add", "in": ["conv", "input"]},
            ],
        }
    }
    flat = flat_of(
        [
            {"name": "stem", "op": "conv2d", "args": {"out_channels": 4, "kernel_size": 1}},
            {
                "name": "layer",
                "group": [{"repeat": 2, "body": [{"block": "residual", "args": {"width": 4}}]}],
            },
        ],
        blocks=blocks,
    )
    assert names(flat) == ["stem", "layer.0.conv", "layer.0.add", "layer.1.conv", "layer.1.add"]
    assert flat.node("layer.0.add").inputs == ("layer.0.conv", "stem")
    assert flat.node("layer.1.conv").inputs == ("layer.0.add",)
    assert flat.blocks == {"layer.0": "residual", "layer.1": "residual"}


def test_references_may_point_forward_and_are_ordered_topologically():
    flat = flat_of(
        [
            {"name": "a", "op": "conv2d", "args": {"out_channels": 4, "kernel_size": 1}},
            {"name": "sum", "op": "add", "in": ["a", "b"]},
            {"name": "b", "op": "relu", "in": "a"},
        ],
        outputs=[{"name": "out", "node": "sum"}],
    )
    assert names(flat) == ["a", "b", "sum"]


def test_multiple_outputs_and_conditional_outputs():
    nodes = [
        {"name": "a", "op": "conv2d", "args": {"out_channels": 4, "kernel_size": 1}},
        {"name": "aux", "op": "relu", "in": "a"},
        {"name": "main", "op": "sigmoid", "in": "a"},
    ]
    outputs = [{"name": "logits", "node": "main"}, {"name": "aux", "node": "aux", "when": "aux_logits"}]
    flat = flat_of(nodes, params={"aux_logits": False}, outputs=outputs)
    assert dict(flat.outputs) == {"logits": "main"}
    assert "aux" not in names(flat), "nodes no output needs are dropped"
    flat = flat_of(nodes, params={"aux_logits": False}, outputs=outputs, bind={"aux_logits": True})
    assert dict(flat.outputs) == {"logits": "main", "aux": "aux"}


def test_features_cut_the_graph():
    flat = flat_of(
        [
            {"name": "a", "op": "conv2d", "args": {"out_channels": 4, "kernel_size": 1}, "feature": "stage1"},
            {"name": "b", "op": "relu", "feature": "stage2"},
            {"name": "c", "op": "sigmoid"},
        ]
    )
    cut = flat.cut(["stage1"])
    assert names(cut) == ["a"] and dict(cut.outputs) == {"stage1": "a"}
    with pytest.raises(GraphError, match="stage9"):
        flat.cut(["stage9"])


@pytest.mark.parametrize(
    ("nodes", "message", "field"),
    [
        ([{"op": "conv3000d"}], "unknown op 'conv3000d'", "graphs.net.nodes[0].op"),
        ([{"op": "relu", "in": "ghost"}], "'ghost' names no node", "graphs.net.nodes[0].in"),
        ([{"name": "a", "op": "relu", "in": "b"}, {"name": "b", "op": "relu", "in": "a"}], "cycle", None),
        ([{"name": "a", "op": "relu"}, {"name": "a", "op": "relu"}], "used twice", None),
        (
            [{"op": "conv2d", "args": {"out_channels": "${undefined_param}"}}],
            "undefined_param",
            "graphs.net.nodes[0].args.out_channels",
        ),
        (
            [{"op": "conv2d", "args": {"out_channels": "${__import__('os')}"}}],
            "not allowed|allowed functions",
            None,
        ),
        ([{"repeat": 10**6, "body": [{"op": "relu"}]}], "repeat count", "graphs.net.nodes[0].repeat"),
        ([{"repeat": "'many'", "body": [{"op": "relu"}]}], "repeat count", None),
        ([{"op": "relu", "when": "1 + 1"}], "true or false", "graphs.net.nodes[0].when"),
        ([{"op": "add", "in": "image"}], "takes at least 2", None),
        ([{"block": "nope"}], "unknown block", "graphs.net.nodes[0].block"),
    ],
)
def test_bad_graphs_are_refused_with_the_field(nodes, message, field):
    with pytest.raises(GraphError, match=message) as caught:
        flat_of(nodes)
    if field is not None:
        assert caught.value.field == field


def test_a_block_that_instantiates_itself_is_refused():
    blocks = {"loop": {"nodes": [{"block": "loop"}]}}
    with pytest.raises(GraphError, match="instantiates itself"):
        flat_of([{"block": "loop"}], blocks=blocks)


def test_unknown_build_option_lists_the_parameters():
    with pytest.raises(GraphError, match=r"no parameter 'depth' \(parameters: num_classes, width\)"):
        expand(validate_spec(minimal_spec()), "net", {"depth": 3}, CATALOGUE)


def test_absurd_input_sizes_are_refused_before_building():
    data = minimal_spec(inputs={"image": [3, 10**6, 10**6]})
    with pytest.raises(GraphError, match="input dimensions"):
        expand(validate_spec(data), "net", {}, CATALOGUE)


def test_a_spec_reuses_blocks_of_the_papers_it_uses():
    lender = minimal_spec()
    lender["id"] = "lender"
    lender["blocks"] = {
        "unit": {"params": {"width": 4}, "nodes": [{"block": "inner", "args": {"width": "${width}"}}]},
        "inner": {
            "params": {"width": 4},
            "nodes": [
                {"name": "conv", "op": "conv2d", "args": {"out_channels": "${width}", "kernel_size": 1}}
            ],
        },
    }
    borrower = minimal_spec(nodes=[{"name": "b", "block": "lender.unit", "args": {"width": 6}}])
    borrower["uses"] = ["lender"]
    flat = expand(validate_spec(borrower), "net", {}, CATALOGUE, {"lender": validate_spec(lender)})
    assert names(flat) == ["b.inner.conv"]
    assert flat.node("b.inner.conv").args["out_channels"] == 6
    assert flat.blocks == {"b": "lender.unit", "b.inner": "lender.inner"}
    borrower["uses"] = []
    with pytest.raises(GraphError, match="`uses` does not list"):
        expand(validate_spec(borrower), "net", {}, CATALOGUE, {"lender": validate_spec(lender)})


def test_an_input_template_may_give_a_list_of_names():
    flat = flat_of(
        [
            {"name": "a", "op": "conv2d", "args": {"out_channels": 4, "kernel_size": 1}},
            {"name": "b", "op": "relu"},
            {"name": "all", "op": "cat", "in": "${['a', 'b'] if both else ['a']}", "args": {"dim": 1}},
        ],
        params={"both": True},
    )
    assert flat.node("all").inputs == ("a", "b")
