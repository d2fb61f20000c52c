"""Darknet's files: a .cfg read into a spec graph, .weights loaded into it, refusals that name the
file, the line and the byte; the tests write their own small .cfg and .weights."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner
from torch.nn import functional as F

from papers.cli import cli
from papers.darknet import darknet_model, import_cfg, weight_layers
from papers.errors import PapersError
from papers.layers import darknet_reorg

# Every kind of layer the importer reads: convolutions with and without batch norm, Darknet's padded
# max pooling (2/2 and 2/1), a shortcut, reorg, routes of one and two layers, upsampling, two YOLO heads.
TINY = """
[net]
batch=1
width=32
height=32
channels=3

[convolutional]
batch_normalize=1
filters=8
size=3
stride=1
pad=1
activation=leaky

[maxpool]
size=2
stride=2

[convolutional]
batch_normalize=1
filters=16
size=3
stride=1
pad=1
activation=leaky

[convolutional]
filters=16
size=1
stride=1
pad=1
activation=linear

[shortcut]
from=-2
activation=linear

[maxpool]
size=2
stride=1

[reorg]
stride=2

[route]
layers=-1

[convolutional]
size=1
stride=1
pad=1
filters=18
activation=linear

[yolo]
mask = 3,4,5
anchors = 10,14,  23,27,  37,58,  81,82,  135,169,  344,319
classes=1
num=6

[route]
layers = -4

[upsample]
stride=2

[route]
layers = -1, 3

[convolutional]
size=1
stride=1
pad=1
filters=18
activation=logistic

[yolo]
mask = 0,1,2
anchors = 10,14,  23,27,  37,58,  81,82,  135,169,  344,319
classes=1
num=6
"""

CLASSIFIER = """
[net]
width=16
height=16
channels=1

[convolutional]
filters=4
size=3
stride=2
pad=1
activation=relu

[connected]
output=6
batch_normalize=1
activation=leaky

[dropout]
probability=.5

[connected]
output=3
activation=linear

[softmax]
groups=1

[cost]
"""


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    return one_thread


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.cfg"
    path.write_text(TINY)
    return path


def _weights_file(path, arrays, *, minor: int = 2) -> None:
    """Darknet's layout: major, minor, revision, images seen (8 bytes from 0.2, else 4), float32s."""
    header = struct.pack("<3i", 0, minor, 0) + (
        struct.pack("<q", 64000) if minor >= 2 else struct.pack("<i", 64)
    )
    path.write_bytes(header + b"".join(np.asarray(a, dtype="<f4").tobytes() for a in arrays))


def _darknet_arrays(rng) -> tuple[list[np.ndarray], dict[str, np.ndarray]]:
    """Random tensors for TINY's four convolutions in file order, and where each must land."""
    arrays, expected = [], {}
    # (layer, filters, in channels, size, batch norm) as TINY declares them
    for index, filters, channels, size, norm in [
        (0, 8, 3, 3, True),
        (2, 16, 8, 3, True),
        (3, 16, 16, 1, False),
        (8, 18, 64, 1, False),
        (13, 18, 80, 1, False),
    ]:
        prefix = f"layer{index}"
        if norm:
            beta, gamma = rng.normal(size=filters), rng.normal(size=filters)
            mean, var = rng.normal(size=filters), rng.uniform(0.5, 2, size=filters)
            arrays += [beta, gamma, mean, var]
            expected |= {f"{prefix}.bn.bias": beta, f"{prefix}.bn.weight": gamma}
            expected |= {f"{prefix}.bn.running_mean": mean, f"{prefix}.bn.running_var": var}
        else:
            bias = rng.normal(size=filters)
            arrays.append(bias)
            expected[f"{prefix}.conv.bias"] = bias
        weight = rng.normal(size=(filters, channels, size, size))
        arrays.append(weight.ravel())
        expected[f"{prefix}.conv.weight"] = weight
    return arrays, expected


def test_a_cfg_becomes_a_spec_that_validates_and_builds_to_darknets_shapes(tiny, tmp_path):
    spec = import_cfg(tiny)
    assert spec["id"] == "tiny" and spec["topics"] == ["detection"]
    graph = spec["graphs"]["darknet"]
    assert graph["inputs"] == {"image": [3, 32, 32]}
    assert graph["params"]["yolo9_mask"] == [3, 4, 5] and len(graph["params"]["yolo9_anchors"]) == 12
    out = tmp_path / "tiny.yaml"
    made = CliRunner().invoke(cli, ["import", "darknet", str(tiny), "--out", str(out)])
    assert made.exit_code == 0, made.output
    assert CliRunner().invoke(cli, ["validate", str(out)]).exit_code == 0
    model = darknet_model(tiny)
    with torch.no_grad():
        heads = model(torch.randn(2, 3, 32, 32))
    # 32 → pool 2/2 → 16; pool 2/1 keeps 16; reorg → 8 (64 channels); upsample → 16, cat with layer 3
    assert heads.yolo9.shape == (2, 18, 8, 8) and heads.yolo14.shape == (2, 18, 16, 16)
    assert model.layer8.conv.bias is not None and model.layer0.conv.bias is None  # bias only without bn


def test_darknet_weights_land_in_their_layers_and_give_darknets_arithmetic(tiny, tmp_path):
    rng = np.random.default_rng(0)
    arrays, expected = _darknet_arrays(rng)
    for minor in (2, 1):  # the images-seen field is 8 bytes from version 0.2, 4 before
        file = tmp_path / f"tiny{minor}.weights"
        _weights_file(file, arrays, minor=minor)
        model = darknet_model(tiny, file)
        state = model.state_dict()
        for key, value in expected.items():
            assert torch.equal(
                state[key], torch.tensor(value, dtype=torch.float32).reshape(state[key].shape)
            ), key
    # layer 0 by hand: conv (no bias), Darknet's batch norm, leaky 0.1
    x = torch.randn(1, 3, 32, 32)
    e = {k: torch.tensor(v, dtype=torch.float32) for k, v in expected.items()}
    conv = F.conv2d(x, e["layer0.conv.weight"], padding=1)
    shape = (1, -1, 1, 1)
    normed = (conv - e["layer0.bn.running_mean"].view(shape)) / torch.sqrt(
        e["layer0.bn.running_var"].view(shape) + 1e-5
    ) * e["layer0.bn.weight"].view(shape) + e["layer0.bn.bias"].view(shape)
    with torch.no_grad():
        layer = model.layer0
        assert torch.allclose(layer.act(layer.bn(layer.conv(x))), F.leaky_relu(normed, 0.1), atol=1e-5)


def test_papers_import_writes_the_weights_beside_the_spec(tiny, tmp_path):
    arrays, expected = _darknet_arrays(np.random.default_rng(1))
    weights = tmp_path / "tiny.weights"
    _weights_file(weights, arrays)
    out = tmp_path / "spec" / "tiny.yaml"
    out.parent.mkdir()
    made = CliRunner().invoke(
        cli, ["import", "darknet", str(tiny), "--out", str(out), "--weights", str(weights)]
    )
    assert made.exit_code == 0, made.output
    from safetensors.torch import load_file

    written = load_file(str(out.with_suffix(".safetensors")))
    assert set(written) == set(expected)
    assert np.allclose(written["layer13.conv.weight"].numpy(), expected["layer13.conv.weight"])


@pytest.mark.parametrize("cut", ["short", "long"])
def test_a_weights_file_for_another_cfg_is_refused_with_the_byte(tiny, tmp_path, cut):
    arrays, _ = _darknet_arrays(np.random.default_rng(2))
    arrays = arrays[:-1] if cut == "short" else [*arrays, np.zeros(3)]
    weights = tmp_path / "bad.weights"
    _weights_file(weights, arrays)
    out = tmp_path / "tiny.yaml"
    made = CliRunner().invoke(
        cli, ["import", "darknet", str(tiny), "--out", str(out), "--weights", str(weights)]
    )
    assert made.exit_code == 2
    (line,) = made.output.strip().splitlines()
    assert str(weights) in line and "byte" in line
    assert ("truncated" in line and "layer13.conv.weight" in line) if cut == "short" else "remain" in line
    assert not out.exists() and not out.with_suffix(".safetensors").exists()


def test_a_classifier_cfg_reads_connected_layers_with_batch_norm_and_a_softmax(tmp_path):
    cfg = tmp_path / "small-net.cfg"
    cfg.write_text(CLASSIFIER)
    spec = import_cfg(cfg)
    assert spec["id"] == "small-net" and spec["topics"] == ["classification"]
    rng = np.random.default_rng(3)
    conv_b, conv_w = rng.normal(size=4), rng.normal(size=(4, 1, 3, 3))
    fc1_b, fc1_w = rng.normal(size=6), rng.normal(size=(6, 4 * 8 * 8))
    scales, mean, var = rng.normal(size=6), rng.normal(size=6), rng.uniform(0.5, 2, size=6)
    fc2_b, fc2_w = rng.normal(size=3), rng.normal(size=(3, 6))
    weights = tmp_path / "small.weights"
    _weights_file(
        weights, [conv_b, conv_w.ravel(), fc1_b, fc1_w.ravel(), scales, mean, var, fc2_b, fc2_w.ravel()]
    )
    model = darknet_model(cfg, weights)
    assert torch.allclose(model.layer1.bn.running_var, torch.tensor(var, dtype=torch.float32))
    with torch.no_grad():
        probabilities = model(torch.randn(2, 1, 16, 16))
    assert probabilities.shape == (2, 3) and torch.allclose(probabilities.sum(1), torch.ones(2))


def test_darknets_reorg_is_its_c_loop():
    """reorg_cpu(x, w, h, c, batch, stride, forward=0, out) as forward_reorg_layer calls it, with the
    input's sizes, transcribed loop by loop."""
    batch, c, h, w, stride = 2, 8, 4, 6, 2
    x = np.arange(batch * c * h * w, dtype=np.float32)
    out = np.zeros_like(x)
    out_c = c // (stride * stride)
    for b in range(batch):
        for k in range(c):
            for j in range(h):
                for i in range(w):
                    in_index = i + w * (j + h * (k + c * b))
                    c2, offset = k % out_c, k // out_c
                    w2, h2 = i * stride + offset % stride, j * stride + offset // stride
                    out_index = w2 + w * stride * (h2 + h * stride * (c2 + out_c * b))
                    out[in_index] = x[out_index]
    made = darknet_reorg(torch.from_numpy(x).reshape(batch, c, h, w), stride)
    assert made.shape == (batch, c * 4, h // 2, w // 2)
    assert np.array_equal(made.numpy().ravel(), out)
    assert not torch.equal(made, F.pixel_unshuffle(torch.from_numpy(x).reshape(batch, c, h, w), 2))


@pytest.mark.parametrize(("size", "stride"), [(2, 2), (2, 1), (3, 1), (3, 2)])
def test_max_pooling_pads_as_darknet_does(tmp_path, size, stride):
    cfg = tmp_path / "pool.cfg"
    cfg.write_text(f"[net]\nwidth=7\nheight=7\nchannels=2\n\n[maxpool]\nsize={size}\nstride={stride}\n")
    x = torch.randn(1, 2, 7, 7)
    pad = size - 1
    darknet = F.max_pool2d(F.pad(x, [pad // 2, pad - pad // 2] * 2, value=float("-inf")), size, stride)
    with torch.no_grad():
        assert torch.equal(darknet_model(cfg)(x), darknet)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[convolutional]\nfilters=4\n", "begins with a [net] section"),
        ("[net]\nwidth=8\nheight=8\n\n[local]\nfilters=4\n", "[local] at line 5: layers of kind [local]"),
        ("[net]\nwidth=8\nheight=8\n\n[convolutional]\nfilters=x\n", "`filters` must be an integer"),
        ("[net]\nwidth=8\nheight=8\n\n[convolutional]\nfilters=4\nactivation=mish\n", "activation 'mish'"),
        ("[net]\nwidth=8\nheight=8\n\n[route]\nlayers=-3\n", "not an earlier layer"),
        ("[net]\nwidth=8\nheight=8\nthis is no option\n", "line 4: expected [section] or key=value"),
        ("[net]\nwidth=8\nheight=8\n\n[yolo]\nanchors=10,14,23\n", "are width, height pairs: 3 numbers"),
        ("[net]\nwidth=8\nheight=8\n\n[yolo]\nmask=0,3\nanchors=10,14,23,27\n", "beyond the 2 pairs"),
    ],
)
def test_a_bad_cfg_is_one_line_naming_the_file_and_nothing_is_written(tmp_path, text, message):
    cfg = tmp_path / "bad.cfg"
    cfg.write_text(text)
    out = tmp_path / "bad.yaml"
    made = CliRunner().invoke(cli, ["import", "darknet", str(cfg), "--out", str(out)])
    assert made.exit_code == 2
    (line,) = made.output.strip().splitlines()
    assert str(cfg) in line and message in line
    assert not out.exists()
    with pytest.raises(PapersError, match=message.replace("[", r"\[").replace("]", r"\]")):
        import_cfg(cfg)


def test_the_written_spec_is_plain_yaml_with_the_darknet_citation(tiny, tmp_path):
    out = tmp_path / "tiny.yaml"
    assert (
        CliRunner()
        .invoke(cli, ["import", "darknet", str(tiny), "--out", str(out), "--id", "my-yolo"])
        .exit_code
        == 0
    )
    written = yaml.safe_load(out.read_text())
    assert written["id"] == "my-yolo" and written["variants"][0]["id"] == "my-yolo"
    assert written["citation"]["url"] == "https://pjreddie.com/darknet/"
    assert json.loads(json.dumps(written)) == written  # nothing YAML-only (no tags, no infinities)
    assert [layer.index for layer in weight_layers(tiny)] == [0, 2, 3, 8, 13]
