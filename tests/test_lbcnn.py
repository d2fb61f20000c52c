"""LBCNN (``lbcnn``): the LBC layer's anchors are fixed sparse ternary filters and only its 1×1
combination learns; the rewrite keeps each convolution's geometry; the settings' saving in learned
weights (the abstract's 9× for 3×3 filters at m = p); refusals; a smoke of the proxy."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

import papers
import papers.registry
from papers.api import expand_variant
from papers.methods import static_measurements
from papers.registry import Registry
from papers_plugins.compression import local_binary
from papers_plugins.compression.lbc_conv import LBConv2d, anchor_weights
from tests.conftest import REPO
from tests.test_han2015 import registry_with

SPEC = REPO / "specs" / "compression" / "lbcnn.yaml"

pytestmark = pytest.mark.usefixtures("one_thread")


def test_anchors_are_ternary_with_the_kept_fraction_and_balanced_signs():
    anchors = anchor_weights(64, 32, (3, 3), nonzero=0.3, seed=5)
    assert set(anchors.unique().tolist()) <= {-1.0, 0.0, 1.0}
    kept = anchors != 0
    assert float(kept.float().mean()) == pytest.approx(0.3, abs=0.02)
    assert float((anchors[kept] > 0).float().mean()) == pytest.approx(0.5, abs=0.03)
    assert torch.equal(anchors, anchor_weights(64, 32, (3, 3), nonzero=0.3, seed=5)), "drawn from the seed"


def test_an_lbc_layer_is_anchors_then_relu_then_the_learned_1x1_combination():
    layer = LBConv2d(3, 5, 3, stride=2, padding=1, intermediate=7, nonzero=0.5)
    image = torch.randn(2, 3, 9, 9)
    expected = layer.combine(F.relu(F.conv2d(image, layer.anchors, None, 2, 1)))
    assert torch.equal(layer(image), expected)
    assert layer(image).shape == F.conv2d(image, torch.zeros(5, 3, 3, 3), None, 2, 1).shape


def test_only_the_combination_learns():
    layer = LBConv2d(4, 6, 5, intermediate=8)
    assert {name for name, _ in layer.named_parameters()} == {"combine.weight", "combine.bias"}
    assert "anchors" in layer.state_dict()
    before = layer.anchors.clone()
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
    layer(torch.randn(2, 4, 8, 8)).sum().backward()
    optimizer.step()
    assert torch.equal(layer.anchors, before)


def test_the_rewrite_replaces_each_convolution_keeping_its_geometry():
    flat = expand_variant("lbcnn-lenet5_caffe")
    node = flat.node("conv2")
    assert node.op == "lbc_conv2d" and node.args["out_channels"] == 50 and node.args["kernel_size"] == 5
    assert node.args["intermediate"] == 64 and flat.node("conv1").args["seed"] != node.args["seed"]
    model = papers.build_model("lbcnn-lenet5_caffe")
    assert model(torch.zeros(1, 1, 28, 28)).shape == (1, 10)
    assert isinstance(model.conv1, LBConv2d) and not model.conv1.anchors.requires_grad


def test_as_many_anchors_as_inputs_learns_h_times_w_fewer_weights():
    assert static_measurements("lbcnn-vgg16")["compression_ratio"] == pytest.approx(9.0)
    flat = expand_variant("lbcnn-lenet5_caffe")
    before, after = local_binary.learnable_weights(flat, local_binary.LBCSettings(intermediate=64))
    assert (before, after) == (1 * 25 * 20 + 20 * 25 * 50, 64 * 20 + 64 * 50)


def copied_spec(tmp_path: Path, settings: dict) -> Path:
    spec = yaml.safe_load(SPEC.read_text())
    spec["id"] = "lbc"
    spec["results"] = []
    spec["variants"] = [spec["variants"][1]]
    spec["variants"][0]["id"] = "lbc-lenet5_caffe"
    spec["variants"][0]["methods"][0]["settings"] = settings
    path = tmp_path / "lbc.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.mark.parametrize(
    ("settings", "field", "message"),
    [
        ({"nonzero": 0.0}, "settings.nonzero", "greater than 0"),
        ({"nonzero": 1.5}, "settings.nonzero", "less than or equal to 1"),
        ({"intermediate": "outputs"}, "settings.intermediate", "a positive number or 'inputs'"),
        ({"intermediate": 0}, "settings.intermediate", "a positive number or 'inputs'"),
        ({"layers": ["fc1"]}, "variants[0]", "settings.layers[0] names 'fc1', which is no convolution"),
    ],
)
def test_bad_settings_are_one_line_and_exit_2(settings, field, message, tmp_path, monkeypatch, run):
    path = copied_spec(tmp_path, settings)
    monkeypatch.setattr(Registry, "discover", classmethod(lambda cls: registry_with(path)))
    monkeypatch.setattr(papers.registry, "_current", None)
    monkeypatch.chdir(tmp_path)
    result = run("build", "lbc-lenet5_caffe")
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("papers: error: ")
    assert str(path) in result.stderr and field in result.stderr and message in result.stderr


def test_the_proxy_trains_both_networks_and_the_lbc_one_learns_fewer_parameters():
    measured = local_binary.lbcnn_proxy(data="builtin:digits", epochs=1, limit=200)
    assert 0 <= measured["lbc"] <= 100 and 0 <= measured["base"] <= 100
    conv_weights = 1 * 25 * 20 + 20 * 25 * 50
    assert measured["base_params"] - measured["lbc_params"] == conv_weights - (64 * 20 + 64 * 50)
