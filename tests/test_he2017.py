"""He et al. 2017 (``channel_prune``): LASSO picks the channels that reconstruct the next layer,
least squares refits it, the pruned network computes what its removal leaves, a residual branch
compensates the shortcut's error, the speed-up is the ratio of multiply-adds of the narrowed graph,
bad settings are refused in one line, and a smoke of the proxy."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

import papers
import papers.registry
from papers.api import build_model, expand_variant
from papers.compression import compress, load_compressed
from papers.errors import SpecError
from papers.measure import measure_graph
from papers.methods import static_measurements
from papers.registry import Registry, get_registry
from papers_plugins.compression import channel_pruning
from papers_plugins.compression.channel_pruning import (
    ChannelPruneSettings,
    Samples,
    channel_prune,
    lasso_select,
    planned_widths,
    reconstruct,
)
from papers_plugins.compression.channels import remove_channels
from tests.conftest import REPO
from tests.test_han2015 import registry_with

SPEC = REPO / "specs" / "compression" / "he2017.yaml"

pytestmark = pytest.mark.usefixtures("one_thread")


# -- selection and reconstruction -------------------------------------------------------------------


def synthetic(channels: int = 6, used: tuple[int, ...] = (1, 4)) -> tuple[Samples, torch.Tensor]:
    """A response made by ``used`` channels alone (through ``weight``), with the others present."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(300, channels, 9, generator=generator, dtype=torch.float64)
    weight = torch.randn(5, channels, 9, generator=generator, dtype=torch.float64)
    y = torch.einsum("pck,nck->pn", x[:, list(used)], weight[:, list(used)])
    return Samples(x, y), weight


def test_lasso_keeps_the_channels_the_response_is_made_of():
    samples, weight = synthetic()
    assert lasso_select(samples, weight, 2, steps=10) == [1, 4]


def test_keeping_every_channel_selects_them_all():
    samples, weight = synthetic()
    assert lasso_select(samples, weight, 6) == list(range(6))


def test_least_squares_recovers_the_next_layers_weights_on_the_kept_channels():
    samples, weight = synthetic()
    refit = reconstruct(samples, [1, 4])
    assert torch.allclose(refit, weight[:, [1, 4]], atol=1e-8)


# -- the layer loop on LeNet-5 -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lenet():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_model("lenet5_caffe").eval()
    images = torch.rand(60, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    return model, expand_variant("lenet5_caffe"), images


def test_removing_the_pruned_channels_computes_what_the_pruned_network_does(lenet):
    model, flat, images = lenet
    settings = ChannelPruneSettings(kept={"conv1": 0.5, "conv2": 0.4, "fc1": 0.5}, points=4, lasso_steps=8)
    work, kept = channel_prune(model, flat, planned_widths(flat, settings), images, settings)
    assert {name: len(k) for name, k in kept.items()} == {"conv1": 10, "conv2": 20, "fc1": 250}
    narrowed, _ = remove_channels(work, flat, kept)
    with torch.no_grad():
        assert torch.allclose(narrowed(images), work(images), rtol=1e-5, atol=1e-5)
    assert narrowed.fc1.in_features == 16 * 20 and narrowed.fc2.in_features == 250


def test_the_refit_reconstructs_the_next_layer_better_than_dropping_the_channels(lenet):
    model, flat, images = lenet
    settings = ChannelPruneSettings(kept={"conv1": 0.3}, points=10, lasso_steps=8)
    work, kept = channel_prune(model, flat, planned_widths(flat, settings), images, settings)
    dropped = build_model("lenet5_caffe").eval()
    dropped.load_state_dict(model.state_dict())
    with torch.no_grad():
        removed = [c for c in range(20) if c not in kept["conv1"]]
        dropped.conv2.weight[:, removed] = 0.0

    def conv2_error(candidate):
        outputs = []
        for net in (model, candidate):
            seen = []
            handle = net.conv2.register_forward_hook(lambda m, a, o, seen=seen: seen.append(o))
            with torch.no_grad():
                net(images)
            handle.remove()
            outputs.append(seen[0])
        return float((outputs[0] - outputs[1]).norm())

    assert conv2_error(work) < 0.9 * conv2_error(dropped)


def test_a_residual_branch_compensates_the_error_earlier_blocks_left_in_the_shortcut(monkeypatch):
    flat = expand_variant("resnet20")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_model("resnet20").eval()
    images = torch.randn(24, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    settings = ChannelPruneSettings(
        kept={"layer1.0.conv1": 0.25, "layer1.1.conv1": 0.5}, points=20, lasso_steps=6
    )
    widths = planned_widths(flat, settings)

    def block_error(work):
        outputs = []
        for net in (model, work):
            seen = []
            handle = net.get_submodule("layer1.1.relu").register_forward_hook(
                lambda m, a, o, seen=seen: seen.append(o)
            )
            with torch.no_grad():
                net(images)
            handle.remove()
            outputs.append(seen[0])
        return float((outputs[0] - outputs[1]).norm())

    compensated, _ = channel_prune(model, flat, widths, images, settings)
    monkeypatch.setattr(channel_pruning, "_shortcut_error", lambda *args: 0)
    plain, _ = channel_prune(model, flat, widths, images, settings)
    assert block_error(compensated) < block_error(plain)


# -- the static speed-up ---------------------------------------------------------------------------------


def test_the_speed_up_is_the_ratio_of_multiply_adds_of_base_and_narrowed_graphs():
    catalogue = get_registry().catalogue
    base = measure_graph("vgg16", expand_variant("vgg16"), catalogue)
    pruned = measure_graph("he2017-vgg16-4x", expand_variant("he2017-vgg16-4x"), catalogue)
    measured = static_measurements("he2017-vgg16-4x")["speedup"]
    assert measured.value == pytest.approx(base.macs / pruned.macs, rel=1e-9)
    assert measured.low <= measured.value <= measured.high
    assert 3.9 < measured.value < 4.1
    assert pruned.node_shapes["features.0"][1] == round(0.431 * 64)
    assert pruned.node_shapes["features.24"][1] == 512, "conv5_x keeps its channels"


def test_resnet50_prunes_inside_the_branches_and_keeps_the_additions_widths():
    flat = expand_variant("he2017-resnet50-2x")
    node = {n.name: n for n in flat.nodes}
    assert node["layer1.0.conv1"].args["out_channels"] == round(0.564 * 64)
    assert node["layer1.0.conv3"].args["out_channels"] == 256
    assert "downsample" not in str(
        planned_widths(expand_variant("resnet50"), ChannelPruneSettings(kept={"layer*.*.conv1": 0.5}))
    )


# -- bad settings -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base", "kept", "field", "message"),
    [
        ("resnet50", {"layer1.0.conv3": 0.5}, "settings.kept.layer1.0.conv3", "residual addition"),
        ("resnet50", {"conv1": 0.5}, "settings.kept.conv1", "read by 2 layers"),
        ("resnet50", {"layer9.*": 0.5}, "settings.kept.layer9.*", "no layer 'layer9.*'"),
        ("lenet5_caffe", {"fc2": 0.5}, "settings.kept.fc2", "graph output"),
    ],
)
def test_plans_it_cannot_carry_out_are_refused_naming_the_layer(base, kept, field, message):
    with pytest.raises(SpecError) as refused:
        planned_widths(expand_variant(base), ChannelPruneSettings(kept=kept))
    assert refused.value.field == field and message in refused.value.message


def copied_spec(tmp_path: Path, settings: dict) -> Path:
    spec = yaml.safe_load(SPEC.read_text())
    spec["id"] = "cp_copy"
    spec["variants"] = [v for v in spec["variants"] if v["id"] == "he2017-lenet5_caffe"]
    spec["variants"][0]["id"] = "cp_copy-lenet5_caffe"
    spec["variants"][0]["methods"][0]["settings"] = settings
    spec.pop("results")
    path = tmp_path / "cp_copy.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.mark.parametrize(
    ("settings", "field", "message"),
    [
        ({"kept": {"conv1": 0.0}}, "settings.kept.conv1", "greater than 0"),
        ({"kept": {"conv7": 0.5}}, "settings.kept.conv7", "no layer 'conv7'"),
        ({"kept": {"fc2": 0.5}}, "settings.kept.fc2", "graph output"),
    ],
)
def test_bad_settings_are_one_line_and_exit_2(settings, field, message, tmp_path, monkeypatch, run):
    path = copied_spec(tmp_path, settings)
    monkeypatch.setattr(Registry, "discover", classmethod(lambda cls: registry_with(path)))
    monkeypatch.setattr(papers.registry, "_current", None)
    monkeypatch.chdir(tmp_path)
    result = run("compress", "cp_copy-lenet5_caffe", "--out", "out", "--data", "builtin:digits")
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("papers: error: ")
    assert str(path) in result.stderr and field in result.stderr and message in result.stderr
    assert not (tmp_path / "out").exists()


def test_compress_with_data_writes_the_narrower_model_and_it_loads_back(tmp_path, monkeypatch):
    light = {"kept": {"conv1": 0.5, "conv2": 0.5}, "images": 40, "points": 3, "lasso_steps": 5}
    monkeypatch.setattr(papers.registry, "_current", registry_with(copied_spec(tmp_path, light)))
    out = tmp_path / "out"
    report = compress("cp_copy-lenet5_caffe", out=out, data="builtin:digits", latency_runs=2)
    assert report["params_after"] < report["params_before"] and report["macs_after"] < report["macs_before"]
    loaded = load_compressed(out / "model.safetensors")
    assert (loaded.conv1.out_channels, loaded.conv2.out_channels, loaded.fc1.in_features) == (10, 25, 400)


def test_compress_without_data_is_refused_in_one_line(run, tmp_path):
    result = run("compress", "he2017-lenet5_caffe", "--out", str(tmp_path / "out"))
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "give --data" in result.stderr


# -- the proxy on MNIST digits -----------------------------------------------------------------------


def test_the_proxy_prunes_reconstructs_removes_and_reports():
    overrides = {"images": 40, "points": 3, "lasso_steps": 5, "finetune_epochs": 1}
    measured = channel_pruning.channel_pruning_proxy(
        data="builtin:digits", epochs=1, overrides=overrides, limit=200
    )
    assert all(0 <= measured[key] <= 100 for key in ("before", "reconstructed", "after"))
    assert measured["widths"] == {"conv1": (20, 10), "conv2": (50, 25), "fc1": (500, 250)}
    assert measured["macs"][1] < measured["macs"][0]
