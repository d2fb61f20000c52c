"""Multi-Scale Context Aggregation by Dilated Convolutions (arXiv 1511.07122): the dilated VGG-16
front end, the context module (basic and large) with its identity initialisation, and receptive
fields computed from the expanded graph (Table 1)."""

from __future__ import annotations

import pytest
import torch

import papers
from papers.graph import FlatGraph, FlatNode
from papers.receptive_field import receptive_field, receptive_fields
from papers_plugins.segmentation.dilated_conv_layers import IdentityConv2d, identity_weight


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _chain(*layers: tuple[str, dict]) -> FlatGraph:
    nodes, previous = [], "image"
    for index, (op, args) in enumerate(layers):
        nodes.append(
            FlatNode(name=f"n{index}", op=op, args=args, inputs=(previous,), where=f"nodes[{index}]")
        )
        previous = f"n{index}"
    return FlatGraph(
        inputs={"image": (3, 32, 32)}, nodes=tuple(nodes), outputs={"out": previous}, features={}
    )


def test_receptive_fields_by_hand():
    # 3×3 conv (3), 2×2 pool stride 2 by default (4, jump 2), 3×3 at dilation 2 (4 + 2·2·2 = 12),
    # a ReLU (unchanged), a 3×3 with stride 2 (12 + 2·2 = 16, jump 4), a 1×1 (16)
    flat = _chain(
        ("conv2d", {"kernel_size": 3, "padding": 1}),
        ("maxpool2d", {"kernel_size": 2}),
        ("conv2d", {"kernel_size": [3, 3], "dilation": 2}),
        ("relu", {}),
        ("conv2d", {"kernel_size": 3, "stride": 2}),
        ("conv2d", {"kernel_size": 1}),
    )
    assert receptive_fields(flat) == {
        "image": (1, 1),
        "n0": (3, 1),
        "n1": (4, 2),
        "n2": (12, 2),
        "n3": (12, 2),
        "n4": (16, 4),
        "n5": (16, 4),
    }
    assert receptive_field(flat, "n4") == 16


def test_a_field_through_global_pooling_is_refused():
    flat = _chain(("conv2d", {"kernel_size": 3}), ("adaptive_avgpool2d", {"output_size": 1}))
    with pytest.raises(papers.PapersError, match="whole input"):
        receptive_field(flat, "n1")


def test_the_front_end_drops_pool4_and_pool5_and_dilates_conv5_and_fc6():
    nodes = {node.name: node for node in papers.expand_variant("dilated_front_end").nodes}
    assert {n for n in nodes if n.startswith("pool")} == {"pool1", "pool2", "pool3"}
    assert all(nodes[f"conv5_{i}"].args["dilation"] == 2 for i in (1, 2, 3))
    assert all(nodes[f"conv4_{i}"].args.get("dilation", 1) == 1 for i in (1, 2, 3))
    fc6 = nodes["fc6"].args
    assert (fc6["kernel_size"], fc6["dilation"], fc6["out_channels"]) == (7, 4, 4096)
    assert nodes["fc7"].args["kernel_size"] == 1
    assert tuple(papers.measure("dilated_front_end", image_size=64).node_shapes["final"]) == (1, 21, 8, 8)


@pytest.mark.parametrize("variant", ["dilated_front_end", "dilated_basic", "dilated_large"])
def test_out_comes_at_the_input_size(variant):
    model = papers.build_model(variant, device="meta", image_size=64).eval()
    out = model(torch.empty(1, 3, 64, 48, device="meta"))
    assert set(out) == {"out"} and out["out"].shape == (1, 21, 64, 48)


def test_the_full_size_networks_build_on_the_meta_device():
    for variant in ["dilated_basic", "dilated_large"]:
        model = papers.build_model(variant, device="meta")
        assert sum(p.numel() for p in model.parameters()) == papers.measure(variant).params
    out = papers.build_model("dilated_large", device="meta")(torch.empty(1, 3, 500, 500, device="meta"))
    assert out["out"].shape == (1, 21, 500, 500)


def test_the_context_module_follows_table_1():
    for variant, widths in [
        ("context_basic", [21] * 8),
        ("context_large", [42, 42, 84, 168, 336, 672, 672, 21]),
    ]:
        nodes = {node.name: node for node in papers.expand_variant(variant).nodes}
        convs = [nodes[f"conv{k}"].args for k in range(1, 9)]
        assert [a["dilation"] for a in convs] == [1, 1, 2, 4, 8, 16, 1, 1]
        assert [a["kernel_size"] for a in convs] == [3] * 7 + [1]
        assert [a["out_channels"] for a in convs] == widths
        assert sorted(n for n in nodes if n.startswith("relu")) == [f"relu{k}" for k in range(1, 8)]


def test_an_untrained_basic_module_passes_its_input_through():
    torch.manual_seed(0)
    module = papers.build_model("context_basic", image_size=16).eval()
    scores = torch.rand(2, 21, 16, 16)  # non-negative, as the ReLUs keep only a map's positive part
    with torch.no_grad():
        assert torch.allclose(module(scores), scores, atol=1e-6)
        signed = torch.randn(1, 21, 16, 16)
        assert torch.allclose(module(signed), signed.clamp(min=0), atol=1e-6)
    # inside the whole network, the module starts from the same identity filters
    net = papers.build_model("dilated_basic", raw=True, image_size=32).eval()
    assert torch.equal(net.context.conv3.weight, identity_weight(21, 21, 3, 21))
    assert not net.context.conv3.bias.any()


def test_the_large_modules_generalised_identity():
    # c_in = C = 2, c_out = 4: each input channel copied to two outputs at C / c_out = 0.5
    weight = identity_weight(4, 2, 3, 2)
    assert weight[:, :, 1, 1].tolist() == [[0.5, 0.0], [0.5, 0.0], [0.0, 0.5], [0.0, 0.5]]
    assert weight.sum() == 2.0 and not weight[:, :, 0].any()
    # back from c_in = 4 to C = 2: each output sums its two copies at C / c_out = 1
    assert identity_weight(2, 4, 1, 2)[:, :, 0, 0].tolist() == [[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]]
    # the widened then narrowed pair is again the identity on non-negative maps
    torch.manual_seed(0)
    up = IdentityConv2d(2, 4, 3, padding=1, base=2)
    down = IdentityConv2d(4, 2, 1, base=2)
    x = torch.rand(1, 2, 5, 5)
    with torch.no_grad():
        assert torch.allclose(down(up(x)), x, atol=1e-6)
    noisy = IdentityConv2d(2, 4, 3, base=2, noise=0.01)
    assert not torch.equal(noisy.weight, identity_weight(4, 2, 3, 2))
    assert (noisy.weight - identity_weight(4, 2, 3, 2)).abs().max() < 0.05


def test_static_checks_pass():
    checks = papers.check("dilated_conv")
    fields = [c for c in checks if c.metric == "receptive_field" and c.variant == "context_basic"]
    assert [c.measured for c in fields] == [3, 5, 9, 17, 33, 65, 67, 67]
    assert checks and all(c.status == "pass" for c in checks)


def test_a_receptive_field_result_must_name_its_node():
    from pydantic import ValidationError

    from papers.spec import Result

    fields = {"variant": "context_basic", "metric": "receptive_field", "value": 3, "unit": "count"}
    with pytest.raises(ValidationError, match="needs scope 'node'"):
        Result(**fields, source="Table 1")
    assert Result(**fields, scope="node", node="conv1", source="Table 1").node == "conv1"
