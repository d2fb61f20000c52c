"""Li et al. 2017 (``li2017``): filters ranked by ℓ1 norm and removed for real; the paper's per-layer
and per-stage choices as settings; Table 1's counts and reductions from the settings alone; ``papers
compress`` writes a smaller dense model that loads and exports; a bad plan is one line, exit 2,
nothing written; a smoke of the MNIST proxy."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file

import papers
import papers.registry
from papers.build import build
from papers.compression import compress, load_compressed
from papers.methods import MethodContext, variant_steps
from papers.registry import Registry, get_registry
from papers_plugins.compression.channels import channel_layers
from papers_plugins.compression.l1_filters import (
    L1_FILTER_PRUNE,
    L1FilterSettings,
    kept_filters,
    l1_scores,
    plan,
    proxy,
    pruned_count,
)
from tests.conftest import REPO
from tests.test_han2015 import registry_with

SPEC = REPO / "specs" / "compression" / "li2017.yaml"

pytestmark = pytest.mark.usefixtures("one_thread")


def seeded(variant: str) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return papers.build_model(variant).eval()


# -- the plan: the paper's choices as settings ----------------------------------------------------


def test_a_layer_loses_its_rate_of_filters_rounded_up():
    assert pruned_count(0.1, 16) == 2 and pruned_count(0.1, 64) == 7  # ResNet-56-pruned-A's
    assert pruned_count(0.3, 10) == 3 and pruned_count(0.5, 512) == 256 and pruned_count(0.0, 64) == 0


def test_stage_rates_prune_each_blocks_first_conv_and_skip_the_sensitive_layers():
    (step,) = variant_steps("li2017-resnet56-b")
    widths = plan(papers.expand_variant("resnet56"), step.settings)
    assert "layer1.7.conv1" not in widths and "layer2.0.conv1" not in widths
    assert widths["layer1.0.conv1"] == 16 - 10 and widths["layer2.1.conv1"] == 32 - 10
    assert widths["layer3.1.conv1"] == 64 - 7
    assert not any(name.endswith("conv2") for name in widths), "the second conv feeds the addition"
    assert len(widths) == 27 - 6


def test_the_pruned_vgg_has_half_the_filters_of_conv_1_and_8_to_13():
    graph = papers.expand_variant("li2017-vgg16_cifar-a")
    widths = {name: layer.width for name, layer in channel_layers(graph).items()}
    assert widths["features.0"] == 32 and widths["features.3"] == 64
    assert [widths[f"features.{i}"] for i in (24, 27, 30, 34, 37, 40)] == [256] * 6
    assert papers.measure("li2017-vgg16_cifar-a").params < papers.measure("vgg16_cifar").params / 2


# -- the ranking -----------------------------------------------------------------------------------


def test_the_kept_filters_are_those_of_the_largest_absolute_weight_sums_and_are_copied():
    flat = papers.expand_variant("resnet20")
    model = seeded("resnet20")
    settings = L1FilterSettings(rates={"layer1.0.conv1": 0.5})
    rewritten = L1_FILTER_PRUNE.rewrite(flat, settings)
    narrowed = build(rewritten, get_registry().catalogue).eval()
    L1_FILTER_PRUNE.apply(narrowed, settings, MethodContext(rewritten, before=model, flat_before=flat))
    weight = model.get_submodule("layer1.0.conv1").weight.detach()
    sums = weight.abs().sum((1, 2, 3))
    kept = sorted(sums.topk(8).indices.tolist())
    assert torch.equal(narrowed.get_submodule("layer1.0.conv1").weight, weight[kept])
    assert torch.equal(
        narrowed.get_submodule("layer1.0.conv2").weight,
        model.get_submodule("layer1.0.conv2").weight.detach()[:, kept],
    )
    assert sums[kept].min() >= sums[[i for i in range(16) if i not in kept]].max()


def test_greedy_ranking_leaves_out_the_kernels_of_feature_maps_already_removed():
    flat = papers.expand_variant("vgg11_bn", widths=[8, 8, 8, 8, 8], image_size=32, num_classes=10)
    model = seeded_options("vgg11_bn", widths=[8, 8, 8, 8, 8], image_size=32, num_classes=10)
    widths = {"features.0": 4, "features.4": 4}
    first = kept_filters(model, flat, widths, greedy=False)["features.0"]
    gone = [c for c in range(8) if c not in first]
    weight = model.get_submodule("features.4").weight.detach().abs()
    independent = l1_scores(model, flat, widths, greedy=False)["features.4"]
    greedy = l1_scores(model, flat, widths, greedy=True)["features.4"]
    assert torch.allclose(independent, weight.sum((1, 2, 3)))
    assert torch.allclose(greedy, weight[:, first].sum((1, 2, 3)))
    assert not torch.allclose(greedy, independent) and gone


def seeded_options(variant: str, **options) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return papers.build_model(variant, **options).eval()


# -- Table 1 from the settings ------------------------------------------------------------------------


def test_table_1s_counts_and_reductions_pass_from_the_settings_alone():
    checks = papers.check("li2017")
    static = [c for c in checks if c.status != "not_measurable"]
    assert {c.status for c in static} == {"pass"}, [c for c in static if c.status != "pass"]
    passed = {(c.variant, c.metric) for c in static}
    assert ("li2017-vgg16_cifar-a", "flops_reduction") in passed
    assert ("li2017-vgg16_cifar-a", "params_reduction") in passed
    assert ("li2017-resnet56-a", "flops_reduction") in passed and len(passed) == 16
    cut = next(c for c in static if c.variant == "li2017-resnet110-b" and c.metric == "flops_reduction")
    assert cut.measured == pytest.approx(38.66, abs=0.01)  # printed 38.6: within a whole last digit
    vgg = next(c for c in static if c.variant == "li2017-vgg16_cifar-a" and c.metric == "flops_reduction")
    assert vgg.measured == pytest.approx(34.19, abs=0.01)


# -- papers compress: a smaller dense model that loads and exports --------------------------------


def test_compress_writes_a_narrower_resnet_that_loads_and_exports(tmp_path):
    report = compress("li2017-resnet56-a", out=tmp_path / "out", latency_runs=2)
    assert report["params_after"] < report["params_before"] and report["macs_after"] < report["macs_before"]
    assert report["macs_after"] == papers.measure("li2017-resnet56-a").macs
    assert report["latency_ms_after"] > 0 and report["latency_threads"] >= 1
    loaded = load_compressed(tmp_path / "out" / "model.safetensors").eval()
    assert loaded.get_submodule("layer1.0.conv1").out_channels == 14
    base = seeded("resnet56")
    (step,) = variant_steps("li2017-resnet56-a")
    flat = papers.expand_variant("resnet56")
    kept = kept_filters(base, flat, plan(flat, step.settings), greedy=False)
    layer = loaded.get_submodule("layer2.1.conv1").weight
    assert torch.equal(layer, base.get_submodule("layer2.1.conv1").weight.detach()[kept["layer2.1.conv1"]])
    weights = tmp_path / "pruned.safetensors"
    save_file({k: v.contiguous() for k, v in loaded.state_dict().items()}, str(weights))
    exported = papers.export_onnx(
        "li2017-resnet56-a", tmp_path / "pruned.onnx", weights=weights, exporter="torchscript"
    )
    assert exported.passed and (tmp_path / "pruned.onnx").is_file()


# -- bad plans: one line, exit 2, nothing written ------------------------------------------------------


def copied_spec(tmp_path: Path, settings: dict) -> Path:
    spec = yaml.safe_load(SPEC.read_text())
    spec["id"] = "prune"
    spec["variants"] = [{**spec["variants"][1], "id": "prune-resnet56"}]
    spec["variants"][0]["methods"] = [{"name": "l1_filter_prune", "settings": settings}]
    spec["results"] = []
    path = tmp_path / "prune.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"rates": {"layer1.0.conv1": 1.0}}, "layer 'layer1.0.conv1': width 0 removes every one of its 16"),
        ({"rates": {"layer1.0.conv1": 0.97}}, "layer 'layer1.0.conv1': width 0 removes every one of its 16"),
        (
            {"rates": {"layer1.0.conv2": 0.5}},
            "layer 'layer1.0.conv2': its channels cannot be removed: its output reaches the residual "
            "addition 'layer1.0.add'",
        ),
        ({"rates": {"layer1.0.conv9": 0.5}}, "no layer 'layer1.0.conv9' whose channels can be removed"),
        ({"stages": {"layer4": 0.5}}, "settings.stages names 'layer4', which holds no convolution"),
        ({"stages": {"layer1": 0.5}, "skip": ["layer1.0.bn1"]}, "settings.skip names 'layer1.0.bn1'"),
    ],
)
def test_a_bad_plan_is_one_line_naming_the_layer_and_exit_2(settings, message, tmp_path, monkeypatch, run):
    path = copied_spec(tmp_path, settings)
    monkeypatch.setattr(Registry, "discover", classmethod(lambda cls: registry_with(path)))
    monkeypatch.setattr(papers.registry, "_current", None)
    monkeypatch.chdir(tmp_path)
    result = run("compress", "prune-resnet56", "--out", "out")
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("papers: error: ")
    assert str(path) in result.stderr and "variants[0].methods[0]" in result.stderr
    assert message in result.stderr
    assert not (tmp_path / "out").exists()


# -- the proxy ---------------------------------------------------------------------------------------


def test_the_proxy_trains_prunes_by_l1_and_retrains_a_smaller_model():
    measured = proxy(epochs=1, retrain_epochs=1, limit=256)
    before, after = measured["params"]
    assert after < before
    assert measured["widths"]["features.0"] == 4 and measured["widths"]["features.40"] == 16
    assert all(0.0 <= measured[key] <= 100.0 for key in ("before", "pruned", "after"))
