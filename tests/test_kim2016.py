"""Kim et al. 2016 (``kim2016``): Tucker-2 of a convolution's channel modes (Tucker-1 for a first
layer, truncated SVD for a linear layer) as a static rewrite with the ranks in the settings, factors by
tensorly from the trained weights; exact at full rank; VBMF's ranks; the compression ratio and
theoretical speed-up from the ranks alone; ``papers compress`` on a decomposed LeNet; bad ranks refused
in one line; VGG-S's layers; a smoke of the MNIST proxy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

import papers
import papers.registry
from papers.compression import read_container
from papers.measure import measure_graph
from papers.methods import static_measurements, variant_steps
from papers.plugins import PluginInfo, PluginManager
from papers.registry import Registry, get_registry
from papers_plugins.compression import tucker
from papers_plugins.compression.tucker import TuckerSettings, decompose, vbmf_rank
from tests.conftest import REPO
from tests.test_methods import spec_plugin

SPEC = REPO / "specs" / "compression" / "kim2016.yaml"
VARIANT = "kim2016-lenet5_caffe"

pytestmark = pytest.mark.usefixtures("one_thread")


def trained_like(variant: str = "lenet5_caffe") -> torch.nn.Module:
    """A seeded model whose weights have low-rank structure plus noise, as trained ones have."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return papers.build_model(variant).eval()


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / a.norm())


# -- the decomposition -------------------------------------------------------------------------------


def test_at_full_rank_the_decomposed_network_reproduces_the_original():
    model, flat = trained_like(), papers.expand_variant("lenet5_caffe")
    full = TuckerSettings(
        ranks={"conv1": [None, 20], "conv2": [20, 50]}, linear_ranks={"fc1": 500, "fc2": 10}
    )
    decomposed, rewritten = decompose(model, flat, full)
    images = torch.randn(8, 1, 28, 28)
    with torch.no_grad():
        assert relative(model(images), decomposed(images)) < 1e-5
        for name in ("conv1", "conv2"):
            alone = model.get_submodule(name)
            chain = [decomposed.get_submodule(n) for n in tucker.chains(full)[name]]
            inputs = torch.randn(2, alone.in_channels, 12, 12)
            assert relative(alone(inputs), torch.nn.Sequential(*chain)(inputs)) < 1e-5, name
    assert [n.name for n in rewritten.nodes][:6] == [
        "conv1.core",
        "conv1.v",
        "pool1",
        "conv2.u",
        "conv2.core",
        "conv2.v",
    ]


def test_a_padded_strided_convolution_is_exact_at_full_rank_and_keeps_its_stride():
    layer = torch.nn.Conv2d(6, 10, 3, stride=2, padding=1).double()
    first, core, last = tucker.tucker2_factors(layer.weight, 6, 10)
    chain = torch.nn.Sequential(
        torch.nn.Conv2d(6, 6, 1, bias=False), torch.nn.Conv2d(6, 10, 3, stride=2, padding=1, bias=False),
        torch.nn.Conv2d(10, 10, 1),
    ).double()  # fmt: skip
    with torch.no_grad():
        chain[0].weight.copy_(first)
        chain[1].weight.copy_(core)
        chain[2].weight.copy_(last)
        chain[2].bias.copy_(layer.bias)
        inputs = torch.randn(2, 6, 9, 9, dtype=torch.float64)
        assert relative(layer(inputs), chain(inputs)) < 1e-10


def composed(first, core, last) -> torch.Tensor:
    """The kernel the chain 1×1 (``first``) → core → 1×1 (``last``) computes."""
    return torch.einsum("tr,rsij,sc->tcij", last[:, :, 0, 0], core, first[:, :, 0, 0])


def test_below_full_rank_the_chain_is_the_conv_with_the_tucker_reconstruction():
    weight = torch.randn(12, 8, 3, 3, dtype=torch.float64)
    first, core, last = tucker.tucker2_factors(weight, 4, 5)
    assert first.shape == (4, 8, 1, 1) and core.shape == (5, 4, 3, 3) and last.shape == (12, 5, 1, 1)
    inputs = torch.randn(2, 8, 7, 7, dtype=torch.float64)
    chained = F.conv2d(F.conv2d(F.conv2d(inputs, first), core, padding=1), last)
    assert torch.allclose(chained, F.conv2d(inputs, composed(first, core, last), padding=1))
    for factor in (first[:, :, 0, 0].T, last[:, :, 0, 0]):  # HOOI's factors are orthonormal
        assert torch.allclose(factor.T @ factor, torch.eye(factor.shape[1], dtype=torch.float64))
    error = relative(weight, composed(first, core, last))
    assert 0 < error < 1
    assert relative(weight, composed(*tucker.tucker2_factors(weight, 2, 3))) > error, "lower ranks fit worse"


def test_a_linear_layer_is_its_truncated_svd():
    weight = torch.randn(30, 20, dtype=torch.float64)
    first, last = tucker.svd_factors(weight, 5)
    assert first.shape == (5, 20) and last.shape == (30, 5)
    singular = torch.linalg.svdvals(weight)
    assert float((weight - last @ first).norm()) == pytest.approx(float(singular[5:].norm()))


# -- VBMF --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("rank", "noise"), [(1, 0.3), (5, 0.1), (5, 1.0), (10, 0.5)])
def test_vbmf_finds_the_rank_of_a_low_rank_matrix_under_noise(rank, noise):
    generator = np.random.default_rng(rank)
    signal = generator.standard_normal((50, rank)) @ generator.standard_normal((rank, 80))
    observed = signal + noise * generator.standard_normal((50, 80))
    assert vbmf_rank(observed) == rank
    assert vbmf_rank(observed.T) == rank


def test_vbmf_keeps_nothing_of_pure_noise():
    assert vbmf_rank(np.random.default_rng(0).standard_normal((64, 200))) == 0
    assert vbmf_rank(np.zeros((4, 6))) == 0


def test_vbmf_ranks_are_settings_for_every_layer_with_tucker_1_for_a_single_input_channel():
    model, flat = trained_like(), papers.expand_variant("lenet5_caffe")
    with torch.no_grad():  # give conv2 a rank-3 output mode and rank-2 input mode, plus a little noise
        core = torch.randn(3, 2, 5, 5)
        weight = torch.einsum("tr,rsij,sc->tcij", torch.randn(50, 3), core, torch.randn(2, 20))
        model.conv2.weight.copy_(weight + 1e-3 * torch.randn_like(weight))
    found = tucker.vbmf_ranks(model, flat)
    assert found["ranks"]["conv2"] == [2, 3]
    assert found["ranks"]["conv1"][0] is None
    TuckerSettings(**found)  # valid settings as they are


# -- static: the rewrite and its measurements ---------------------------------------------------------


def test_the_variants_counts_are_measured_on_the_rewritten_graph():
    flat = papers.expand_variant(VARIANT)
    layers = {layer.name: layer.params for layer in papers.measure(VARIANT).layers}
    assert (
        layers["conv2.u"] == 20 * 4
        and layers["conv2.core"] == 4 * 8 * 25
        and layers["conv2.v"] == 8 * 50 + 50
    )
    assert (
        layers["conv1.core"] == 1 * 3 * 25
        and layers["fc1.u"] == 800 * 10
        and layers["fc1.v"] == 10 * 500 + 500
    )
    assert "conv2" not in {node.name for node in flat.nodes}


def test_the_ratio_and_speed_up_from_the_ranks_are_the_base_over_the_decomposed():
    base, after = papers.measure("lenet5_caffe"), papers.measure(VARIANT)
    computed = static_measurements(VARIANT)
    assert computed["compression_ratio"] == pytest.approx(base.params / after.params)
    assert computed["speedup"] == pytest.approx(base.macs / after.macs)


def test_vgg_s_has_the_released_networks_layers():
    m = papers.measure("vgg_s")
    shapes = {layer.name: layer.output_shape for layer in m.layers}
    assert shapes["conv1"] == [1, 96, 109, 109] and shapes["pool1"] == [1, 96, 37, 37]
    assert shapes["conv2"] == [1, 256, 33, 33] and shapes["pool5"] == [1, 512, 6, 6]
    assert m.params == 102_908_520


def test_a_whole_vgg_s_decomposes_statically_with_its_first_layer_along_the_output_only():
    flat = papers.expand_variant("vgg_s")
    settings = TuckerSettings(
        ranks={
            "conv1": [None, 32],
            "conv2": [48, 96],
            "conv3": [96, 128],
            "conv4": [128, 128],
            "conv5": [128, 128],
        },
        linear_ranks={"fc6": 256, "fc7": 256},
    )
    rewritten = tucker.tucker_rewrite(flat, settings)
    values = tucker.tucker_measure(rewritten, settings)
    base, after = papers.measure("vgg_s"), measure_graph("x", rewritten, get_registry().catalogue)
    assert values["compression_ratio"] == pytest.approx(base.params / after.params)
    assert values["speedup"] == pytest.approx(base.macs / after.macs)
    conv1 = {layer.name: layer.params for layer in after.layers if layer.name.startswith("conv1.")}
    assert conv1 == {"conv1.core": 3 * 32 * 49, "conv1.v": 32 * 96 + 96}


# -- papers compress ------------------------------------------------------------------------------------


def test_compress_writes_the_factors_of_the_base_and_reads_them_back(run, tmp_path):
    result = run("compress", VARIANT, "--out", str(tmp_path), "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["params_after"] == papers.measure(VARIANT).params
    assert report["bytes_after"] < report["bytes_before"] / 10
    state, _ = read_container(tmp_path / "model.safetensors")
    (step,) = variant_steps(VARIANT)
    expected, _ = decompose(trained_like(), papers.expand_variant("lenet5_caffe"), step.settings)
    assert state.keys() == expected.state_dict().keys()
    assert all(torch.allclose(state[k], v, atol=1e-6) for k, v in expected.state_dict().items())


# -- bad ranks: one line, exit 2 ------------------------------------------------------------------------


def copied_spec(tmp_path: Path, settings: dict) -> Path:
    """kim2016's LeNet variant as another paper's (``lr``), with ``settings``."""
    spec = yaml.safe_load(SPEC.read_text())
    spec["id"] = "lr"
    spec.pop("graphs")
    spec["variants"] = [v for v in spec["variants"] if v["id"] == VARIANT]
    spec["variants"][0]["id"] = "lr-lenet5_caffe"
    spec["variants"][0]["methods"][0]["settings"] = settings
    path = tmp_path / "lr.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def registry_with(path: Path) -> Registry:
    manager = PluginManager()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PAPERS_PLUGINS", "")
        manager.load_entry_points()
    manager.register(spec_plugin(path), PluginInfo("copy", "copy-dist", "1", "tests"))
    return Registry(manager)


@pytest.mark.parametrize(
    ("settings", "field", "message"),
    [
        ({"ranks": {"conv2": [21, 8]}}, "settings.ranks.conv2", "rank 21 is above the layer's limit of 20"),
        ({"ranks": {"conv2": [4, 51]}}, "settings.ranks.conv2", "rank 51 is above the layer's limit of 50"),
        ({"ranks": {"conv2": [0, 8]}}, "settings.ranks.conv2[0]", "greater than or equal to 1"),
        ({"linear_ranks": {"fc1": 501}}, "settings.linear_ranks.fc1", "limit of 500"),
        ({"linear_ranks": {"fc1": -3}}, "settings.linear_ranks.fc1", "greater than or equal to 1"),
        ({"ranks": {"conv2": [4]}}, "settings.ranks.conv2", "at least 2 items"),
        ({"ranks": {"conv2": [4, None]}}, "settings.ranks.conv2", "the output rank R4"),
        ({"ranks": {"conv9": [4, 8]}}, "settings.ranks.conv9", "'conv9' is no convolution"),
        ({"linear_ranks": {"conv2": 4}}, "settings.linear_ranks.conv2", "'conv2' is no linear layer"),
        ({"fine_tune_epochs": 1}, "variants[0]", "nothing would be decomposed"),
    ],
)
def test_bad_ranks_are_one_line_naming_the_field_and_exit_2(
    settings, field, message, tmp_path, monkeypatch, run
):
    path = copied_spec(tmp_path, settings)
    monkeypatch.setattr(Registry, "discover", classmethod(lambda cls: registry_with(path)))
    monkeypatch.setattr(papers.registry, "_current", None)
    monkeypatch.chdir(tmp_path)
    result = run("compress", "lr-lenet5_caffe", "--out", "out")
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("papers: error: ")
    assert str(path) in result.stderr and field in result.stderr and message in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_grouped_convolution_is_refused_naming_it():
    flat = papers.expand_variant("alexnet")
    with pytest.raises(papers.errors.SpecError) as refused:
        tucker.tucker_rewrite(flat, TuckerSettings(ranks={"features.4": [32, 64]}))
    assert (
        refused.value.field == "settings.ranks.features.4" and "grouped convolution" in refused.value.message
    )


# -- the proxy on MNIST digits --------------------------------------------------------------------------


def test_the_proxy_trains_decomposes_at_vbmfs_ranks_and_fine_tunes():
    measured = tucker.tucker_proxy(epochs=1, fine_tune_epochs=1, limit=200)
    assert measured["params_after"] < measured["params_before"]
    assert measured["macs_after"] < measured["macs_before"]
    assert measured["settings"].ranks["conv1"][0] is None, "VBMF's ranks, Tucker-1 for one input channel"
    assert measured["settings"].fine_tune_epochs == 30, "the variant's other settings kept"
    assert all(0 <= measured[k] <= 100 for k in ("before", "decomposed", "after"))
