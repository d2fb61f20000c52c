"""LeNet-5 (LeCun et al. 1998): per-layer parameter counts, the C3 connection table, the custom layers,
and the criterion and optimizer its plugin contributes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import papers
from papers.recipe import BUILTIN_CRITERIA, BUILTIN_OPTIMIZERS, RecipeError, get_criterion, make_loss, resolve
from papers.registry import get_registry, reset_registry
from tests.conftest import built_on

LAYERS = {"c1": 156, "s2": 12, "c3": 1516, "s4": 32, "c5": 48120, "f6": 10164}  # Section II.B

# Table I, transcribed as rows: for each S2 map, the C3 maps that read it.
TABLE_I_ROWS = {
    0: {0, 4, 5, 6, 9, 10, 11, 12, 14, 15},
    1: {0, 1, 5, 6, 7, 10, 11, 12, 13, 15},
    2: {0, 1, 2, 6, 7, 8, 11, 13, 14, 15},
    3: {1, 2, 3, 6, 7, 8, 9, 12, 14, 15},
    4: {2, 3, 4, 7, 8, 9, 10, 12, 13, 15},
    5: {3, 4, 5, 8, 9, 10, 11, 13, 14, 15},
}


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return papers.build_model("lenet5").eval()


def test_builds_on_meta_and_every_static_check_passes():
    meta = papers.build_model("lenet5", device="meta")
    assert meta(torch.empty(1, 1, 32, 32, device="meta")).shape == (1, 10)
    checks = papers.check("lenet")
    assert not [c for c in checks if c.status == "fail"]
    static = [c for c in checks if c.status != "not_measurable"]
    params = {(c.variant, c.scope) for c in static if c.metric == "params"}
    assert params == {("lenet5", f"node:{name}") for name in LAYERS} | {("lenet300_100", "model")}
    assert all(c.status == "pass" for c in static), static
    assert {c.metric for c in checks if c.status == "not_measurable"} == {"error"}


def test_forward_on_one_32x32_digit_gives_ten_rbf_outputs(model):
    with torch.no_grad():
        out = model(torch.randn(1, 1, 32, 32))
    assert out.shape == (1, 10)
    assert (out >= 0).all()  # squared distances


def test_per_layer_parameters_match_section_ii_b_and_sum_to_60000(model):
    counts = {name: sum(p.numel() for p in model.get_submodule(name).parameters()) for name in LAYERS}
    assert counts == LAYERS
    assert sum(p.numel() for p in model.parameters()) == 60_000  # the RBF codes are fixed, not trained


def test_c3_connection_table_has_60_connections_as_in_table_i(model):
    c3 = model.get_submodule("c3.conv")
    assert c3.connections == 60
    assert tuple(c3.weight.shape) == (60, 1, 5, 5)
    sizes = [len(row) for row in c3.table]
    assert sizes == [3] * 6 + [4] * 9 + [6]
    for s2_map, c3_maps in TABLE_I_ROWS.items():
        assert {j for j, row in enumerate(c3.table) if s2_map in row} == c3_maps


def test_each_c3_map_depends_only_on_the_s2_maps_of_its_table_column(model):
    c3 = model.get_submodule("c3.conv")
    x = torch.randn(1, 6, 14, 14, requires_grad=True)
    out = c3(x)
    for j in range(16):
        (grad,) = torch.autograd.grad(out[0, j].sum(), x, retain_graph=True)
        reads = {i for i in range(6) if grad[0, i].abs().sum() > 0}
        assert reads == set(c3.table[j]), j


def test_c3_equals_a_dense_convolution_with_the_missing_kernels_zeroed(model):
    c3 = model.get_submodule("c3.conv")
    x = torch.randn(3, 6, 14, 14)
    with torch.no_grad():
        dense = F.conv2d(x, c3.dense_weight(), c3.bias)
        assert torch.allclose(c3(x), dense, atol=1e-5)
        assert int((c3.dense_weight().abs().sum((2, 3)) > 0).sum()) == 60


def test_subsampling_adds_four_inputs_then_scales_and_shifts_per_map(model):
    s2 = model.get_submodule("s2.pool")
    x = torch.randn(2, 6, 28, 28)
    expected = x.unfold(2, 2, 2).unfold(3, 2, 2).sum((-1, -2))
    expected = expected * s2.weight.view(1, -1, 1, 1) + s2.bias.view(1, -1, 1, 1)
    with torch.no_grad():
        assert torch.allclose(s2(x), expected, atol=1e-5)


def test_scaled_tanh_is_1_7159_tanh_2a_over_3_so_f_of_1_is_about_1(model):
    act = model.get_submodule("c1.act")
    a = torch.linspace(-3, 3, 13)
    assert torch.allclose(act(a), 1.7159 * torch.tanh(2 * a / 3))
    assert abs(float(act(torch.tensor(1.0))) - 1.0) < 1e-3


def test_rbf_outputs_are_squared_distances_to_fixed_plus_minus_one_codes(model):
    rbf = model.get_submodule("output")
    assert not list(rbf.parameters())
    assert set(rbf.centers.unique().tolist()) == {-1.0, 1.0}
    assert tuple(rbf.centers.shape) == (10, 84)
    x = torch.randn(4, 84)
    assert torch.allclose(rbf(x), torch.cdist(x, rbf.centers) ** 2, atol=1e-4)
    again = papers.build_model("lenet5").get_submodule("output")
    assert torch.equal(again.centers, rbf.centers)  # the codes are the same in every build


def test_custom_layers_start_inside_the_fan_in_bounds_of_appendix_a(model):
    s2 = model.get_submodule("s2.pool")
    assert s2.weight.abs().max() <= 2.4 / 4
    c3 = model.get_submodule("c3.conv")
    start = 0
    for row in c3.table:
        bound = 2.4 / (25 * len(row))
        assert c3.weight[start : start + len(row)].abs().max() <= bound
        start += len(row)
    assert not math.isclose(float(c3.weight.detach().std()), 0.0)


def test_num_classes_sets_the_number_of_rbf_units():
    model = papers.build_model("lenet5", num_classes=26)
    assert tuple(model.get_submodule("output").centers.shape) == (26, 84)
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 26)


def test_c3_reads_its_connection_table_from_the_spec(model):
    table = papers.get_spec("lenet5").graphs["lenet5"].params["c3_table"]
    assert model.get_submodule("c3.conv").table == tuple(tuple(row) for row in table)
    dense = papers.build_model("lenet5", c3_table=[list(range(6))] * 16).get_submodule("c3.conv")
    assert dense.connections == 96, "the layer has no table of its own: the graph's parameter is it"


# -- the recipe's names: the criterion and the optimizer are the plugin's ---------------------------


def test_rbf_penalty_and_sdlm_come_from_the_lenet_plugin_not_the_core():
    registry = get_registry()
    assert registry.criteria["rbf_penalty"][0] == "lenet (papers)"
    assert registry.optimizers["sdlm"][0] == "lenet (papers)"
    assert registry.manager.plugins["lenet"].contributes["criteria"] == ["rbf_penalty"]
    assert "rbf_penalty" not in {c.name for c in BUILTIN_CRITERIA}
    assert "sdlm" not in {o.name for o in BUILTIN_OPTIMIZERS}


def test_the_smallest_rbf_penalty_is_the_prediction():
    penalties = torch.tensor([[3.0, 0.5, 2.0], [0.1, 4.0, 9.0]])
    scores = get_criterion("rbf_penalty").scores(penalties)
    assert scores.argmax(-1).tolist() == [1, 0]
    config = resolve(papers.get_spec("lenet"))
    loss = make_loss(config, papers.build_model("lenet5"))(penalties, torch.tensor([1, 0]))
    assert torch.allclose(loss, F.cross_entropy(-penalties, torch.tensor([1, 0])))


def test_without_the_lenet_plugin_its_names_are_unknown(monkeypatch, fresh_registry):
    gone = ("lenet", *built_on("lenet"))  # the plugins whose variants build on LeNets go with it
    monkeypatch.setenv("PAPERS_DISABLE_PLUGINS", ",".join(f"papers:{name}" for name in gone))
    reset_registry()
    assert "han2015" in gone and "resnet" not in gone
    vgg = papers.get_spec("vgg")
    with pytest.raises(RecipeError) as criterion:
        resolve(vgg, {"criterion": "rbf_penalty"})
    refused, _, known = str(criterion.value).partition("; known: ")
    assert refused == "-r criterion: unknown criterion 'rbf_penalty'"
    assert "cross_entropy" in known.split(", ") and "rbf_penalty" not in known  # other plugins' may be there
    with pytest.raises(RecipeError) as optimizer:
        resolve(vgg, {"optimizer.name": "sdlm"})
    assert optimizer.value.message == "unknown optimizer 'sdlm'; known: adagrad, adam, adamw, rmsprop, sgd"
