"""Huang and Wang 2018 (SSS, ``sparse_structure``): the ℓ1 proximal step leaves exact zeros, APG's
look-ahead extrapolates from the last two iterates, factors folded into the next layers let the zero
channels go without changing what the network computes, a γ that zeroes a whole layer is refused, and
a smoke of the proxy. The block level: a ResNet's blocks whose factor is zero removed whole without
changing its outputs (the others' factors folded into their branches), a subsampling block refused,
the removed model written, loaded back and exported, bad settings one line, a smoke of its proxy. The
group level: a ResNeXt's groups whose factor is zero removed with the filters that feed them, without
changing its outputs, and the thinner model written and loaded back."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml

import papers
import papers.registry
from papers.api import build_model, expand_variant
from papers.compression import compress, load_compressed, read_container
from papers.errors import GraphError, PapersError, PluginError, SpecError
from papers.methods import Narrowed
from papers.registry import Registry
from papers_plugins.compression import sparse_structure as sss
from papers_plugins.compression.blocks import remove_blocks, residual_blocks
from papers_plugins.compression.channels import remove_channels
from papers_plugins.compression.gates import ChannelGates, gate_points
from papers_plugins.compression.groups import GroupGates, grouped_layers, remove_groups
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
    spec["variants"] = [{**spec["variants"][0], "id": "sss_copy-lenet5_caffe"}]
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


# -- the block level: a factor on each residual branch, the zero ones' blocks removed whole ----------


def test_resnet20s_identity_blocks_are_removable_and_its_subsampling_ones_are_refused():
    blocks = residual_blocks(expand_variant("resnet20"))
    assert [name for name, block in blocks.items() if block.removable] == [
        "layer1.0", "layer1.1", "layer1.2", "layer2.1", "layer2.2", "layer3.1", "layer3.2",
    ]  # fmt: skip
    one = blocks["layer1.1"]
    assert (one.add, one.branch, one.shortcut) == ("layer1.1.add", "layer1.1.bn2", "layer1.0.relu")
    assert one.nodes == tuple(f"layer1.1.{n}" for n in ("conv1", "bn1", "relu1", "conv2", "bn2"))
    assert "'layer2.0.shortcut' is not the identity" in blocks["layer2.0"].reason


def randomised_resnet20():
    torch.manual_seed(0)
    model = build_model("resnet20").eval()
    for module in model.modules():  # batch norms that are not the identity at initialisation
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    return model


def test_blocks_whose_factor_is_zero_go_and_the_others_factors_fold_in_without_changing_the_outputs():
    model, flat = randomised_resnet20(), expand_variant("resnet20")
    factors = {"layer1.0": 0.0, "layer1.1": 0.7, "layer1.2": 0.0, "layer2.2": -0.3, "layer3.1": 0.0}
    blocks = residual_blocks(flat)
    images = torch.randn(4, 3, 32, 32)
    points = {name: blocks[name].branch for name in factors}
    with ChannelGates(model, points, dict.fromkeys(factors, 1)) as gates:
        for name, value in factors.items():
            gates.masks[name].fill_(value)
        with torch.no_grad():
            scaled = model(images)
    smaller, smaller_flat = remove_blocks(model, flat, factors)
    with torch.no_grad():
        assert torch.allclose(smaller(images), scaled, rtol=1e-5, atol=1e-5 * float(scaled.abs().max()))
    names = {node.name for node in smaller_flat.nodes}
    for name in ("layer1.0", "layer1.2", "layer3.1"):
        assert not names & {*blocks[name].nodes, blocks[name].add}, f"{name}'s branch and addition go"
        assert f"{name}.relu" in names, "what follows the addition stays"
    assert smaller_flat.node("layer1.0.relu").inputs == ("relu",), (
        "the addition's reader reads the block's input"
    )
    assert smaller_flat.node("layer1.0.relu").args["inplace"] is False
    assert "layer1.1.conv1" in names and "layer2.2.add" in names
    removed = sum(
        model.get_submodule(f"{b}.{m}").weight.numel()
        for b in ("layer1.0", "layer1.2", "layer3.1")
        for m in ("conv1", "conv2")
    )
    assert sum(p.numel() for p in smaller.parameters()) < sum(p.numel() for p in model.parameters()) - removed


def test_a_node_left_reading_a_removed_node_without_a_replacement_is_refused():
    flat = expand_variant("resnet20")
    with pytest.raises(GraphError, match=r"'layer1\.1\.bn1' reads 'layer1\.1\.conv1', a removed node"):
        flat.bypass({"layer1.1.conv1": None})
    with pytest.raises(GraphError, match="no such node"):
        flat.bypass({"layer9.conv": None})


BLOCK_VARIANT = 1
SMALL = {"widths": [4, 8, 16], "image_size": 16}


def copied_block_spec(tmp_path: Path, settings: dict) -> Path:
    spec = yaml.safe_load(SPEC.read_text())
    spec["id"] = "sss_blocks"
    spec["variants"] = [{**spec["variants"][BLOCK_VARIANT], "id": "sss_blocks-resnet20"}]
    spec["variants"][0]["methods"][0]["settings"] = settings
    path = tmp_path / "sss_blocks.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_compress_removes_the_zero_factor_blocks_and_the_result_loads_and_exports(tmp_path, monkeypatch):
    import numpy as np
    import onnxruntime

    settings = {
        "gamma": 50.0,
        "level": "block",
        "blocks": ["layer1.1", "layer2.2"],
        "epochs": 1,
        "batch_size": 256,
    }
    monkeypatch.setattr(papers.registry, "_current", registry_with(copied_block_spec(tmp_path, settings)))
    out = tmp_path / "out"
    report = compress("sss_blocks-resnet20", out=out, data="builtin:digits", options=SMALL, latency_runs=1)
    _, metadata = read_container(out / "model.safetensors")
    removed = json.loads(metadata["removed"])
    assert removed["layer1.1.add"] == "layer1.0.relu" and removed["layer2.2.add"] == "layer2.1.relu"
    assert removed["layer1.1.conv1"] is None and "layer1.2.conv1" not in removed
    loaded = load_compressed(out / "model.safetensors").eval()
    names = {name for name, _ in loaded.named_modules()}
    assert "layer1.1.conv1" not in names and "layer2.2.bn2" not in names and "layer2.1.conv1" in names
    assert report["macs_after"] < report["macs_before"] and report["params_after"] < report["params_before"]
    images = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        expected = loaded(images).numpy()
    torch.onnx.export(loaded, (images,), str(tmp_path / "m.onnx"), dynamo=False, input_names=["image"])
    session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"image": images.numpy()})
    assert np.allclose(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("settings", "field", "message"),
    [
        ({"gamma": 0.1, "level": "groups"}, "settings.level", "'neuron', 'group' or 'block'"),
        (
            {"gamma": 0.1, "level": "block", "blocks": ["layer2.0"]},
            "settings.blocks[0]",
            "'layer2.0.shortcut' is not the identity",
        ),
        (
            {"gamma": 0.1, "level": "block", "blocks": ["layer9.1"]},
            "settings.blocks[0]",
            "no residual block 'layer9.1'",
        ),
        (
            {"gamma": 0.1, "level": "block", "layers": ["conv1"]},
            "settings.layers",
            "level block takes blocks",
        ),
        ({"gamma": 0.1, "blocks": ["layer1.1"]}, "settings.blocks", "level neuron takes layers"),
        (
            {"gamma": 0.1, "level": "group"},
            "settings.layers",
            "no grouped convolution whose groups can be removed",
        ),
        (
            {"gamma": 0.1, "level": "group", "layers": ["conv1"]},
            "settings.layers[0]",
            "no grouped convolution 'conv1'",
        ),
    ],
)
def test_bad_block_settings_are_one_line_and_exit_2(settings, field, message, tmp_path, monkeypatch, run):
    path = copied_block_spec(tmp_path, settings)
    monkeypatch.setattr(Registry, "discover", classmethod(lambda cls: registry_with(path)))
    monkeypatch.setattr(papers.registry, "_current", None)
    monkeypatch.chdir(tmp_path)
    result = run("compress", "sss_blocks-resnet20", "--out", "out", "--data", "builtin:digits")
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("papers: error: ")
    assert field in result.stderr and message in result.stderr
    assert not (tmp_path / "out").exists()


def test_the_block_proxy_trains_removes_blocks_and_reports():
    overrides = {"epochs": 1, "final_epochs": 0, "gamma": 5.0}
    measured = sss.block_proxy(data="builtin:digits", epochs=1, overrides=overrides, limit=128)
    assert 0 <= measured["before"] <= 100 and 0 <= measured["after"] <= 100
    assert len(measured["factors"]) == 7 and measured["removed"] == list(measured["factors"])
    assert measured["widths"]["blocks"] == (7, 0) and measured["macs"][1] < measured["macs"][0]


def test_a_narrowed_graph_that_rewires_a_node_without_removing_one_is_refused(tmp_path, monkeypatch):
    from tests.test_narrowed import narrowing_registry

    def rewired(model, settings, context):
        nodes = tuple(
            replace(node, inputs=("relu",)) if node.name == "layer1.1.conv1" else node
            for node in context.flat.nodes
        )
        return Narrowed(model, replace(context.flat, nodes=nodes))

    monkeypatch.setattr(papers.registry, "_current", narrowing_registry(tmp_path, rewired))
    with pytest.raises(PluginError, match="changes more than widths and removed nodes"):
        compress("shrink-resnet20", out=tmp_path / "out", latency_runs=1)
    assert not (tmp_path / "out").exists()


# -- the group level: a factor on each group of a grouped convolution, the zero ones removed ----------

TINY_RESNEXT = {
    "blocks": [1, 1, 1, 1],
    "cardinality": 4,
    "base_width": 2,
    "image_size": 16,
    "num_classes": 10,
}


def test_a_resnext_block_s_grouped_convolution_is_fed_and_read_by_its_1x1_convolutions():
    layers = grouped_layers(expand_variant("resnext50_32x4d", **TINY_RESNEXT))
    assert list(layers) == ["layer1.0.conv2", "layer2.0.conv2", "layer3.0.conv2", "layer4.0.conv2"]
    layer = layers["layer2.0.conv2"]
    assert (layer.groups, layer.width, layer.feeder, layer.reader) == (
        4,
        16,
        "layer2.0.conv1",
        "layer2.0.conv3",
    )
    assert layer.before == ("layer2.0.bn1", "layer2.0.relu1") and layer.point == "layer2.0.relu2"


def test_groups_whose_factor_is_zero_go_with_their_feeding_filters_without_changing_the_outputs():
    flat = expand_variant("resnext50_32x4d", **TINY_RESNEXT)
    torch.manual_seed(0)
    model = build_model("resnext50_32x4d", **TINY_RESNEXT).eval()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    layers = grouped_layers(flat)
    factors = {"layer1.0.conv2": [0.0, 1.3, 0.0, -0.4], "layer3.0.conv2": [0.0, 0.0, 0.0, 0.5]}
    images = torch.randn(2, 3, 16, 16)
    with GroupGates(model, {name: layers[name] for name in factors}) as gates:
        for name, values in factors.items():
            gates.masks[name].copy_(torch.tensor(values))
        with torch.no_grad():
            scaled = model(images)
    thinner, thinner_flat = remove_groups(model, flat, factors)
    with torch.no_grad():
        assert torch.allclose(thinner(images), scaled, rtol=1e-5, atol=1e-5 * float(scaled.abs().max()))
    conv = thinner.get_submodule("layer3.0.conv2")
    assert (conv.groups, conv.in_channels, conv.out_channels) == (1, 8, 8)
    assert thinner.get_submodule("layer3.0.conv1").out_channels == 8
    assert thinner.get_submodule("layer3.0.conv3").in_channels == 8
    assert thinner_flat.node("layer1.0.conv2").args["groups"] == 2
    with pytest.raises(SpecError, match="every one of its 4 groups"):
        remove_groups(model, flat, {"layer2.0.conv2": [0.0] * 4})


def test_compress_at_the_group_level_writes_a_thinner_resnext_that_loads_back(tmp_path, monkeypatch):
    settings = {"gamma": 0.5, "level": "group", "epochs": 1}
    spec = yaml.safe_load(SPEC.read_text())
    spec["id"] = "sss_groups"
    group_variant = next(v for v in spec["variants"] if v["base"] == "resnext50_32x4d")
    spec["variants"] = [{**group_variant, "id": "sss_groups-resnext50_32x4d"}]
    spec["variants"][0]["methods"][0]["settings"] = settings
    path = tmp_path / "sss_groups.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    monkeypatch.setattr(papers.registry, "_current", registry_with(path))
    out = tmp_path / "out"
    report = compress(
        "sss_groups-resnext50_32x4d", out=out, data="builtin:digits", options=TINY_RESNEXT, latency_runs=1
    )
    _, metadata = read_container(out / "model.safetensors")
    narrowed = json.loads(metadata["narrowed"])
    thinned = [name for name, args in narrowed.items() if "groups" in args]
    assert thinned and report["macs_after"] < report["macs_before"]
    loaded = load_compressed(out / "model.safetensors")
    for name in thinned:
        conv = loaded.get_submodule(name)
        assert (
            conv.groups == narrowed[name]["groups"] < 4
            and conv.out_channels == narrowed[name]["out_channels"]
        )
        assert loaded.get_submodule(name.replace("conv2", "conv1")).out_channels == conv.in_channels
