"""XNOR-Net, Binarized and Quantized Neural Networks and DoReFa-Net (``xnor_net``, ``binarized_nn``,
``qnn``, ``dorefa``): the rewrites (binary and k-bit layers, XNOR's block order), the quantizers and
their estimators, training then writing the quantized weights, the file at the real bit width, the
static checks, bad settings refused in one line, and a smoke of the proxies' path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

import papers
import papers.registry
from papers.compression import read_container
from papers.methods import MethodContext, static_measurements, variant_steps
from papers.registry import Registry
from papers_plugins.compression import low_bit
from papers_plugins.compression.binary import BinaryConv2d, BinaryLinear, binarize
from papers_plugins.compression.low_bit import freeze, quantize_apply
from papers_plugins.compression.quantizers import (
    QuantConv2d,
    QuantLinear,
    ShiftBatchNorm,
    ap2,
    dorefa_activation,
    dorefa_weight,
    linear_weight,
    quantize_gradient,
)
from tests.conftest import REPO
from tests.test_park2017 import registry_with

pytestmark = pytest.mark.usefixtures("one_thread")


def nodes(variant: str) -> dict[str, tuple[str, tuple[str, ...]]]:
    return {node.name: (node.op, node.inputs) for node in papers.expand_variant(variant).nodes}


# -- the rewrites ---------------------------------------------------------------------------------------


def test_xnor_puts_a_batch_norm_before_each_binary_layer_and_keeps_the_first_and_last_real():
    graph = nodes("xnor_net-lenet5_caffe-xnor")
    assert graph["conv1"][0] == "conv2d" and graph["fc2"][0] == "linear"
    assert graph["bn_conv2"] == ("batchnorm2d", ("pool1",)) and graph["conv2"] == (
        "binary_conv2d",
        ("bn_conv2",),
    )
    assert graph["bn_fc1"] == ("batchnorm1d", ("flatten",)) and graph["fc1"] == ("binary_linear", ("bn_fc1",))
    model = papers.build_model("xnor_net-lenet5_caffe-xnor")
    assert model.conv2.inputs == "binary" and model.conv2.input_scale and model.conv2.weight_scale


def test_bwn_binarizes_the_weights_only_and_inserts_nothing():
    graph = nodes("xnor_net-lenet5_caffe-bwn")
    assert graph.keys() == nodes("lenet5_caffe").keys()
    model = papers.build_model("xnor_net-lenet5_caffe-bwn")
    assert isinstance(model.conv2, BinaryConv2d) and model.conv2.inputs == "real"


def test_xnor_alexnet_binarizes_its_grouped_convolutions():
    model = papers.build_model("xnor_net-alexnet-xnor", device="meta")
    binary = [m for m in model.modules() if isinstance(m, BinaryConv2d)]
    assert len(binary) == 4 and any(m.groups == 2 for m in binary)


def test_dorefa_quantizes_the_layers_and_replaces_the_relus():
    graph = nodes("dorefa-lenet5_caffe-1-2-6")
    assert graph["conv2"][0] == "quant_conv2d" and graph["fc1"][0] == "quant_linear"
    assert graph["relu1"][0] == "quant_activation" and graph["conv1"][0] == "conv2d"
    model = papers.build_model("dorefa-lenet5_caffe-1-2-6")
    assert (model.conv2.weight_bits, model.conv2.gradient_bits, model.relu1.bits) == (1, 6, 2)


def test_bnn_at_one_bit_uses_the_binary_kernel_without_scales_and_qnn_the_k_bit_layers():
    bnn = papers.build_model("binarized_nn-lenet5_caffe")
    assert isinstance(bnn.conv2, BinaryConv2d) and not bnn.conv2.weight_scale and not bnn.conv2.input_scale
    shifted = papers.build_model("binarized_nn-lenet5_caffe-shift")
    assert isinstance(shifted.bn_conv2, ShiftBatchNorm)
    qnn = papers.build_model("qnn-lenet5_caffe-w2a2")
    assert isinstance(qnn.fc1, QuantLinear) and (qnn.fc1.weight_bits, qnn.fc1.input_bits) == (2, 2)


# -- the quantizers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_dorefa_k_bit_weights_take_2_to_the_k_levels_in_minus_one_to_one(bits):
    weight = torch.randn(64, 32, generator=torch.Generator().manual_seed(bits))
    values = torch.unique(dorefa_weight(weight, bits))
    assert values.numel() <= 1 << bits and float(values.min()) >= -1 and float(values.max()) <= 1
    layer = QuantConv2d(8, 4, 3, weight_bits=bits)
    quantized = layer.quantized_weight().detach().clone()
    layer.freeze()
    assert torch.allclose(layer.weight, quantized, atol=1e-6) and torch.equal(
        layer.quantized_weight(), layer.weight
    )


def test_qnn_k_bit_weights_are_codes_times_a_power_of_two_that_spans_the_layer():
    weight = torch.randn(50, 800, generator=torch.Generator().manual_seed(0)) * 0.05
    quantized = linear_weight(weight, 2)
    step = 2.0 ** torch.ceil(torch.log2(weight.abs().max())) / 2
    codes = quantized / step
    assert set(codes.unique().tolist()) == {-2.0, -1.0, 0.0, 1.0}  # 2-bit two's complement, all used
    assert torch.equal(codes, codes.round())


def test_one_bit_dorefa_weights_are_the_layers_mean_magnitude_times_the_sign():
    weight = torch.randn(10, 10, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(dorefa_weight(weight, 1), weight.abs().mean() * binarize(weight))


def test_dorefa_activations_are_clipped_to_zero_one_and_quantized_the_gradient_cancelled_outside():
    x = torch.tensor([-0.5, 0.1, 0.4, 0.6, 0.9, 1.5], requires_grad=True)
    out = dorefa_activation(x, 2)
    assert torch.allclose(out, torch.tensor([0.0, 0.0, 1 / 3, 2 / 3, 1.0, 1.0]))
    out.sum().backward()
    assert torch.equal(x.grad, torch.tensor([0.0, 1, 1, 1, 1, 0]))


def test_quantized_gradients_lie_on_each_instances_grid():
    x = torch.randn(4, 50, requires_grad=True, generator=torch.Generator().manual_seed(1))
    upstream = torch.randn(4, 50, generator=torch.Generator().manual_seed(2))
    torch.manual_seed(0)
    (quantize_gradient(x, 3) * upstream).sum().backward()
    largest = upstream.abs().amax(dim=1, keepdim=True)
    steps = (x.grad / (2 * largest) + 0.5) * 7
    assert torch.allclose(steps, steps.round(), atol=1e-4)
    assert (x.grad.abs() <= largest + 1e-6).all()


def test_shift_based_batch_norm_scales_by_powers_of_two():
    assert torch.equal(ap2(torch.tensor([0.3, -3.0, 5.0, 0.0])), torch.tensor([0.25, -4.0, 4.0, 0.0]))
    norm = ShiftBatchNorm(3).eval()
    norm.running_var.fill_(3.0)
    x = torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(norm(x), x * 0.5)  # 1 / sqrt(3) ≈ 0.577, whose nearest power of two is 1/2


# -- apply: training, then the quantized weights written ----------------------------------------------


def settings_of(variant: str, **changes):
    (step,) = variant_steps(variant)
    return step.settings.model_copy(update=changes)


def test_freezing_writes_alpha_sign_per_filter_which_the_layer_then_reproduces():
    model = papers.build_model("xnor_net-lenet5_caffe-xnor").eval()
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        before = model(x)
        freeze(model)
        after = model(x)
    weight = model.conv2.weight
    alpha = weight.abs().amax(dim=(1, 2, 3))
    assert torch.equal(weight.abs(), alpha.view(-1, 1, 1, 1).expand_as(weight))
    torch.testing.assert_close(before, after, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "variant", ["xnor_net-lenet5_caffe-xnor", "binarized_nn-lenet5_caffe-shift", "dorefa-lenet5_caffe-1-2-6"]
)
def test_a_training_step_with_the_quantizers_moves_the_latent_weights_and_stays_finite(variant, monkeypatch):
    images, labels = torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))
    monkeypatch.setattr(
        "papers_plugins.compression.pruning.training_split", lambda data, shape: (images, labels)
    )
    model = papers.build_model(variant)
    start = {name: p.detach().clone() for name, p in model.named_parameters()}
    context = MethodContext(flat=papers.expand_variant(variant), data="builtin:mnist5k")
    quantize_apply(model, settings_of(variant, epochs=1, batch_size=32), context)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert not torch.equal(start["conv2.weight"], model.conv2.weight)
    if isinstance(model.conv2, QuantConv2d):
        assert model.conv2.is_frozen() and torch.unique(model.conv2.weight).numel() == 2
    else:
        assert torch.unique(model.conv2.weight.abs().flatten(1), dim=1).shape[1] == 1


def test_compress_writes_binary_layers_at_one_bit_and_builds_them_back(tmp_path, run):
    result = run("compress", "xnor_net-lenet5_caffe-xnor", "--out", str(tmp_path), "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    encoding = json.loads(read_container(tmp_path / "model.safetensors")[1]["encoding"])
    assert (encoding["conv2.weight"]["kind"], encoding["conv2.weight"]["bits"]) == ("grid", 1)
    assert (encoding["fc1.weight"]["kind"], encoding["fc1.weight"]["bits"]) == ("grid", 1)
    # fc1's 400,000 weights go from 1.6 MB to 50 KB; conv1 and fc2 stay float.
    assert report["bytes_after"] < report["bytes_before"] / 15
    model = papers.load_compressed(tmp_path / "model.safetensors")
    assert isinstance(model.fc1, BinaryLinear) and model.fc1.kernel == "packed"


# -- static checks ------------------------------------------------------------------------------------


def test_the_static_checks_pass():
    for paper in ("xnor_net", "dorefa"):
        checks = papers.check(paper)  # the static checks only (no --run)
        measured = [c for c in checks if c.status != "not_measurable"]
        assert measured and all(c.status == "pass" for c in measured), [c.as_dict() for c in measured]


def test_the_binary_weights_memory_is_32_times_less_counting_signs_and_a_little_less_with_alpha():
    computed = static_measurements("xnor_net-lenet5_caffe-bwn")["compression_ratio"]
    weights, filters = 50 * 20 * 25 + 500 * 800, 50 + 500
    assert computed.high == 32 and computed.low == pytest.approx(32 * weights / (weights + 32 * filters))


# -- bad settings: one line, exit 2 ---------------------------------------------------------------------


def copied_spec(tmp_path: Path, paper: str, variant: str, settings: dict) -> Path:
    spec = yaml.safe_load((REPO / "specs" / "compression" / f"{paper}.yaml").read_text())
    spec["id"] = "lowbitcopy"
    spec["variants"] = [next(v for v in spec["variants"] if v["id"] == variant)]
    spec["variants"][0]["id"] = "lowbitcopy-lenet5_caffe"
    spec["variants"][0]["methods"][0]["settings"] = settings
    spec["results"] = []
    path = tmp_path / "lowbitcopy.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


DOREFA = ("dorefa", "dorefa-lenet5_caffe-1-2-6")
XNOR = ("xnor_net", "xnor_net-lenet5_caffe-xnor")


@pytest.mark.parametrize(
    ("paper", "settings", "field", "message"),
    [
        (
            DOREFA,
            {"weight_bits": 0, "activation_bits": 2},
            "settings.weight_bits",
            "greater than or equal to 1",
        ),
        (
            DOREFA,
            {"weight_bits": 1, "activation_bits": 33},
            "settings.activation_bits",
            "less than or equal to 32",
        ),
        (
            ("qnn", "qnn-lenet5_caffe-w2a2"),
            {"weight_bits": 40},
            "settings.weight_bits",
            "less than or equal to 32",
        ),
        (
            DOREFA,
            {"weight_bits": 1, "activation_bits": 2, "activations": ["conv1"]},
            "variants[0]",
            "names 'conv1', a conv2d layer, which has no activation",
        ),
        (
            XNOR,
            {"mode": "xnor", "layers": ["pool1"]},
            "variants[0]",
            "settings.layers names 'pool1', which is no",
        ),
        (XNOR, {"mode": "ternary"}, "settings.mode", "'bwn' or 'xnor'"),
    ],
)
def test_bad_settings_are_one_line_and_exit_2(paper, settings, field, message, tmp_path, monkeypatch, run):
    path = copied_spec(tmp_path, *paper, settings)
    monkeypatch.setattr(Registry, "discover", classmethod(lambda cls: registry_with(path)))
    monkeypatch.setattr(papers.registry, "_current", None)
    monkeypatch.chdir(tmp_path)
    result = run("compress", "lowbitcopy-lenet5_caffe", "--out", "out")
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("papers: error: ")
    assert str(path) in result.stderr and field in result.stderr and message in result.stderr
    assert not (tmp_path / "out").exists()


# -- the proxies -------------------------------------------------------------------------------------------


def test_the_proxy_path_trains_quantizes_writes_and_reads_back(monkeypatch):
    """A smoke of ``papers check xnor_net --run``: one float epoch and one quantized epoch on 256
    digits (the real run: 30 and 10 on 4,000)."""
    from papers_plugins.compression import pruning

    setup = pruning.proxy_setup
    monkeypatch.setattr(pruning, "proxy_setup", lambda v, m, data, limit: setup(v, m, data, limit=256))
    original = pruning.training_split
    monkeypatch.setattr(
        pruning, "training_split", lambda data, shape: tuple(t[:256] for t in original(data, shape))
    )
    steps = variant_steps("xnor_net-lenet5_caffe-bwn")
    monkeypatch.setattr(
        "papers.compression.variant_steps",
        lambda variant_id: [
            type(s)(s.method, s.settings.model_copy(update={"epochs": 1}), s.field, s.origin) for s in steps
        ],
    )
    measured = low_bit.quantization_proxy("xnor_net-lenet5_caffe-bwn", "binarize", epochs=1)
    assert 0 <= measured["metric_after"] <= 100 and 0 <= measured["metric_before"] <= 100
    assert measured["bytes_after"] < measured["bytes_before"] / 15
    (check,) = [
        c for c in papers.registry.get_registry().training_checks("xnor_net") if c.variant.endswith("-bwn")
    ]
    assert "within 1 point" in check.proxy and "not tuned" in check.proxy
