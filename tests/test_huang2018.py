"""Huang and Wang 2018 (SSS, ``sparse_structure``): the ℓ1 proximal step leaves exact zeros, APG's
look-ahead extrapolates from the last two iterates, factors folded into the next layers let the zero
channels go without changing what the network computes, a γ that zeroes a whole layer is refused, and
a smoke of the proxy."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

import papers
import papers.registry
from papers.api import build_model, expand_variant
from papers.compression import compress, load_compressed
from papers.errors import PapersError
from papers.registry import Registry
from papers_plugins.compression import sparse_structure as sss
from papers_plugins.compression.channels import remove_channels
from papers_plugins.compression.gates import ChannelGates, gate_points
from papers_plugins.compression.pruning import shuffled_batches
from papers_plugins.compression.sparse_structure import (
    APG,
    SparseStructureSettings,
    fold_factors,
    soft_threshold,
)
from tests.conftest import REPO
from tests.test_han2015 import registry_with

SPEC = REPO / "specs" / "compression" / "huang2018.yaml"

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_proximal_step_shrinks_by_the_threshold_and_leaves_exact_zeros():
    values = torch.tensor([0.5, -0.5, 0.05, -0.02, 0.0])
    assert soft_threshold(values, 0.1).tolist() == pytest.approx([0.4, -0.4, 0.0, 0.0, 0.0])
    assert (soft_threshold(values, 0.1)[2:] == 0).all()


def test_apg_minimises_a_lasso_to_its_sparse_solution():
    # min ½‖λ − c‖² + γ‖λ‖₁ has the solution soft_threshold(c, γ)
    target = torch.tensor([1.0, 0.05, -0.6, 0.0])
    factors = torch.zeros(4, requires_grad=True)
    apg = APG([factors], lr=0.5, gamma=0.1)
    for _ in range(60):
        apg.look_ahead()
        (0.5 * (factors - target).pow(2).sum()).backward()
        apg.step()
    assert factors.detach().tolist() == pytest.approx([0.9, 0.0, -0.5, 0.0], abs=1e-4)
    assert factors[1] == 0 and factors[3] == 0


def test_the_look_ahead_extrapolates_from_the_last_two_iterates():
    factors = torch.zeros(1, requires_grad=True)
    apg = APG([factors], lr=1.0, gamma=0.0)
    for _ in range(3):
        apg.look_ahead()
        factors.grad = torch.tensor([-1.0])
        apg.step()
    now, before = float(apg.current[0]), float(apg.previous[0])
    apg.look_ahead()
    assert float(factors.detach()) == pytest.approx(now + 3 / 6 * (now - before))


def test_folded_factors_let_the_zero_channels_go_without_changing_the_outputs():
    torch.manual_seed(0)
    model = build_model("lenet5_caffe").eval()
    flat = expand_variant("lenet5_caffe")
    widths = {"conv1": 20, "conv2": 50, "fc1": 500}
    factors = {
        name: torch.randn(width).mul(torch.rand(width) > 0.5).tolist() for name, width in widths.items()
    }
    images = torch.rand(8, 1, 28, 28)
    with ChannelGates(model, gate_points(model, flat, widths), widths) as gates:
        for name, values in factors.items():
            gates.masks[name].copy_(torch.tensor(values))
        with torch.no_grad():
            scaled = model(images)
    fold_factors(model, flat, factors)
    kept = {name: [i for i, v in enumerate(values) if v != 0] for name, values in factors.items()}
    narrowed, _ = remove_channels(model, flat, kept)
    with torch.no_grad():
        assert torch.allclose(narrowed(images), scaled, rtol=1e-5, atol=1e-5)


def tiny_task():
    """A small convolutional net whose channels 1 and 3 are dead (zero filters and biases) on a task
    its live channels can learn."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(4 * 36, 2)
    )
    with torch.no_grad():
        model[0].weight[[1, 3]] = 0.0
        model[0].bias[[1, 3]] = 0.0
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(64, 1, 8, 8, generator=generator)
    labels = (images.mean((1, 2, 3)) > 0.5).long()
    return model, shuffled_batches(images, labels, 16)


def test_a_dead_channels_factor_reaches_exactly_zero_and_a_used_ones_does_not():
    model, batches = tiny_task()
    settings = SparseStructureSettings(gamma=0.02, epochs=15, factor_lr=1.0, retrain_lr=0.05)
    run = sss.sparse_structure(model, {"0": "1"}, {"0": 4}, settings, batches)
    assert run.factors["0"][1] == 0.0 and run.factors["0"][3] == 0.0, "no gradient holds them up"
    assert run.kept["0"] == [i for i in range(4) if run.factors["0"][i] != 0]
    assert 0 in run.kept["0"] or 2 in run.kept["0"]


def test_a_gamma_that_zeroes_a_whole_layer_is_refused_naming_it():
    model, batches = tiny_task()
    settings = SparseStructureSettings(gamma=100.0, epochs=1, factor_lr=0.1)
    with pytest.raises(PapersError) as refused:
        sss.sparse_structure(model, {"0": "1"}, {"0": 4}, settings, batches)
    assert refused.value.field == "settings.gamma" and "'0'" in refused.value.message


def copied_spec(tmp_path: Path, settings: dict) -> Path:
    spec = yaml.safe_load(SPEC.read_text())
    spec["id"] = "sss_copy"
    spec["variants"][0]["id"] = "sss_copy-lenet5_caffe"
    spec["variants"][0]["methods"][0]["settings"] = settings
    path = tmp_path / "sss_copy.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.mark.parametrize(
    ("settings", "field", "message"),
    [
        ({"gamma": 0.0}, "settings.gamma", "greater than 0"),
        ({"gamma": 0.01, "layers": ["conv5"]}, "settings.layers[0]", "no layer 'conv5'"),
        ({"gamma": 0.01, "layers": ["fc2"]}, "settings.layers[0]", "graph output"),
        ({"gamma": 100.0, "epochs": 1}, "settings.gamma", "removes the whole layer"),
    ],
)
def test_bad_settings_are_one_line_and_exit_2(settings, field, message, tmp_path, monkeypatch, run):
    path = copied_spec(tmp_path, settings)
    monkeypatch.setattr(Registry, "discover", classmethod(lambda cls: registry_with(path)))
    monkeypatch.setattr(papers.registry, "_current", None)
    monkeypatch.chdir(tmp_path)
    result = run("compress", "sss_copy-lenet5_caffe", "--out", "out", "--data", "builtin:digits")
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("papers: error: ")
    assert field in result.stderr and message in result.stderr
    assert not (tmp_path / "out").exists()


def test_compress_with_data_writes_the_selected_model_and_it_loads_back(tmp_path, monkeypatch):
    light = {"gamma": 0.02, "epochs": 1, "batch_size": 128}
    monkeypatch.setattr(papers.registry, "_current", registry_with(copied_spec(tmp_path, light)))
    out = tmp_path / "out"
    report = compress("sss_copy-lenet5_caffe", out=out, data="builtin:digits", latency_runs=2)
    loaded = load_compressed(out / "model.safetensors")
    assert loaded.fc1.in_features == 16 * loaded.conv2.out_channels, "the narrowed graph loads back whole"
    assert report["macs_after"] <= report["macs_before"]


def test_the_proxy_trains_prunes_removes_and_reports():
    overrides = {"epochs": 1, "final_epochs": 1}
    measured = sss.sparse_structure_proxy(data="builtin:digits", epochs=1, overrides=overrides, limit=200)
    assert 0 <= measured["before"] <= 100 and 0 <= measured["after"] <= 100
    assert set(measured["widths"]) == {"conv1", "conv2", "fc1"}
    assert measured["macs"][1] <= measured["macs"][0]
