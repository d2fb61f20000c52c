"""An apply step that narrows a model (``papers.methods.Narrowed``: the weights chose the widths, as
a global ranking of filters does): ``papers compress`` writes it with its widths, ``load_compressed``
rebuilds it, and a narrowed model whose tensors are not its graph's is refused."""

from __future__ import annotations

import json

import pytest
import torch

import papers
import papers.registry
from papers.compression import compress, load_compressed, read_container
from papers.errors import PluginError
from papers.methods import Method, MethodContext, Narrowed, NoSettings
from papers.plugins import PluginInfo, PluginManager
from papers.registry import Registry
from papers_plugins.compression.channels import channel_layers, narrow, remove_channels, top_channels
from tests.test_channels import seeded
from tests.test_methods import compression_spec, method_plugin, method_variant, spec_plugin, write

pytestmark = pytest.mark.usefixtures("one_thread")


# -- an apply step that narrows: compress writes it, load_compressed reads it ------------------------


def halve_by_l1(model, settings, context: MethodContext):
    """Keep the half of every removable layer's filters with the largest ℓ1 norms."""
    layers = [layer for layer in channel_layers(context.flat).values() if layer.removable]
    kept = {
        layer.name: top_channels(
            model.get_submodule(layer.name).weight.abs().sum((1, 2, 3)), layer.width // 2
        )
        for layer in layers
        if layer.op == "conv2d"
    }
    return Narrowed(*remove_channels(model, context.flat, kept))


def narrowing_registry(tmp_path, apply=halve_by_l1) -> Registry:
    spec = compression_spec(method_variant("resnet20", {"name": "halve"}))
    manager = PluginManager()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PAPERS_PLUGINS", "")
        manager.load_entry_points()
    manager.register(spec_plugin(write(tmp_path, spec)), PluginInfo("shrink", "shrink-dist", "1", "tests"))
    method = Method("halve", NoSettings, "keeps half of each layer's filters", apply=apply)
    manager.register(method_plugin(method), PluginInfo("halve", "halve-dist", "1", "tests"))
    return Registry(manager)


def test_compress_writes_an_apply_steps_narrowed_model_and_load_compressed_rebuilds_it(tmp_path, monkeypatch):
    monkeypatch.setattr(papers.registry, "_current", narrowing_registry(tmp_path))
    report = compress("shrink-resnet20", out=tmp_path / "out", latency_runs=2)
    assert report["params_after"] < report["params_before"] and report["macs_after"] < report["macs_before"]
    assert report["latency_ms_after"] > 0
    _, metadata = read_container(tmp_path / "out" / "model.safetensors")
    assert json.loads(metadata["narrowed"])["layer1.0.conv1"] == {"out_channels": 8}
    loaded = load_compressed(tmp_path / "out" / "model.safetensors").eval()
    assert loaded.get_submodule("layer2.0.conv1").out_channels == 16
    base = seeded("resnet20")
    base.load_state_dict(load_file(tmp_path / "out" / "base.safetensors"))
    expected, _ = remove_channels(base, papers.expand_variant("resnet20"), _l1_half(base))
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(loaded(images), expected(images), rtol=0, atol=1e-6)


def _l1_half(model) -> dict[str, list[int]]:
    flat = papers.expand_variant("resnet20")
    return {
        name: top_channels(model.get_submodule(name).weight.abs().sum((1, 2, 3)), layer.width // 2)
        for name, layer in channel_layers(flat).items()
        if layer.removable
    }


def load_file(path):
    from safetensors.torch import load_file as load

    return load(str(path))


def test_a_narrowed_model_whose_tensors_are_not_its_graphs_is_refused(tmp_path, monkeypatch):
    def wrong(model, settings, context):
        return Narrowed(model, narrow(context.flat, {"layer1.0.conv1": 8}, field="kept"))

    monkeypatch.setattr(papers.registry, "_current", narrowing_registry(tmp_path, wrong))
    with pytest.raises(PluginError, match="its narrowed model's tensors are not those its graph builds"):
        compress("shrink-resnet20", out=tmp_path / "out", latency_runs=1)
    assert not (tmp_path / "out").exists()
