"""Zhang et al. 2015/2016 (``zhang2015``): channel decomposition (d′ filters, then a 1×1 layer back to d)
from the rank-d′ reconstruction of sampled responses: exact at full rank; the reduced-rank regression
(the generalised SVD) of the asymmetric reconstruction; the nonlinear solver's closed-form z step and
its gain after a ReLU; the energy criterion's ranks under a budget; the ratio and speed-up from d′;
``papers compress``; bad d′ refused in one line; a smoke of the MNIST proxy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

import papers
import papers.registry
from papers.build import build
from papers.compression import read_container
from papers.measure import measure_graph
from papers.methods import MethodContext, static_measurements, variant_steps
from papers.plugins import PluginInfo, PluginManager
from papers.registry import Registry, get_registry
from papers_plugins.compression import channel_decomposition as zhang
from papers_plugins.compression import low_rank
from papers_plugins.compression.channel_decomposition import ChannelSettings
from tests.conftest import REPO
from tests.test_methods import spec_plugin

SPEC = REPO / "specs" / "compression" / "zhang2015.yaml"
VARIANT = "zhang2015-lenet5_caffe"

pytestmark = pytest.mark.usefixtures("one_thread")


def seeded(variant: str = "lenet5_caffe") -> torch.nn.Module:
    """The base ``papers compress`` starts from without --weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return papers.build_model(variant).eval()


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / a.norm())


def decomposed(model, settings, data=None, base="lenet5_caffe"):
    flat = papers.expand_variant(base)
    rewritten = zhang.channel_rewrite(flat, settings)
    new = build(rewritten, get_registry().catalogue).eval()
    low_rank.copy_unchanged(model, new)
    zhang.channel_apply(new, settings, MethodContext(rewritten, data=data, before=model))
    return new


# -- the decomposition ---------------------------------------------------------------------------------


@pytest.mark.parametrize("data", [None, "builtin:mnist5k"])
def test_at_full_rank_the_decomposed_network_reproduces_the_original(data):
    model = seeded()
    new = decomposed(model, ChannelSettings(ranks={"conv1": 20, "conv2": 50}, images=100), data)
    images = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        assert relative(model(images), new(images)) < 1e-5


def test_without_data_the_filters_are_projected_on_the_weights_top_singular_vectors():
    model = seeded()
    new = decomposed(model, ChannelSettings(ranks={"conv2": 7}))
    matrix = model.conv2.weight.detach().double().reshape(50, -1)
    expand = new.get_submodule("conv2.expand").weight.detach()[:, :, 0, 0].double()
    composed = expand @ new.get_submodule("conv2.reduce").weight.detach().double().reshape(7, -1)
    singular = torch.linalg.svdvals(matrix)
    assert float((matrix - composed).norm()) == pytest.approx(float(singular[7:].norm()), rel=1e-4)


def test_the_reduced_rank_regression_recovers_an_exact_low_rank_map():
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(500, 12, generator=generator, dtype=torch.float64)
    low = torch.randn(12, 3, generator=generator, dtype=torch.float64) @ torch.randn(
        3, 12, generator=generator, dtype=torch.float64
    )
    targets = inputs @ low.T + 0.5
    p, q_t, bias = zhang.reduced_rank_fit(targets, inputs, 3)
    assert p.shape == (12, 3) and q_t.shape == (3, 12)
    assert torch.allclose(inputs @ q_t.T @ p.T + bias, targets, atol=1e-8)


def test_the_symmetric_fit_is_the_responses_principal_subspace():
    generator = torch.Generator().manual_seed(1)
    responses = torch.randn(800, 6, generator=generator, dtype=torch.float64) * torch.tensor(
        [5.0, 4.0, 3.0, 0.3, 0.2, 0.1], dtype=torch.float64
    )
    p, _, _ = zhang.reduced_rank_fit(responses, responses, 3)
    _, vectors = torch.linalg.eigh(torch.cov(responses.T))
    top = vectors[:, -3:]
    assert torch.allclose(p @ p.T, top @ top.T, atol=1e-8)


def test_the_z_step_is_the_elementwise_minimiser():
    generator = torch.Generator().manual_seed(2)
    target = torch.randn(200, generator=generator, dtype=torch.float64).clamp(min=0)
    fitted = 2 * torch.randn(200, generator=generator, dtype=torch.float64)
    z = zhang._z_step(target, fitted, 0.3)
    grid = torch.linspace(-8, 8, 16001, dtype=torch.float64)[:, None]
    costs = (target - grid.clamp(min=0)) ** 2 + 0.3 * (grid - fitted) ** 2
    best = costs.min(0).values
    chosen = (target - z.clamp(min=0)) ** 2 + 0.3 * (z - fitted) ** 2
    assert torch.all(chosen <= best + 1e-6)


def test_the_nonlinear_fit_reconstructs_after_the_relu_better_than_the_linear_one():
    generator = torch.Generator().manual_seed(3)
    inputs = torch.randn(2000, 10, generator=generator, dtype=torch.float64)
    responses = inputs @ torch.randn(10, 10, generator=generator, dtype=torch.float64).T - 1.0

    def after_relu_error(fit) -> float:
        p, q_t, bias = fit
        return float(((responses.clamp(min=0) - (inputs @ q_t.T @ p.T + bias).clamp(min=0)) ** 2).sum())

    linear = zhang.reduced_rank_fit(responses, inputs, 4)
    nonlinear = zhang.nonlinear_fit(responses, inputs, 4, iterations=25)
    assert after_relu_error(nonlinear) < after_relu_error(linear)


def test_the_asymmetric_fit_aims_at_the_original_responses_from_the_approximated_input():
    model, data = seeded(), "builtin:mnist5k"
    settings = {"ranks": {"conv1": 4, "conv2": 10}, "images": 300}
    symmetric = decomposed(model, ChannelSettings(**settings, asymmetric=False), data)
    asymmetric = decomposed(model, ChannelSettings(**settings), data)
    digits = zhang.training_images(data, (1, 28, 28))[1000:1300]  # digits the fits did not sample

    def conv2_maps(net: torch.nn.Module, split: bool) -> torch.Tensor:
        def layer(name: str) -> torch.nn.Module:
            parts = (f"{name}.reduce", f"{name}.expand") if split else (name,)
            return torch.nn.Sequential(*(net.get_submodule(part) for part in parts))

        return layer("conv2")(net.pool1(layer("conv1")(digits)))

    with torch.no_grad():
        reference = conv2_maps(model, split=False)
        assert relative(reference, conv2_maps(asymmetric, True)) < relative(
            reference, conv2_maps(symmetric, True)
        )


# -- whole-model rank selection ------------------------------------------------------------------------


def test_energy_ranks_meet_the_budget_and_favour_the_layer_whose_energy_is_concentrated():
    model, flat = seeded(), papers.expand_variant("lenet5_caffe")
    with torch.no_grad():  # conv2's responses in a 3-dimensional subspace, plus a little noise
        weight = torch.randn(50, 3) @ torch.randn(3, 500)
        model.conv2.weight.copy_((weight + 1e-3 * torch.randn(50, 500)).reshape(50, 20, 5, 5))
    images = torch.randn(200, 1, 28, 28)
    ranks = zhang.energy_ranks(model, flat, images, ["conv1", "conv2"], speedup=2.0)
    rewritten = zhang.channel_rewrite(flat, ChannelSettings(ranks=ranks))
    macs = {
        layer.name: layer.macs for layer in measure_graph("x", rewritten, get_registry().catalogue).layers
    }
    base = {layer.name: layer.macs for layer in papers.measure("lenet5_caffe").layers}
    decomposed_macs = sum(macs[f"{n}.{part}"] for n in ("conv1", "conv2") for part in ("reduce", "expand"))
    assert decomposed_macs <= (base["conv1"] + base["conv2"]) / 2
    assert ranks["conv1"] == 20 and ranks["conv2"] < 50, "only the layer whose tail holds no energy is cut"
    # a budget the full d′ meet (their 1×1 layers included) keeps every filter
    full = zhang.energy_ranks(model, flat, images, ["conv1", "conv2"], speedup=0.5)
    assert full == {"conv1": 20, "conv2": 50}


# -- static --------------------------------------------------------------------------------------------


def test_the_ratio_and_speed_up_from_d_prime_are_the_base_over_the_decomposed():
    base, after = papers.measure("lenet5_caffe"), papers.measure(VARIANT)
    computed = static_measurements(VARIANT)
    assert computed["compression_ratio"] == pytest.approx(base.params / after.params)
    assert computed["speedup"] == pytest.approx(base.macs / after.macs)
    layers = {layer.name: layer.params for layer in after.layers}
    assert layers["conv2.reduce"] == 17 * 20 * 25 + 17 and layers["conv2.expand"] == 17 * 50 + 50


# -- papers compress -----------------------------------------------------------------------------------


def test_compress_without_data_writes_the_weight_only_decomposition(run, tmp_path):
    result = run("compress", VARIANT, "--out", str(tmp_path), "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["macs_after"] == papers.measure(VARIANT).macs
    state, _ = read_container(tmp_path / "model.safetensors")
    (step,) = variant_steps(VARIANT)
    expected = decomposed(seeded(), step.settings)
    assert state.keys() == expected.state_dict().keys()
    assert all(torch.allclose(state[k], v, atol=1e-6) for k, v in expected.state_dict().items())


# -- bad d′: one line, exit 2 --------------------------------------------------------------------------


def copied_spec(tmp_path: Path, settings: dict) -> Path:
    """zhang2015's LeNet variant as another paper's (``cd``), with ``settings``."""
    spec = yaml.safe_load(SPEC.read_text())
    spec["id"] = "cd"
    spec["variants"][0]["id"] = "cd-lenet5_caffe"
    spec["variants"][0]["methods"][0]["settings"] = settings
    path = tmp_path / "cd.yaml"
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
        ({"ranks": {"conv2": 51}}, "settings.ranks.conv2", "rank 51 is above the layer's limit of 50"),
        ({"ranks": {"conv2": 0}}, "settings.ranks.conv2", "greater than or equal to 1"),
        ({"ranks": {"fc1": 4}}, "settings.ranks.fc1", "'fc1' is no convolution"),
        ({"ranks": {}}, "settings.ranks", "nothing would be decomposed"),
        ({"ranks": {"conv2": 4}, "positions": 0}, "settings.positions", "greater than or equal to 1"),
    ],
)
def test_bad_d_prime_is_one_line_naming_the_field_and_exit_2(
    settings, field, message, tmp_path, monkeypatch, run
):
    path = copied_spec(tmp_path, settings)
    monkeypatch.setattr(Registry, "discover", classmethod(lambda cls: registry_with(path)))
    monkeypatch.setattr(papers.registry, "_current", None)
    monkeypatch.chdir(tmp_path)
    result = run("compress", "cd-lenet5_caffe", "--out", "out")
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("papers: error: ")
    assert str(path) in result.stderr and field in result.stderr and message in result.stderr
    assert not (tmp_path / "out").exists()


# -- the proxy on MNIST digits -------------------------------------------------------------------------


def test_the_proxy_chooses_d_prime_by_energy_decomposes_from_responses_and_fine_tunes():
    measured = zhang.channel_proxy(epochs=1, fine_tune_epochs=1, limit=200)
    assert set(measured["settings"].ranks) == {"conv1", "conv2"}
    assert measured["macs_after"] < measured["macs_before"]
    assert all(0 <= measured[k] <= 100 for k in ("before", "decomposed", "after"))
