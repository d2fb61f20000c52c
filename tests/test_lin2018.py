"""Lin et al. 2018 (GDP, ``dynamic_prune``): one global mask keeping the most salient filters of all
layers (at least one each), masked filters that keep learning through a straight-through gate and can
come back, removal that computes what the masked network did, bad settings refused in one line, and a
smoke of the proxy."""

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
from papers_plugins.compression import dynamic_pruning
from papers_plugins.compression.channels import remove_channels
from papers_plugins.compression.dynamic_pruning import DynamicSettings, dynamic_prune, global_mask
from papers_plugins.compression.gates import ChannelGates, gate_points
from papers_plugins.compression.pruning import shuffled_batches
from tests.conftest import REPO
from tests.test_han2015 import registry_with

SPEC = REPO / "specs" / "compression" / "lin2018.yaml"

pytestmark = pytest.mark.usefixtures("one_thread")


# -- the global mask ----------------------------------------------------------------------------------


def test_the_mask_keeps_the_highest_scores_across_layers():
    scores = {"a": torch.tensor([5.0, 1.0, 4.0]), "b": torch.tensor([3.0, 0.5, 6.0, 2.0])}
    masks = global_mask(scores, 4)
    assert masks["a"].tolist() == [1, 0, 1] and masks["b"].tolist() == [1, 0, 1, 0], "6, 5, 4 and 3"


def test_a_layer_whose_scores_all_rank_low_keeps_its_best_filter():
    scores = {"loud": torch.tensor([100.0, 90.0, 80.0]), "quiet": torch.tensor([0.1, 0.3])}
    masks = global_mask(scores, 2)
    assert masks["loud"].tolist() == [1, 0, 0] and masks["quiet"].tolist() == [0, 1]


# -- the straight-through gate ---------------------------------------------------------------------------


def test_a_masked_filter_computes_nothing_but_still_receives_its_gradient():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 6 * 6, 2))
    images = torch.randn(4, 1, 8, 8)
    with ChannelGates(model, {"0": "1"}, {"0": 3}, straight_through=True) as gates:
        gates.masks["0"][1] = 0.0
        out = model(images)
        out.sum().backward()
    expected = model[3](
        torch.flatten(torch.relu(model[0](images)) * torch.tensor([1.0, 0.0, 1.0])[:, None, None], 1)
    )
    assert torch.allclose(out, expected, atol=1e-6), "the forward pass is the masked network's"
    assert model[0].weight.grad[1].abs().sum() > 0, "the masked filter still learns"
    with ChannelGates(model, {"0": "1"}, {"0": 3}) as plain:
        plain.masks["0"][1] = 0.0
        model.zero_grad()
        model(images).sum().backward()
    assert model[0].weight.grad[1].abs().sum() == 0, "without straight-through it would not"


# -- the dynamic pruning ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lenet_run():
    """LeNet-5 (Caffe's) under GDP on random digits: 40% of its filters kept, the mask revised often."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_model("lenet5_caffe").eval()
        flat = expand_variant("lenet5_caffe")
        generator = torch.Generator().manual_seed(0)
        images = torch.rand(192, 1, 28, 28, generator=generator)
        labels = torch.randint(0, 10, (192,), generator=generator)
        widths = {"conv1": 20, "conv2": 50}
        points = gate_points(model, flat, widths)
        settings = DynamicSettings(kept=0.4, mask_interval=1, epochs=1, retrain_lr=0.05, batch_size=32)
        run = dynamic_prune(model, points, widths, settings, shuffled_batches(images, labels, 32))
    return model, flat, points, run, images


def test_the_final_mask_keeps_that_share_and_every_layer_keeps_one(lenet_run):
    _, _, _, run, _ = lenet_run
    assert sum(len(kept) for kept in run.kept.values()) == 28
    assert all(kept for kept in run.kept.values())
    assert run.pruned[0] == 70 - 28, "the first mask prunes from the full network"
    assert len(run.pruned) == 1 + 6, "then one update per minibatch (6 in the pass)"


def test_pruned_filters_come_back_when_their_saliency_rises(lenet_run):
    _, _, _, run, _ = lenet_run
    assert sum(run.restored[1:]) > 0
    assert run.restored[1:] == run.pruned[1:], "the mask keeps its size: each filter back displaces one"


def test_removing_the_masked_filters_computes_what_the_masked_network_did(lenet_run):
    model, flat, points, run, images = lenet_run
    with ChannelGates(model, points, {"conv1": 20, "conv2": 50}) as gates:
        for name, kept in run.kept.items():
            gates.masks[name].zero_()
            gates.masks[name][kept] = 1.0
        with torch.no_grad():
            masked = model(images)
    narrowed, _ = remove_channels(model, flat, run.kept)
    with torch.no_grad():
        assert torch.allclose(narrowed(images), masked, rtol=1e-5, atol=1e-5)


# -- bad settings -----------------------------------------------------------------------------------------


def test_a_share_that_would_empty_a_layer_is_refused():
    with pytest.raises(SpecError) as refused:
        dynamic_pruning.check_settings(expand_variant("lenet5_caffe"), DynamicSettings(kept=0.01))
    assert refused.value.field == "settings.kept"
    assert "keeps 1 of the 70 filters of conv1, conv2, fewer than one per layer" in refused.value.message


def copied_spec(tmp_path: Path, settings: dict) -> Path:
    spec = yaml.safe_load(SPEC.read_text())
    spec["id"] = "gdp_copy"
    spec["variants"][0]["id"] = "gdp_copy-lenet5_caffe"
    spec["variants"][0]["methods"][0]["settings"] = settings
    path = tmp_path / "gdp_copy.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.mark.parametrize(
    ("settings", "field", "message"),
    [
        ({"kept": 0.01}, "settings.kept", "fewer than one per layer"),
        ({"kept": 0.5, "layers": ["conv9"]}, "settings.layers[0]", "no layer 'conv9'"),
        ({"kept": 0.5, "saliency": "l2"}, "settings.saliency", "'taylor' or 'l1'"),
    ],
)
def test_bad_settings_are_one_line_and_exit_2(settings, field, message, tmp_path, monkeypatch, run):
    path = copied_spec(tmp_path, settings)
    monkeypatch.setattr(Registry, "discover", classmethod(lambda cls: registry_with(path)))
    monkeypatch.setattr(papers.registry, "_current", None)
    monkeypatch.chdir(tmp_path)
    result = run("compress", "gdp_copy-lenet5_caffe", "--out", "out", "--data", "builtin:digits")
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("papers: error: ")
    assert str(path) in result.stderr and field in result.stderr and message in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_layer_feeding_a_residual_addition_is_refused():
    flat = expand_variant("resnet20")
    with pytest.raises(SpecError, match=r"'layer2\.0\.conv2': its channels cannot be removed: .*residual"):
        dynamic_pruning.check_settings(flat, DynamicSettings(kept=0.5, layers=["layer2.0.conv2"]))


def test_compress_with_data_writes_the_narrower_model_and_it_loads_back(tmp_path, monkeypatch):
    light = {"kept": 0.5, "mask_interval": 5, "epochs": 1, "final_epochs": 1, "batch_size": 128}
    monkeypatch.setattr(papers.registry, "_current", registry_with(copied_spec(tmp_path, light)))
    out = tmp_path / "out"
    report = compress("gdp_copy-lenet5_caffe", out=out, data="builtin:digits", latency_runs=2)
    assert report["params_after"] < report["params_before"] and report["macs_after"] < report["macs_before"]
    loaded = load_compressed(out / "model.safetensors")
    assert loaded.conv1.out_channels + loaded.conv2.out_channels == 35


def test_compress_without_data_is_refused_in_one_line(run, tmp_path):
    result = run("compress", "lin2018-lenet5_caffe", "--out", str(tmp_path / "out"))
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "give --data" in result.stderr


# -- the proxy on MNIST digits -----------------------------------------------------------------------


def test_the_proxy_prunes_removes_retrains_and_reports():
    overrides = {"mask_interval": 2, "epochs": 1, "final_epochs": 1}
    measured = dynamic_pruning.dynamic_proxy(epochs=1, overrides=overrides, limit=200)
    assert 0 <= measured["before"] <= 100 and 0 <= measured["after"] <= 100
    assert sum(now for _, now in measured["widths"].values()) == 35
    assert measured["macs"][1] < measured["macs"][0]
