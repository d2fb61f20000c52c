"""Yang, Chen and Sze 2017 (``yang2017``): the energy model counted by hand on a small convolution and a
linear layer; the layers' shapes read from a graph; the order of pruning by energy; magnitude, restore
and least squares on one layer; ``papers compress --data`` writing the pruned LeNet sparsely; the
static energy reduction; bad settings refused in one line; a smoke of the MNIST proxy."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

import papers
import papers.registry
from papers.compression import read_container
from papers.methods import Estimate, static_measurements
from papers.registry import Registry
from papers_plugins.compression import energy_aware
from papers_plugins.compression.energy import Dataflow, LayerShape, by_energy, layer_energy, network_energy
from papers_plugins.compression.energy_aware import (
    EnergyPruneSettings,
    energy_aware_prune,
    layer_shapes,
    magnitude_mask,
    output_error,
    prune_layer,
    restore,
)
from tests.conftest import REPO
from tests.test_han2015 import registry_with, seeded

SPEC = REPO / "specs" / "compression" / "yang2017.yaml"

pytestmark = pytest.mark.usefixtures("one_thread")


# -- the energy model -------------------------------------------------------------------------------------


def test_a_convolutions_accesses_per_level_are_the_counts_the_module_states():
    # 2 filters of 3 channels × 3×3 on a 5×5 input (3×3 output): 54 weights, 75 inputs, 18 outputs,
    # 486 MACs; half the weights zero; one filter and two channels per pass.
    shape = LayerShape("c", 2, 3, (3, 3), (5, 5), (3, 3))
    energy = layer_energy(
        shape, weight_density=0.5, dataflow=Dataflow(filters_per_pass=1, channels_per_pass=2)
    )
    assert energy.computation == 243  # the MACs on zero weights are skipped
    assert energy.accesses == {
        "rf": {"weights": 243, "inputs": 243, "psums": 486},
        "array": {"weights": 27 * 3, "inputs": 75 * 3 * 2, "psums": 18 * 2 * 2},
        "gb": {"weights": 27, "inputs": 75 * 2, "psums": 18 * 3},
        "dram": {"weights": 27, "inputs": 75, "psums": 18},
    }
    assert energy.total == 243 + 972 * 1 + (81 + 450 + 72) * 2 + (27 + 150 + 54) * 6 + (27 + 75 + 18) * 200


def test_a_linear_layer_moves_no_partial_sum_between_pes_and_zero_inputs_skip_macs():
    shape = LayerShape("f", 4, 10)  # 40 weights, 10 inputs, 4 outputs; 10 channels: 3 passes of 4
    dense = layer_energy(shape)
    assert dense.accesses["array"] == {"weights": 40, "inputs": 10, "psums": 0}
    assert dense.accesses["gb"] == {"weights": 40, "inputs": 10, "psums": 4 * 5}
    assert dense.total == 40 + 160 + 50 * 2 + 70 * 6 + 54 * 200
    sparse_inputs = layer_energy(shape, input_density=0.25)
    assert sparse_inputs.computation == 10 and sparse_inputs.accesses["dram"]["inputs"] == 2.5


def test_a_batch_shares_the_weights_fetches_from_dram_and_the_global_buffer():
    shape = LayerShape("f", 4, 10)
    single, batched = layer_energy(shape), layer_energy(shape, dataflow=Dataflow(batch=8))
    assert batched.accesses["dram"] == {"weights": 5, "inputs": 10, "psums": 4}
    assert batched.accesses["gb"]["weights"] == 5
    assert batched.accesses["rf"] == single.accesses["rf"] and batched.computation == single.computation


def test_a_density_outside_0_to_1_is_refused():
    with pytest.raises(ValueError, match="weight_density must lie in"):
        layer_energy(LayerShape("f", 4, 10), weight_density=1.5)


def test_the_layers_shapes_are_read_from_the_graph():
    shapes = layer_shapes(papers.expand_variant("lenet5_caffe"))
    assert shapes == [
        LayerShape("conv1", 20, 1, (5, 5), (28, 28), (24, 24)),
        LayerShape("conv2", 50, 20, (5, 5), (12, 12), (8, 8)),
        LayerShape("fc1", 500, 800),
        LayerShape("fc2", 10, 500),
    ]


def test_layers_are_ordered_by_energy_not_by_weights():
    energies = network_energy(layer_shapes(papers.expand_variant("lenet5_caffe")))
    assert by_energy(energies) == ["fc1", "conv2", "conv1", "fc2"]
    # fc2 has ten times conv1's weights, yet conv1's 24×24 maps cost more to compute and move
    assert energies["conv1"].total > energies["fc2"].total


def test_pruning_weights_lowers_energy_less_than_it_lowers_the_weights():
    flat = papers.expand_variant("lenet5_caffe")
    measured = static_measurements("yang2017-lenet5_caffe")
    reduction = measured["energy_reduction"]
    assert isinstance(reduction, Estimate) and reduction.low < reduction.value < reduction.high
    settings = EnergyPruneSettings(kept={"conv1": 0.7, "conv2": 0.15, "fc1": 0.08, "fc2": 0.2})
    dense = sum(e.total for e in energy_aware.energies(flat, settings).values())
    pruned = sum(e.total for e in energy_aware.energies(flat, settings, settings.kept).values())
    assert reduction.value == pytest.approx(dense / pruned)
    ratio = measured["compression_ratio"]
    assert 1 < reduction.value < ratio.value, "feature maps still move: energy falls less than weights"


# -- one layer: magnitude, restore, least squares -----------------------------------------------------------


def correlated_layer(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A layer's weights [8, 40] and inputs [300, 40] whose features are correlated (as feature maps are)."""
    generator = torch.Generator().manual_seed(seed)
    mixing = torch.randn(40, 40, generator=generator)
    inputs = torch.randn(300, 40, generator=generator) @ mixing
    weight = torch.randn(8, 40, generator=generator)
    return weight, inputs


def test_restoring_lowers_the_output_error_of_plain_magnitude_pruning_at_the_same_count():
    weight, inputs = correlated_layer()
    target = inputs @ weight.T
    magnitude = magnitude_mask(weight, 80)
    restored = restore(weight, magnitude_mask(weight, 60), inputs, target, 20)
    assert int(restored.sum()) == int(magnitude.sum()) == 80
    assert output_error(weight * restored, inputs, target) < output_error(weight * magnitude, inputs, target)


def test_the_least_squares_update_lowers_the_error_further_and_keeps_the_mask():
    weight, inputs = correlated_layer(1)
    target = inputs @ weight.T
    local, mask = prune_layer(weight, inputs, 80, restored=0.25, refit=False)
    fitted, same = prune_layer(weight, inputs, 80, restored=0.25)
    assert torch.equal(mask, same) and torch.equal(fitted != 0, mask)
    assert output_error(fitted, inputs, target) < output_error(local, inputs, target)


def test_the_network_is_pruned_in_order_of_energy_to_each_layers_fraction():
    model = seeded("lenet5_caffe")
    settings = EnergyPruneSettings(kept={"conv1": 0.5, "fc1": 0.1, "fc2": 0.3}, images=20, positions=4)
    images = torch.randn(20, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    pruned = energy_aware_prune(model, papers.expand_variant("lenet5_caffe"), settings, images)
    assert pruned.order == ["fc1", "conv1", "fc2"]
    for name, fraction in settings.kept.items():
        weight = model.get_submodule(name).weight
        assert int(torch.count_nonzero(weight)) == round(weight.numel() * fraction), name
        assert torch.equal(weight != 0, pruned.masks[name] != 0)
    assert int(torch.count_nonzero(model.conv2.weight)) == model.conv2.weight.numel(), "not named: dense"


# -- the spec, papers check and papers compress ------------------------------------------------------------


def test_the_papers_figures_are_reported_beside_the_model_not_passed_or_failed():
    checks = papers.check("yang2017")
    assert {(c.variant, c.metric, c.reported, c.status) for c in checks} == {
        ("yang2017-alexnet", "energy_reduction", 3.7, "not_measurable"),
        ("yang2017-googlenet", "energy_reduction", 1.6, "not_measurable"),
    }
    alexnet = energy_aware.estimate("yang2017-alexnet")
    assert by_energy(alexnet)[0] == "classifier.0", "at batch 1, fc6's 38M weights fetched from DRAM lead"


def copied_spec(tmp_path, settings: dict | None = None, results: list | None = None) -> Registry:
    """yang2017's spec as another paper (``energy``), its LeNet variant only, with ``settings``."""
    spec = yaml.safe_load(SPEC.read_text())
    spec["id"] = "energy"
    spec["variants"] = [spec["variants"][0]]
    spec["variants"][0]["id"] = "energy-lenet5_caffe"
    if settings is not None:
        spec["variants"][0]["methods"][0]["settings"] = settings
    spec["results"] = results or []
    path = tmp_path / "energy.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.mark.parametrize(("scale", "status"), [(1.0, "pass"), (1.5, "fail")])
def test_a_reported_energy_reduction_is_checked_against_the_settings(scale, status, tmp_path, monkeypatch):
    settings = EnergyPruneSettings(kept={"conv1": 0.7, "conv2": 0.15, "fc1": 0.08, "fc2": 0.2})
    flat = papers.expand_variant("lenet5_caffe")
    dense = sum(e.total for e in energy_aware.energies(flat, settings).values())
    pruned = sum(e.total for e in energy_aware.energies(flat, settings, settings.kept).values())
    reported = round(scale * dense / pruned, 2)
    row = {"variant": "energy-lenet5_caffe", "metric": "energy_reduction", "value": reported}
    path = copied_spec(tmp_path, results=[{**row, "unit": "ratio", "source": "T"}])
    monkeypatch.setattr(papers.registry, "_current", registry_with(path))
    (check,) = papers.check("energy")
    assert check.status == status and check.measured == pytest.approx(dense / pruned, abs=1e-6)


def test_compress_with_data_writes_the_pruned_lenet_sparsely(tmp_path, monkeypatch, run):
    settings = {"kept": {"conv2": 0.2, "fc1": 0.05}, "images": 10, "positions": 4}
    path = copied_spec(tmp_path, settings)
    monkeypatch.setattr(papers.registry, "_current", registry_with(path))
    out = tmp_path / "out"
    result = run("compress", "energy-lenet5_caffe", "--data", "builtin:digits", "--out", str(out), "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["bytes_after"] < report["bytes_before"] / 4
    state, metadata = read_container(out / "model.safetensors")
    encoding = json.loads(metadata["encoding"])
    assert {encoding[name]["kind"] for name in ("fc1.weight", "conv2.weight")} <= {"relative", "bitmask"}
    assert int(torch.count_nonzero(state["fc1.weight"])) == round(400_000 * 0.05)
    assert int(torch.count_nonzero(state["conv2.weight"])) == round(25_000 * 0.2)


@pytest.mark.parametrize(
    ("settings", "field", "message"),
    [
        ({"kept": {"fc1": 1.5}}, "settings.kept.fc1", "less than or equal to 1"),
        ({"kept": {"fc1": 0.1}, "restored": 1.0}, "settings.restored", "less than 1"),
        (
            {"kept": {"fc9": 0.5}},
            "variants[0]",
            "settings.kept names 'fc9', which is no convolution or linear",
        ),
        (
            {"kept": {"fc1": 0.1}, "input_density": {"pool1": 0.5}},
            "variants[0]",
            "settings.input_density names",
        ),
        ({"kept": {}}, "variants[0]", "settings.kept names no layer"),
        ({"kept": {"fc1": 0.1}, "sparsity": 0.5}, "settings.sparsity", "has no setting 'sparsity'"),
    ],
)
def test_bad_settings_are_one_line_and_exit_2(settings, field, message, tmp_path, monkeypatch, run):
    path = copied_spec(tmp_path, settings)
    monkeypatch.setattr(Registry, "discover", classmethod(lambda cls: registry_with(path)))
    monkeypatch.setattr(papers.registry, "_current", None)
    monkeypatch.chdir(tmp_path)
    result = run("compress", "energy-lenet5_caffe", "--data", "builtin:digits", "--out", "out")
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("papers: error: ")
    assert str(path) in result.stderr and field in result.stderr and message in result.stderr
    assert not (tmp_path / "out").exists()


def test_compress_without_data_is_refused_in_one_line(tmp_path, run):
    result = run("compress", "yang2017-lenet5_caffe", "--out", str(tmp_path / "out"))
    assert result.exit_code == 2 and "give --data" in result.stderr and result.stderr.count("\n") == 1


# -- the proxy on MNIST digits -----------------------------------------------------------------------------


def test_the_proxy_trains_prunes_in_energy_order_fine_tunes_and_estimates_the_reduction():
    measured = energy_aware.energy_aware_proxy(
        epochs=1, overrides={"images": 20, "positions": 4, "finetune_epochs": 1}, limit=200
    )
    assert measured["order"] == ["fc1", "conv2", "conv1", "fc2"]
    assert measured["kept"] == pytest.approx({"conv1": 0.7, "conv2": 0.15, "fc1": 0.08, "fc2": 0.2}, abs=1e-3)
    assert all(0 <= measured[key] <= 100 for key in ("before", "magnitude", "local", "after"))
    assert measured["energy_reduction"] > 1
