"""SegNet (arXiv 1511.00561): VGG-16's 13 convolutions with batch norm as the encoder, poolings that
keep their indices, a mirrored decoder unpooling at those indices; SegNet-Basic."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

import papers


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.mark.parametrize("variant", ["segnet_vgg16", "segnet_basic"])
@pytest.mark.parametrize("size", [(32, 32), (50, 37)])
def test_out_comes_at_the_input_size(variant, size):
    # odd sizes too: each unpooling restores the size of the map its encoder pooled
    torch.manual_seed(0)
    model = papers.build_model(variant, image_size=32, num_classes=5).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, *size))
    assert set(out) == {"out"} and out["out"].shape == (1, 5, *size)


def test_the_encoder_is_vgg16s_convolutions_and_the_decoder_mirrors_it():
    nodes = {node.name: node for node in papers.expand_variant("segnet_vgg16").nodes}
    encoder = [n for n in nodes.values() if n.name.startswith("encoder.") and n.op == "conv2d"]
    decoder = [n for n in nodes.values() if n.name.startswith("decoder.") and n.op == "conv2d"]
    assert [n.args["out_channels"] for n in encoder] == [64] * 2 + [128] * 2 + [256] * 3 + [512] * 6
    assert [n.args["out_channels"] for n in decoder] == [512] * 5 + [256, 256, 256, 128, 128, 64, 64, 64]
    assert not [n for n in nodes.values() if n.op == "linear"]  # no fully connected layers
    assert nodes["encoder.conv1_1_bn"].op == "batchnorm2d" and nodes["decoder.relu1_1_D"].op == "relu"
    for stage in range(1, 6):
        unpool = nodes[f"decoder.unpool{stage}"]
        assert unpool.op == "max_unpool_as" and unpool.inputs[1] == f"encoder.pool{stage}:indices"
        assert unpool.inputs[2] == f"encoder.relu{stage}_{[2, 2, 3, 3, 3][stage - 1]}"  # the pooled map
    assert nodes["classifier"].inputs == ("decoder.relu1_1_D",)


def test_segnet_basic_has_four_7x7_stages_without_biases_or_decoder_relu():
    nodes = list(papers.expand_variant("segnet_basic").nodes)
    convs = [n for n in nodes if n.op == "conv2d" and n.name != "classifier"]
    assert len(convs) == 8
    assert all(
        n.args["kernel_size"] == 7 and n.args["out_channels"] == 64 and not n.args["bias"] for n in convs
    )
    assert not [n for n in nodes if n.name.startswith("decoder.") and n.op == "relu"]
    assert len([n for n in nodes if n.op == "max_unpool_as"]) == 4


def test_the_decoder_unpools_at_the_encoders_indices():
    # a 4×4 map into SegNet-Basic's first pooling and last unpooling, by hand: each 2×2 window's
    # maximum goes back to where it was, everything else is zero
    model = papers.build_model("segnet_basic", raw=True, image_size=16, num_classes=2)
    x = torch.tensor([[1.0, 5.0, 2.0, 0.0], [3.0, 4.0, 7.0, 6.0], [9.0, 0.0, 1.0, 1.0], [2.0, 8.0, 0.0, 3.0]])
    pooled, indices = model.encoder.pool1(x[None, None])
    assert pooled[0, 0].tolist() == [[5.0, 7.0], [9.0, 3.0]]
    back = F.max_unpool2d(pooled, indices, 2, 2)[0, 0]
    expected = torch.tensor(
        [[0.0, 5.0, 0.0, 0.0], [0.0, 0.0, 7.0, 0.0], [9.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 3.0]]
    )
    assert torch.equal(back, expected)
    # in the built network, decoder.unpool1 puts its input back at encoder.pool1's indices
    values: dict = {}
    with torch.no_grad():
        _Recorder(model, values).run(torch.rand(1, 3, 16, 16))
    _, encoder_indices = F.max_pool2d(values["encoder.relu1_1"], 2, 2, return_indices=True)
    unpooled = values["decoder_unpool1"]
    assert torch.equal(unpooled, F.max_unpool2d(values["decoder.conv2_1_D_bn"], encoder_indices, 2, 2))
    assert (unpooled != 0).sum() == unpooled.numel() // 4  # one value per 2×2 window


class _Recorder(torch.fx.Interpreter):
    """Every node's output, by module name (a module's call) or node name (a function's)."""

    def __init__(self, module, values):
        super().__init__(module)
        self.values = values

    def run_node(self, n):
        result = super().run_node(n)
        self.values[n.target if n.op == "call_module" else n.name] = result
        return result


def test_static_checks_pass():
    checks = papers.check("segnet")
    assert checks and not [c for c in checks if c.status == "fail"]
    encoder = next(c for c in checks if c.scope == "node:encoder")
    assert encoder.status == "pass" and round(encoder.measured, 1) == 14.7


def test_the_full_size_network_builds_on_the_meta_device():
    model = papers.build_model("segnet_vgg16", device="meta")
    assert sum(p.numel() for p in model.parameters()) == papers.measure("segnet_vgg16").params
    out = model(torch.empty(1, 3, 224, 224, device="meta"))
    assert out["out"].shape == (1, 11, 224, 224)


def test_an_image_too_small_for_five_poolings_is_refused_with_its_name(tmp_path):
    from PIL import Image

    from papers.segment import segment

    path = tmp_path / "tiny.png"
    Image.new("RGB", (10, 10)).save(path)
    with pytest.raises(papers.PapersError, match=r"segnet_vgg16 cannot take this 10×10 image") as caught:
        segment("segnet_vgg16", [str(path)], out=str(tmp_path / "out"))
    assert caught.value.file == str(path)
