"""Soft weight-sharing (``soft_weight_sharing``): the mixture prior's log-density against a hand
computation, its gradient, merging by KL divergence (eq. 8), quantization to the means by
responsibility, retraining with the prior, ``papers compress`` without data, bad settings refused in
one line, and a smoke of the MNIST proxy."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import papers
import papers.registry
from papers.compression import read_container
from papers.registry import Registry
from papers_plugins.compression import pruning
from papers_plugins.compression.mixture_prior import (
    Components,
    Mixture,
    MixtureSettings,
    _log_density_function,
    assign,
    complexity,
    init_mixture,
    kl_divergences,
    merge,
    quantize,
    sharing_proxy,
    soft_share,
)
from tests.conftest import REPO
from tests.test_han2015 import registry_with

SPEC = REPO / "specs" / "compression" / "soft_weight_sharing.yaml"

pytestmark = pytest.mark.usefixtures("one_thread")


def mixture(means, stds, others, pi_zero) -> Mixture:
    """A mixture with the zero component first: ``means`` and ``others`` (proportions, summing to 1
    before the scale 1 − π0) of the learned components, ``stds`` of all."""
    weights = torch.tensor(others, dtype=torch.float64)
    return Mixture(
        means=torch.tensor(means, dtype=torch.float64, requires_grad=True),
        log_precisions=(-2 * torch.tensor(stds, dtype=torch.float64).log()).requires_grad_(),
        logits=weights.log().requires_grad_(),
        pi_zero=pi_zero,
    )


def normal(x: float, mean: float, std: float) -> float:
    return math.exp(-((x - mean) ** 2) / (2 * std**2)) / (std * math.sqrt(2 * math.pi))


def components(means, stds, mixing) -> Components:
    as_tensor = lambda values: torch.tensor(values, dtype=torch.float64)  # noqa: E731
    return Components(as_tensor(means), as_tensor(stds) ** 2, as_tensor(mixing))


# -- the prior (eq. 5) ---------------------------------------------------------------------------------


def test_the_log_density_is_the_mixture_computed_by_hand():
    prior = mixture([0.5, -0.25], [0.1, 0.2, 0.05], [0.75, 0.25], pi_zero=0.9)
    assert prior.mixing().tolist() == pytest.approx([0.9, 0.075, 0.025])
    assert prior.all_means().tolist() == [0.0, 0.5, -0.25]
    for w in (0.0, 0.3, -0.2, 1.0):
        by_hand = 0.9 * normal(w, 0, 0.1) + 0.075 * normal(w, 0.5, 0.2) + 0.025 * normal(w, -0.25, 0.05)
        assert float(prior.log_density(torch.tensor([w], dtype=torch.float64)).detach()) == pytest.approx(
            math.log(by_hand), rel=1e-12
        )


def test_the_written_out_gradient_is_the_logsumexps():
    torch.manual_seed(0)
    inputs = (
        torch.randn(40, dtype=torch.float64).mul(0.2).requires_grad_(),
        torch.randn(5, dtype=torch.float64).mul(0.2).requires_grad_(),
        torch.randn(5, dtype=torch.float64).add(3.0).requires_grad_(),
        torch.randn(5, dtype=torch.float64).log_softmax(0).requires_grad_(),
    )
    assert torch.autograd.gradcheck(_log_density_function().apply, inputs)


def test_the_means_start_evenly_over_the_weights_range_each_component_as_wide_as_their_spacing():
    weights = [torch.tensor([[-0.3, 0.1], [0.2, 0.0]]), torch.tensor([0.5])]
    prior = init_mixture(weights, MixtureSettings(components=5))
    assert prior.means.tolist() == pytest.approx([-0.3, -0.0333333, 0.2333333, 0.5])
    assert prior.log_precisions.exp().tolist() == pytest.approx([1 / (0.8 / 3) ** 2] * 5, rel=1e-5)
    assert prior.mixing().tolist() == pytest.approx([0.999] + [0.00025] * 4)
    wide = init_mixture(weights, MixtureSettings(components=5, init_std=0.25))
    assert wide.log_precisions.exp().tolist() == pytest.approx([16.0] * 5)


def test_the_gamma_hyper_prior_is_added_only_when_asked():
    prior = mixture([0.5], [0.1, 0.2], [1.0], pi_zero=0.9)
    weights = [torch.tensor([0.0, 0.45], dtype=torch.float64)]
    plain = float(complexity(prior, weights, MixtureSettings()).detach())
    assert plain == pytest.approx(-float(prior.log_density(weights[0]).sum().detach()))
    settings = MixtureSettings(hyper_prior=True, zero_alpha=3.0, zero_beta=2.0, alpha=5.0, beta=0.5)
    # -[(α − 1) log λ − β λ] for λ0 = 100 and λ1 = 25
    hyper = -(2 * math.log(100) - 2 * 100) - (4 * math.log(25) - 0.5 * 25)
    assert float(complexity(prior, weights, settings).detach()) == pytest.approx(plain + hyper)


# -- post-processing (Section 4.3) ---------------------------------------------------------------------


def test_the_kl_divergence_is_the_gaussians_closed_form():
    kl = kl_divergences(components([0.0, 1.0], [1.0, 2.0], [0.5, 0.5]))
    assert float(kl[0, 1]) == pytest.approx(math.log(2) + (1 + 1) / 8 - 0.5)
    assert float(kl[1, 0]) == pytest.approx(-math.log(2) + (4 + 1) / 2 - 0.5)
    assert kl.diagonal().tolist() == [0.0, 0.0]


def test_close_components_merge_by_eq_8_and_the_zero_group_keeps_mean_zero():
    before = components(
        [0.0, 0.30, 0.301, -0.4, 0.001], [0.02, 0.05, 0.0502, 0.05, 0.02], [0.9, 0.04, 0.02, 0.03, 0.01]
    )
    merged = merge(before, 0.01)
    assert merged.mixing.tolist() == pytest.approx([0.91, 0.06, 0.03])
    assert merged.means.tolist() == pytest.approx([0.0, (0.04 * 0.30 + 0.02 * 0.301) / 0.06, -0.4])
    assert merged.variances.tolist() == pytest.approx(
        [0.02**2, (0.04 * 0.05**2 + 0.02 * 0.0502**2) / 0.06, 0.05**2]
    )
    assert len(merge(before, 0.0).means) == 5, "a threshold of 0 merges nothing"


def test_each_weight_goes_to_its_most_responsible_component_not_the_nearest_mean():
    book = components([0.0, 0.1, -0.5], [0.03, 0.03, 0.03], [0.999, 0.0005, 0.0005])
    labels = assign(torch.tensor([0.0, 0.08, 0.2, -0.45]), book)
    assert labels.tolist() == [0, 0, 1, 2], "0.08 is nearest 0.1 but π0 outweighs it"


def test_quantization_leaves_only_the_means_and_prunes_the_zero_components_weights():
    model = papers.build_model("lenet300_100").eval()
    book = components([0.0, 0.04, -0.05], [0.01, 0.01, 0.01], [0.9, 0.05, 0.05])
    shared = quantize(model, ["fc1", "fc2"], book)
    for name in ("fc1", "fc2"):
        weight = model.get_submodule(name).weight.detach()
        assert all(min(abs(v - m) for m in (0.0, 0.04, -0.05)) < 1e-7 for v in weight.unique().tolist())
        assert torch.equal(weight == 0, shared[name].labels == -1)
        assert torch.equal(shared[name].weights(), weight)
    assert model.fc3.weight.unique().numel() > 3, "a layer not named stays as it was"


# -- retraining and compress -----------------------------------------------------------------------------


def random_batches(count: int = 64, batch_size: int = 32):
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(count, 1, 28, 28, generator=generator)
    labels = torch.randint(0, 10, (count,), generator=generator)
    return pruning.shuffled_batches(images, labels, batch_size)


def test_retraining_moves_the_mixture_and_ends_with_at_most_j_shared_values_per_layer():
    torch.manual_seed(0)
    model = papers.build_model("lenet300_100").eval()
    keys = set(model.state_dict())
    settings = MixtureSettings(epochs=2, prior_lr=1.0e-2, pi_zero=0.99)
    names = ["fc1", "fc2", "fc3"]
    start = init_mixture([model.get_submodule(n).weight for n in names], settings)
    sharing = soft_share(model, settings, names, random_batches(), 64)
    assert not torch.allclose(sharing.mixture.means, start.means), "the means are learned"
    assert not torch.allclose(sharing.mixture.log_precisions, start.log_precisions)
    assert set(model.state_dict()) == keys
    for name in names:
        weight = model.get_submodule(name).weight.detach()
        assert weight.unique().numel() <= len(sharing.components.means)
    assert not model.training


def test_compress_without_data_fits_the_prior_and_writes_at_most_17_values_per_layer(run, tmp_path):
    result = run("compress", "soft_weight_sharing-lenet300_100", "--out", str(tmp_path), "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["bytes_after"] < report["bytes_before"] / 4
    state, _ = read_container(tmp_path / "model.safetensors")
    for name in ("fc1", "fc2", "fc3"):
        values = state[f"{name}.weight"].unique()
        assert values.numel() <= 17 and 0.0 in values.tolist()


# -- the static checks and the plugin ------------------------------------------------------------------


def test_table_1_is_listed_and_needs_weights_and_data():
    checks = papers.check("soft_weight_sharing")
    assert len(checks) == 9 and {c.status for c in checks} == {"not_measurable"}
    reported = {(c.variant.split("-")[1], c.metric, c.scope): c.reported for c in checks}
    assert reported[("lenet300_100", "compression_ratio", "model")] == 64
    assert reported[("lenet5_caffe", "compression_ratio", "model")] == 162
    assert reported[("lenet5_caffe", "error", "model")] == 0.97


def test_the_entry_module_imports_neither_torch_nor_pydantic():
    code = (
        "import sys, papers_plugins.compression.soft_weight_sharing\n"
        "assert 'torch' not in sys.modules and 'pydantic' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def copied_spec(tmp_path: Path, change) -> Path:
    """The spec as another paper (``sharing``), its LeNet-300-100 variant only, changed by ``change``."""
    spec = yaml.safe_load(SPEC.read_text())
    spec["id"] = "sharing"
    spec["variants"] = [
        dict(v, id="sharing-lenet300_100") for v in spec["variants"] if v["base"] == "lenet300_100"
    ]
    spec["results"] = []
    change(spec)
    path = tmp_path / "sharing.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.mark.parametrize(
    ("settings", "field", "message"),
    [
        ({"components": 1}, "settings.components", "greater than or equal to 2"),
        ({"components": 257}, "settings.components", "less than or equal to 256"),
        ({"pi_zero": 1.0}, "settings.pi_zero", "less than 1"),
        ({"tau": 0.0}, "settings.tau", "greater than 0"),
        ({"prior_lr": -1.0e-3}, "settings.prior_lr", "greater than 0"),
        ({"merge_kl": -0.1}, "settings.merge_kl", "greater than or equal to 0"),
        ({"tau": "0.005"}, "settings.tau", "valid number"),
        ({"bits": 4}, "settings.bits", "has no setting 'bits'"),
        (
            {"layers": ["fc9"]},
            "variants[0]",
            "settings.layers names 'fc9', which is no convolution or linear",
        ),
        ({"layers": ["fc1", "fc1"]}, "variants[0]", "names 'fc1' twice"),
    ],
)
def test_bad_settings_are_one_line_and_exit_2(settings, field, message, tmp_path, monkeypatch, run):
    def change(spec):
        spec["variants"][0]["methods"][0]["settings"] = settings

    path = copied_spec(tmp_path, change)
    monkeypatch.setattr(Registry, "discover", classmethod(lambda cls: registry_with(path)))
    monkeypatch.setattr(papers.registry, "_current", None)
    monkeypatch.chdir(tmp_path)
    result = run("compress", "sharing-lenet300_100", "--out", "out")
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("papers: error: ")
    assert str(path) in result.stderr and field in result.stderr and message in result.stderr
    assert not (tmp_path / "out").exists()


# -- the proxy on MNIST digits ---------------------------------------------------------------------------


def test_the_proxy_trains_retrains_with_the_prior_and_quantizes():
    measured = sharing_proxy("soft_weight_sharing-lenet300_100", epochs=1, retrain_epochs=1, limit=200)
    assert 0 <= measured["before"] <= 100 and 0 <= measured["after"] <= 100
    assert set(measured["kept"]) == {"fc1", "fc2", "fc3"}
    assert 0 <= measured["kept_percent"] <= 100 and 1 <= measured["components"] <= 17
    assert measured["bytes_after"] < measured["bytes_before"]
    assert measured["compression_ratio"] == pytest.approx(
        measured["bytes_before"] / measured["bytes_after"], rel=1e-3
    )
