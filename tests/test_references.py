"""Library references as data: every comparison the specs declare runs here, against a reference whose
batch norms are randomised first; the comparison catches what the libraries' initial batch norms hide
and compares every output; a result's `node:` must exist, and a model's shape is every output's."""

from __future__ import annotations

import copy
from collections import namedtuple

import pytest
import torch
from torch import nn

import papers
from papers.checks import check_spec
from papers.errors import SpecError
from papers.graph import expand
from papers.measure import measure_graph
from papers.registry import get_registry
from papers.spec import Equivalence, Variant
from tests.conftest import minimal_spec, write_spec
from tests.equivalence import (
    assert_matches_reference,
    assert_same_outputs,
    compare_with_reference,
    randomise_batch_norms,
    reference_cases,
    relative_difference,
)

CASES = reference_cases()


def _case_id(variant: str, index: int) -> str:
    several = sum(v == variant for v, _, _ in CASES) > 1
    return f"{variant}#{index}" if several else variant


@pytest.mark.parametrize(
    ("variant", "case"),
    [pytest.param(v, case, id=_case_id(v, i)) for v, i, case in CASES],
)
def test_library_state_dict_loads_strictly_and_gives_the_same_outputs(variant, case):
    _, spec_variant = get_registry().variant(variant)
    assert spec_variant.reference is not None
    pytest.importorskip(spec_variant.reference.partition(":")[0])
    assert_matches_reference(variant, case)


def test_every_variant_that_names_a_reference_is_compared():
    registry = get_registry()
    named = {v for v in registry.variants if registry.variant(v)[1].reference is not None}
    assert named and {v for v, _, _ in CASES} == named
    # the libraries' auxiliary heads are compared too
    assert {v for v, _, case in CASES if case.training_flag} == {"googlenet.torchvision", "inception_v3"}


# --- the comparison itself -----------------------------------------------------------------------


class ConvBatchNormReLU(nn.Module):
    """A convolution, a batch norm and a ReLU; ``relu_first`` swaps the last two (the same state_dict)."""

    def __init__(self, relu_first: bool = False):
        super().__init__()
        self.relu_first = relu_first
        self.conv = nn.Conv2d(3, 8, 3, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        x = self.bn(self.relu(x)) if self.relu_first else self.relu(self.bn(x))
        return self.fc(x.mean((2, 3)))


def _pair(relu_first: bool) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    return ConvBatchNormReLU(relu_first), ConvBatchNormReLU()


def test_with_the_initial_batch_norms_a_swapped_relu_and_batch_norm_is_invisible():
    wrong, reference = _pair(relu_first=True)
    x = torch.randn(2, 3, 8, 8)
    wrong.load_state_dict(reference.state_dict(), strict=True)
    with torch.no_grad():
        assert relative_difference(wrong.eval()(x), reference.eval()(x)) == 0.0
    compare_with_reference(wrong, reference, [x], randomise=False)  # the old comparison passes


def test_randomised_batch_norms_catch_a_swapped_relu_and_batch_norm():
    wrong, reference = _pair(relu_first=True)
    with pytest.raises(AssertionError, match="relative difference"):
        compare_with_reference(wrong, reference, [torch.randn(2, 3, 8, 8)])


def test_randomised_batch_norms_pass_the_right_order():
    right, reference = _pair(relu_first=False)
    compare_with_reference(right, reference, [torch.randn(2, 3, 8, 8)])


def test_randomised_batch_norms_have_fixed_seeded_positive_variances_and_move_every_term():
    first, second = ConvBatchNormReLU(), ConvBatchNormReLU()
    randomise_batch_norms(first)
    randomise_batch_norms(second)
    for name, tensor in first.bn.state_dict().items():
        assert torch.equal(tensor, second.bn.state_dict()[name]), name
    bn = first.bn
    assert (bn.running_var >= 0.5).all()
    assert not torch.equal(bn.running_mean, torch.zeros(8)) and not torch.equal(bn.bias, torch.zeros(8))
    assert (bn.weight.abs() >= 0.5).all() and (bn.weight < 0).any() and (bn.weight > 0).any()


def test_frozen_batch_norms_are_randomised_too():
    misc = pytest.importorskip("torchvision.ops.misc")
    frozen = misc.FrozenBatchNorm2d(8)  # its affine terms are buffers, not parameters
    randomise_batch_norms(frozen)
    assert not torch.equal(frozen.weight, torch.ones(8)) and not torch.equal(frozen.bias, torch.zeros(8))
    assert (frozen.running_var >= 0.5).all() and not torch.equal(frozen.running_mean, torch.zeros(8))


class TwoHeads(nn.Module):
    def __init__(self, swap: bool = False, extra: bool = False):
        super().__init__()
        self.swap, self.extra = swap, extra
        self.a, self.b = nn.Linear(4, 3), nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        a, b = self.a(x), self.b(x)
        heads = (a, a) if self.swap else (a, b)  # "swap": the second head is the wrong one
        return (*heads, x) if self.extra else heads


def test_every_output_is_compared_not_only_the_first():
    torch.manual_seed(0)
    reference, x = TwoHeads(), torch.randn(2, 4)
    compare_with_reference(TwoHeads(), copy.deepcopy(reference), [x])
    with pytest.raises(AssertionError, match="1/1: relative difference"):
        compare_with_reference(TwoHeads(swap=True), copy.deepcopy(reference), [x])
    with pytest.raises(AssertionError, match="ours returns"):
        compare_with_reference(TwoHeads(extra=True), copy.deepcopy(reference), [x])


def test_named_outputs_are_matched_by_the_names_the_spec_maps():
    Ours, Theirs = namedtuple("Ours", "logits aux"), namedtuple("Theirs", "aux_logits logits")
    a, b = torch.randn(2, 3), torch.randn(2, 3)
    assert_same_outputs(Ours(a, b), Theirs(b, a), {"logits": "logits", "aux": "aux_logits"})
    with pytest.raises(AssertionError):
        assert_same_outputs(Ours(a, b), Theirs(b, a))  # by position: logits against aux_logits
    with pytest.raises(AssertionError, match="mapped"):
        assert_same_outputs(Ours(a, b), Theirs(b, a), {"logits": "logits"})
    assert_same_outputs({"x": a}, (a,))


def test_googlenet_auxiliary_heads_are_compared_head_for_head():
    pytest.importorskip("torchvision")
    _, spec_variant = get_registry().variant("googlenet.torchvision")
    case = next(c for c in spec_variant.equivalence if c.training_flag)
    assert case.outputs is not None
    swapped = {**case.outputs, "aux1": case.outputs["aux2"], "aux2": case.outputs["aux1"]}
    with pytest.raises(AssertionError, match="aux1/aux_logits2"):
        assert_matches_reference("googlenet.torchvision", case.model_copy(update={"outputs": swapped}))


# --- references as data in the spec ------------------------------------------------------------


def test_a_plain_reference_is_one_comparison_with_the_defaults():
    variant = Variant(id="net", name="Net", graph="net", reference="torchvision:vgg11")
    assert variant.equivalence == []
    assert Equivalence() == Equivalence(kwargs={}, options={}, outputs=None, training_flag=False)


def test_equivalence_data_needs_a_reference(tmp_path):
    data = minimal_spec()
    data["variants"][0]["equivalence"] = [{"options": {"width": 4}}]
    with pytest.raises(SpecError, match="reference") as caught:
        papers.validate_file(write_spec(tmp_path / "tiny.yaml", data))
    assert caught.value.field == "variants[0].equivalence"


def test_equivalence_fields_are_typed(tmp_path):
    data = minimal_spec()
    data["variants"][0].update(reference="torchvision:vgg11", equivalence=[{"training_flag": "yes"}])
    with pytest.raises(SpecError, match="training_flag"):
        papers.validate_file(write_spec(tmp_path / "tiny.yaml", data))


# --- results name nodes that exist; a model's shape is every output's ---------------------------


def _with_result(**result) -> dict:
    data = minimal_spec()
    data["graphs"]["net"]["nodes"][1]["feature"] = "stage1"
    data["results"] = [
        {"variant": "tiny8", "metric": "params", "value": 314.0, "unit": "count", "source": "Table 1"},
        {"variant": "tiny8", "source": "Table 2", **result},
    ]
    return data


@pytest.mark.parametrize(
    "result",
    [
        {"metric": "params", "value": 1.0, "unit": "count", "scope": "node", "node": "conv2"},
        {"metric": "macs", "value": 1.0, "unit": "count", "scope": "node", "node": "stage9"},
        {"metric": "output_shape", "value": [8], "unit": "shape", "scope": "node", "node": "features"},
    ],
    ids=["params", "macs", "output_shape"],
)
def test_validate_refuses_a_result_whose_node_does_not_exist(run, tmp_path, result):
    path = write_spec(tmp_path / "tiny.yaml", _with_result(**result))
    outcome = run("validate", str(path))
    assert outcome.exit_code == 2 and outcome.stdout == ""
    assert len(outcome.stderr.strip().splitlines()) == 1
    assert f"{path}: results[1].node:" in outcome.stderr and repr(result["node"]) in outcome.stderr


@pytest.mark.parametrize("node", ["conv", "stage1", "fc"])
def test_validate_accepts_a_result_naming_a_node_or_a_feature_stage(tmp_path, node):
    result = {"metric": "params", "value": 1.0, "unit": "count", "scope": "node", "node": node}
    assert papers.validate_file(write_spec(tmp_path / "tiny.yaml", _with_result(**result))).id == "tiny"


def _checks(tmp_path, data):
    spec = papers.validate_file(write_spec(tmp_path / "tiny.yaml", data))
    registry = get_registry()
    flat = expand(spec, "net", {}, registry.catalogue, registry.library(spec))
    return check_spec(spec, lambda variant: (flat, measure_graph(variant, flat, registry.catalogue)))


def _two_outputs(second: dict) -> dict:
    data = minimal_spec(
        outputs=[{"name": "logits", "node": "fc"}, {"name": "second", "node": second["name"]}]
    )
    data["graphs"]["net"]["nodes"].append(second)
    data["results"] = [
        {"variant": "tiny8", "metric": "output_shape", "value": [10], "unit": "shape", "source": "Table 1"}
    ]
    return data


def test_a_model_output_shape_is_compared_with_every_output(tmp_path):
    pooled = {"name": "pooled", "op": "flatten", "in": "pool", "args": {"start_dim": 1}}  # 8 values
    (check,) = _checks(tmp_path, _two_outputs(pooled))
    assert check.status == "fail" and check.measured == [8]
    assert check.reason == "outputs: logits [10], second [8]"


def test_a_model_output_shape_passes_when_every_output_has_it(tmp_path):
    head = {"name": "fc2", "op": "linear", "in": "flat", "args": {"out_features": 10}}
    (check,) = _checks(tmp_path, _two_outputs(head))
    assert check.status == "pass" and check.measured == [10]
