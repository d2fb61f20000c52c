"""Molchanov et al. 2017 (``taylor_prune``): the Taylor criterion on activations, its layer-wise ℓ2
normalisation and FLOPs regulariser, the global ranking that never empties a layer, gated pruning that
the real removal reproduces exactly, bad settings refused in one line, and a smoke of the proxy."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

import papers
import papers.registry
from papers.api import build_model, expand_variant
from papers.compression import compress, load_compressed
from papers.errors import SpecError
from papers.registry import Registry
from papers_plugins.compression import taylor
from papers_plugins.compression.channels import remove_channels
from papers_plugins.compression.gates import ChannelGates, gate_points
from papers_plugins.compression.pruning import shuffled_batches
from papers_plugins.compression.taylor import TaylorSettings, ranked, taylor_prune, taylor_scores
from tests.conftest import REPO
from tests.test_han2015 import registry_with

SPEC = REPO / "specs" / "compression" / "molchanov2017.yaml"

pytestmark = pytest.mark.usefixtures("one_thread")


def small_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 3)
    ).eval()


def digits(count: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(count, 1, 8, 8, generator=generator)
    return images, torch.randint(0, 3, (count,), generator=generator)


# -- the criterion ----------------------------------------------------------------------------------


def test_the_criterion_is_per_example_abs_mean_of_activation_times_its_gradient():
    model = small_net()
    images, labels = digits(8)
    with ChannelGates(model, {"0": "1"}, {"0": 4}) as gates:
        scores = taylor_scores(model, gates, iter([(images, labels)]), 1, "cpu")["0"]
    # the same by hand: the ReLU's output, each example's own loss
    expected = torch.zeros(4)
    for image, label in zip(images, labels, strict=True):
        z = model[1](model[0](image[None])).detach().requires_grad_(True)
        loss = nn.functional.cross_entropy(model[4](model[3](model[2](z))), label[None])
        (grad,) = torch.autograd.grad(loss, z)
        expected += (z * grad).mean(dim=(2, 3)).abs()[0].detach() / len(labels)
    assert torch.allclose(scores, expected, rtol=1e-5, atol=1e-9)


def test_a_dead_feature_map_scores_zero_and_is_pruned_first():
    model = small_net()
    with torch.no_grad():
        model[0].weight[2] = 0.0
        model[0].bias[2] = -1.0  # ReLU(-1) = 0 everywhere: the map carries nothing
    images, labels = digits()
    settings = TaylorSettings(rate=0.25, criterion_batches=1, finetune_updates=0)
    run = taylor_prune(model, {"0": "1"}, {"0": 4}, settings, shuffled_batches(images, labels, 32))
    assert run.pruned == [("0", 2)] and run.kept == {"0": [0, 1, 3]}


def gates_for(widths: dict[str, int]) -> ChannelGates:
    model = nn.ModuleDict({name: nn.Linear(1, width) for name, width in widths.items()})
    return ChannelGates(model, {name: name for name in widths}, widths)


def test_normalisation_puts_layers_of_different_scales_on_one_ranking():
    gates = gates_for({"small": 3, "large": 3})
    scores = {"small": torch.tensor([1.0, 2.0, 3.0]), "large": torch.tensor([1000.0, 2000.0, 3000.0])}
    raw = [(layer, channel) for _, layer, channel in ranked(scores, gates, normalize=False)]
    assert raw[:3] == [("small", 0), ("small", 1), ("small", 2)], "unnormalised, the small scale goes first"
    normalised = ranked(scores, gates, normalize=True)
    assert [layer for _, layer, _ in normalised[:2]] in (["small", "large"], ["large", "small"])
    assert normalised[0][0] == pytest.approx(1 / 14**0.5)


def test_the_flops_regulariser_ranks_the_costlier_layers_maps_first():
    gates = gates_for({"cheap": 2, "costly": 2})
    scores = {"cheap": torch.tensor([1.0, 1.0]), "costly": torch.tensor([1.0, 1.0])}
    order = ranked(scores, gates, normalize=True, flops_lambda=0.1, flops={"cheap": 0.1, "costly": 2.0})
    assert [layer for _, layer, _ in order] == ["costly", "costly", "cheap", "cheap"]
    assert order[0][0] == pytest.approx(2**-0.5 - 0.2)


def test_pruned_maps_are_skipped_by_the_ranking():
    gates = gates_for({"a": 3})
    gates.masks["a"][1] = 0.0
    order = ranked({"a": torch.tensor([5.0, 0.0, 1.0])}, gates, normalize=False)
    assert [channel for _, _, channel in order] == [2, 0]


# -- the pruning loop ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lenet_run():
    """LeNet-5 (Caffe's), briefly trained, pruned at 60% one map per step under gates."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_model("lenet5_caffe").eval()
        flat = expand_variant("lenet5_caffe")
        generator = torch.Generator().manual_seed(0)
        images = torch.rand(128, 1, 28, 28, generator=generator)
        labels = torch.randint(0, 10, (128,), generator=generator)
        widths = {"conv1": 20, "conv2": 50}
        points = gate_points(model, flat, widths)
        settings = TaylorSettings(rate=0.6, per_step=3, criterion_batches=1, finetune_updates=1)
        run = taylor_prune(model, points, widths, settings, shuffled_batches(images, labels, 32))
    return model, flat, points, run, images


def test_feature_maps_are_gated_after_their_pooling(lenet_run):
    _, _, points, _, _ = lenet_run
    assert points == {"conv1": "pool1", "conv2": "pool2"}


def test_the_rate_removes_that_share_of_maps_globally_and_leaves_every_layer_one(lenet_run):
    _, _, _, run, _ = lenet_run
    assert len(run.pruned) == round(0.6 * 70) == 42
    assert len(set(run.pruned)) == 42
    assert sum(len(kept) for kept in run.kept.values()) == 70 - 42
    assert all(len(kept) >= 1 for kept in run.kept.values())
    assert {layer for layer, _ in run.pruned} <= {"conv1", "conv2"}


def test_removing_the_pruned_maps_computes_what_the_gated_model_did(lenet_run):
    model, flat, points, run, images = lenet_run
    with ChannelGates(model, points, {"conv1": 20, "conv2": 50}) as gates:
        for name, kept in run.kept.items():
            gates.masks[name].zero_()
            gates.masks[name][kept] = 1.0
        with torch.no_grad():
            gated = model(images)
    narrowed, _ = remove_channels(model, flat, run.kept)
    assert narrowed.conv1.out_channels == len(run.kept["conv1"])
    assert narrowed.conv2.out_channels == len(run.kept["conv2"])
    assert narrowed.fc1.in_features == 16 * len(run.kept["conv2"])
    with torch.no_grad():
        assert torch.allclose(narrowed(images), gated, rtol=1e-5, atol=1e-5)
    assert sum(p.numel() for p in narrowed.parameters()) < sum(p.numel() for p in model.parameters())


# -- bad settings -----------------------------------------------------------------------------------------


def test_a_rate_that_would_empty_a_layer_is_refused_naming_it():
    flat = expand_variant("lenet5_caffe")
    with pytest.raises(SpecError) as refused:
        taylor.check_settings(flat, TaylorSettings(rate=0.99))
    assert refused.value.field == "settings.rate"
    assert "removes 69 of the 70 feature maps of conv1, conv2; at most 68" in refused.value.message


def test_a_layer_feeding_a_residual_addition_is_refused_naming_it():
    flat = expand_variant("resnet20")
    with pytest.raises(SpecError) as refused:
        taylor.check_settings(flat, TaylorSettings(rate=0.5, layers=["layer1.0.conv1", "layer1.0.conv2"]))
    assert refused.value.field == "settings.layers[1]"
    assert "'layer1.0.conv2'" in refused.value.message and "residual addition" in refused.value.message


def test_by_default_only_removable_convolutions_compete():
    widths = taylor.pruned_layers(expand_variant("resnet20"), [], field="settings.layers")
    assert "layer1.0.conv1" in widths and "layer1.0.conv2" not in widths and "conv1" not in widths


def copied_spec(tmp_path: Path, settings: dict) -> Path:
    spec = yaml.safe_load(SPEC.read_text())
    spec["id"] = "taylor_copy"
    spec["variants"][0]["id"] = "taylor_copy-lenet5_caffe"
    spec["variants"][0]["methods"][0]["settings"] = settings
    path = tmp_path / "taylor_copy.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.mark.parametrize(
    ("settings", "field", "message"),
    [
        ({"rate": 0.99}, "settings.rate", "removes 69 of the 70 feature maps"),
        ({"rate": 1.0}, "settings.rate", "less than 1"),
        ({"rate": 0.5, "layers": ["conv3"]}, "settings.layers[0]", "no layer 'conv3'"),
        ({"rate": 0.5, "layers": ["fc2"]}, "settings.layers[0]", "graph output"),
    ],
)
def test_bad_settings_are_one_line_and_exit_2(settings, field, message, tmp_path, monkeypatch, run):
    path = copied_spec(tmp_path, settings)
    monkeypatch.setattr(Registry, "discover", classmethod(lambda cls: registry_with(path)))
    monkeypatch.setattr(papers.registry, "_current", None)
    monkeypatch.chdir(tmp_path)
    result = run("compress", "taylor_copy-lenet5_caffe", "--out", "out", "--data", "builtin:mnist5k")
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("papers: error: ")
    assert str(path) in result.stderr and field in result.stderr and message in result.stderr
    assert not (tmp_path / "out").exists()


def test_compress_with_data_writes_the_narrower_model_and_it_loads_back(tmp_path, monkeypatch):
    light = {"rate": 0.5, "per_step": 12, "criterion_batches": 1, "finetune_updates": 1, "batch_size": 256}
    monkeypatch.setattr(papers.registry, "_current", registry_with(copied_spec(tmp_path, light)))
    out = tmp_path / "out"
    report = compress("taylor_copy-lenet5_caffe", out=out, data="builtin:digits", latency_runs=2)
    assert report["params_after"] < report["params_before"] and report["macs_after"] < report["macs_before"]
    loaded = load_compressed(out / "model.safetensors")
    assert loaded.conv1.out_channels + loaded.conv2.out_channels == 35
    assert loaded.fc1.in_features == 16 * loaded.conv2.out_channels


def test_compress_without_data_is_refused_in_one_line(run, tmp_path):
    result = run("compress", "molchanov2017-lenet5_caffe", "--out", str(tmp_path / "out"))
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "give --data" in result.stderr
    assert not (tmp_path / "out").exists()


# -- the proxy on MNIST digits -----------------------------------------------------------------------


def test_the_proxy_prunes_removes_and_reports_the_narrower_model():
    overrides = {"per_step": 7, "criterion_batches": 1, "finetune_updates": 1, "final_epochs": 0}
    measured = taylor.taylor_proxy(epochs=1, overrides=overrides, limit=200)
    assert 0 <= measured["before"] <= 100 and 0 <= measured["after"] <= 100
    assert sum(now for _, now in measured["widths"].values()) == 35
    before, after = measured["macs"]
    assert after < before
