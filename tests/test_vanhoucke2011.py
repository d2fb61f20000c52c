"""Vanhoucke et al. 2011 (``vanhoucke2011``): weights on the int8 grid (per layer or per channel); the
int8 layers are torch's layers with the same weights, run by the int8 kernel where no gradient is
wanted and in float elsewhere; the rewrite and its refusals; the settings' bits as a static check;
``papers compress`` writes 8-bit codes and reads them back into int8 layers; a smoke of the proxy.
No test depends on this machine's speed (``benchmarks/int8_linear.py`` measures it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

import papers
import papers.registry
from papers.api import expand_variant
from papers.compression import read_container
from papers.methods import static_measurements
from papers.registry import Registry
from papers_plugins.compression import int8
from papers_plugins.compression.int8_kernels import (
    Int8Conv2d,
    Int8Linear,
    int8_codes,
    on_grid,
    weight_scale,
)
from tests.conftest import REPO
from tests.test_han2015 import registry_with

SPEC = REPO / "specs" / "compression" / "vanhoucke2011.yaml"

pytestmark = pytest.mark.usefixtures("one_thread")


def gridded(layer: torch.nn.Module, granularity: str) -> torch.nn.Module:
    with torch.no_grad():
        layer.weight.copy_(on_grid(layer.weight, granularity))
    return layer.eval()


# -- the grid -----------------------------------------------------------------------------------------


def test_layer_scaling_maps_the_largest_magnitude_to_127_and_keeps_at_most_255_values():
    weight = torch.randn(64, 30)
    codes, scale = int8_codes(weight, "layer")
    assert scale.dim() == 0 and float(scale) == pytest.approx(float(weight.abs().max()) / 127)
    assert int(codes.abs().max()) == 127 and codes.dtype == torch.int8
    grid = on_grid(weight, "layer")
    assert torch.unique(grid).numel() <= 255
    assert float((grid - weight).abs().max()) <= float(scale) / 2 + 1e-7, (
        "each weight rounds to the nearest code"
    )


def test_channel_scaling_has_one_scale_per_output_channel():
    weight = torch.randn(8, 3, 5, 5) * torch.arange(1, 9).view(-1, 1, 1, 1)
    scale = weight_scale(weight, "channel")
    assert scale.shape == (8,)
    assert torch.allclose(scale, weight.abs().amax((1, 2, 3)) / 127)
    codes, _ = int8_codes(weight, "channel")
    assert (codes.reshape(8, -1).abs().amax(1) == 127).all()


def test_the_grid_is_a_fixed_point_so_the_kernel_recovers_the_stored_codes():
    weight = torch.randn(50, 40)
    for granularity in ("layer", "channel"):
        grid = on_grid(weight, granularity)
        assert torch.equal(on_grid(grid, granularity), grid)
        assert torch.equal(int8_codes(grid, granularity)[0], int8_codes(weight, granularity)[0])


def test_fewer_bits_keep_fewer_codes():
    codes, _ = int8_codes(torch.randn(200, 200), "layer", bits=4)
    assert int(codes.abs().max()) == 7 and torch.unique(codes).numel() <= 15


def test_all_zero_weights_stay_zero():
    assert torch.equal(on_grid(torch.zeros(4, 4), "layer"), torch.zeros(4, 4))


# -- the layers -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("granularity", ["layer", "channel"])
def test_int8_linear_runs_the_kernel_and_gives_the_float_layer_within_activation_rounding(granularity):
    layer = gridded(Int8Linear(300, 100, granularity=granularity), granularity)
    inputs = torch.rand(7, 300)
    with torch.inference_mode():
        assert layer.runs_int8(inputs)
        got = layer(inputs)
    expected = F.linear(inputs, layer.weight.detach(), layer.bias.detach())
    # activations rounded to 1/255 of their range: each product's error is at most half a step
    bound = 0.5 / 255 * float(layer.weight.detach().abs().sum(1).max())
    assert float((got - expected).abs().max()) <= bound
    assert not torch.equal(got, expected), "the activations were quantized"


@pytest.mark.parametrize(
    ("kernel", "stride", "padding", "dilation"),
    [(3, 1, 1, 1), (5, 2, 0, 1), ((3, 5), (2, 1), (1, 2), 1), (3, 1, 2, 2)],
)
def test_int8_conv2d_lowers_onto_the_int8_product_and_gives_the_convolution(
    kernel, stride, padding, dilation
):
    conv = gridded(Int8Conv2d(3, 6, kernel, stride=stride, padding=padding, dilation=dilation), "layer")
    inputs = torch.rand(2, 3, 13, 11)
    with torch.inference_mode():
        got = conv(inputs)
    expected = F.conv2d(inputs, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation)
    assert got.shape == expected.shape
    bound = 0.5 / 255 * float(conv.weight.detach().abs().flatten(1).sum(1).max())
    assert float((got - expected).abs().max()) <= bound


def test_the_layers_are_torch_layers_with_the_same_state():
    linear, conv = Int8Linear(4, 3), Int8Conv2d(2, 5, 3)
    assert isinstance(linear, torch.nn.Linear) and isinstance(conv, torch.nn.Conv2d)
    assert set(linear.state_dict()) == {"weight", "bias"} == set(conv.state_dict())


def test_training_runs_in_float_and_gradients_flow():
    layer = Int8Linear(10, 4)
    inputs = torch.rand(3, 10)
    assert not layer.runs_int8(inputs)
    output = layer(inputs)
    assert torch.equal(output, F.linear(inputs, layer.weight, layer.bias))
    output.sum().backward()
    assert layer.weight.grad is not None


def test_new_weights_are_packed_again():
    layer = Int8Linear(20, 5).eval()
    inputs = torch.rand(2, 20)
    with torch.inference_mode():
        before = layer(inputs)
    with torch.no_grad():
        layer.weight.mul_(2)
        layer.bias.zero_()
    with torch.inference_mode():
        after = layer(inputs)
    assert torch.allclose(after, 2 * F.linear(inputs, layer.weight / 2), atol=0.05)
    assert not torch.allclose(after, before, atol=0.05)


def test_a_bad_bit_width_or_granularity_is_refused():
    with pytest.raises(ValueError, match="2 to 8 bits"):
        Int8Linear(3, 3, bits=9)
    with pytest.raises(ValueError, match="granularity"):
        Int8Conv2d(3, 3, 1, granularity="tensor")


# -- the method ----------------------------------------------------------------------------------------


def test_the_rewrite_makes_every_fully_connected_layer_but_the_input_layer_int8():
    flat = expand_variant("vanhoucke2011-speech_dnn")
    ops = {node.name: node.op for node in flat.nodes if node.name.startswith("fc")}
    assert ops == {"fc1": "linear", **{f"fc{i}": "int8_linear" for i in range(2, 6)}}
    assert flat.node("fc3").args["bits"] == 8 and flat.node("fc3").args["granularity"] == "layer"
    model = papers.build_model("vanhoucke2011-lenet5_caffe")
    assert isinstance(model.conv1, Int8Conv2d) and isinstance(model.fc2, Int8Linear)


def test_the_speech_network_is_the_one_whose_last_layer_holds_55_percent_of_the_weights():
    model = papers.build_model("speech_dnn", device="meta")
    weights = [model.get_submodule(f"fc{i}").weight.numel() for i in range(1, 6)]
    assert weights[0] == 440 * 2000 and weights[-1] == 2000 * 7969
    assert round(100 * weights[-1] / sum(weights)) == 55  # Section 5.2: "fully 55%"


def test_the_settings_give_the_papers_three_to_four_times_smaller_network():
    measured = static_measurements("vanhoucke2011-speech_dnn")
    assert 3 <= measured["compression_ratio"] <= 4
    total = sum(p.numel() for p in papers.build_model("speech_dnn", device="meta").parameters())
    int8_weights = 3 * 2000 * 2000 + 2000 * 7969
    expected_bits = 8 * int8_weights + 32 * (total - int8_weights) + 4 * 32
    assert measured["bits_per_weight"] == pytest.approx(expected_bits / total)


def test_compress_writes_8_bit_codes_and_reads_them_back_into_int8_layers(run, tmp_path):
    result = run("compress", "vanhoucke2011-lenet5_caffe", "--out", str(tmp_path), "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["bytes_after"] < report["bytes_before"] / 3.5
    assert report["bits_per_weight_after"] < 9
    state, _ = read_container(tmp_path / "model.safetensors")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # the fixed seed compress initialises the base from
        base = papers.build_model("lenet5_caffe")
    for name in ("conv1", "conv2", "fc1", "fc2"):
        weight = state[f"{name}.weight"]
        assert torch.equal(weight, on_grid(base.get_submodule(name).weight, "layer"))
    model = papers.load_compressed(tmp_path / "model.safetensors")
    assert isinstance(model.fc1, Int8Linear) and isinstance(model.conv2, Int8Conv2d)


def copied_spec(tmp_path: Path, settings: dict) -> Path:
    spec = yaml.safe_load(SPEC.read_text())
    spec["id"] = "eightbit"
    spec["graphs"] = {}
    spec["results"] = []
    spec["variants"] = [spec["variants"][2]]
    spec["variants"][0]["id"] = "eightbit-lenet5_caffe"
    spec["variants"][0]["methods"][0]["settings"] = settings
    path = tmp_path / "eightbit.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.mark.parametrize(
    ("settings", "field", "message"),
    [
        ({"bits": 0}, "settings.bits", "greater than or equal to 2"),
        ({"bits": 33}, "settings.bits", "less than or equal to 8"),
        ({"granularity": "tensor"}, "settings.granularity", "'layer' or 'channel'"),
        ({"ops": ["pool"]}, "settings.ops[0]", "'linear' or 'conv2d'"),
        ({"keep_float": ["fc9"]}, "variants[0]", "settings.keep_float[0] names 'fc9', which is no"),
        ({"keep_float": ["fc1", "fc2"]}, "variants[0]", "no linear layer left to quantize"),
    ],
)
def test_bad_settings_are_one_line_and_exit_2(settings, field, message, tmp_path, monkeypatch, run):
    path = copied_spec(tmp_path, settings)
    monkeypatch.setattr(Registry, "discover", classmethod(lambda cls: registry_with(path)))
    monkeypatch.setattr(papers.registry, "_current", None)
    monkeypatch.chdir(tmp_path)
    result = run("compress", "eightbit-lenet5_caffe", "--out", "out")
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("papers: error: ")
    assert str(path) in result.stderr and field in result.stderr and message in result.stderr
    assert not (tmp_path / "out").exists()


def test_the_proxy_trains_quantizes_through_compress_and_reports_both_accuracies():
    measured = int8.int8_proxy(data="builtin:digits", epochs=1, limit=300, latency_runs=1)
    assert 0 <= measured["metric_after"] <= 100 and 0 <= measured["metric_before"] <= 100
    assert abs(measured["metric_after"] - measured["metric_before"]) <= 2.0
    assert measured["bytes_after"] < measured["bytes_before"] / 3.5
