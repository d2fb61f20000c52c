"""Low-bit weights stored at their bit width (the container's ``grid`` encoding) and the bit-packed
binary convolution (XNOR and popcount) that equals ``F.conv2d`` on ±1 tensors."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from papers.compression import ContainerError, decode_state, encode_state, read_container, stored_bytes
from papers.errors import PapersError
from papers_plugins.compression.binary import (
    BinaryConv2d,
    BinaryLinear,
    binarize,
    binary_conv2d,
    binary_linear,
    pack_signs,
    popcount,
    popcount_swar,
    sign_ste,
    unpack_signs,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def round_trip(tensor: torch.Tensor) -> tuple[dict, dict]:
    tensors, encoding = encode_state({"w": tensor})
    decoded = decode_state(tensors, json.loads(json.dumps(encoding)))
    assert decoded["w"].dtype == tensor.dtype and torch.equal(decoded["w"], tensor)
    return tensors, encoding["w"]


def gaussian(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# -- the grid encoding -------------------------------------------------------------------------------


def test_binary_weights_with_a_scale_per_filter_take_one_bit_and_a_float_per_filter():
    weight = gaussian(64, 32, 3, 3)
    binary = weight.abs().mean(dim=(1, 2, 3), keepdim=True) * binarize(weight)
    tensors, described = round_trip(binary)
    assert described["kind"] == "grid" and described["bits"] == 1 and described["levels"] == "odd"
    assert tensors["w#scales"].shape == (64,)
    assert tensors["w#codes"].numel() == 64 * 32 * 9 // 8
    assert stored_bytes(described, tensors) == 64 * 4 + 64 * 32 * 9 // 8


def test_int8_weights_with_a_scale_per_output_channel_take_eight_bits():
    weight = gaussian(50, 800, seed=1)
    scale = weight.abs().amax(dim=1, keepdim=True) / 127
    quantized = torch.round(weight / scale).clamp(-127, 127) * scale
    tensors, described = round_trip(quantized)
    assert (described["kind"], described["bits"], described["levels"]) == ("grid", 8, "signed")
    assert tensors["w#codes"].numel() == 50 * 800


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_k_bit_odd_levels_with_a_scale_per_row_take_k_bits(bits):
    levels = (1 << bits) - 1
    codes = (
        2 * torch.randint(0, levels + 1, (40, 300), generator=torch.Generator().manual_seed(bits)) - levels
    )
    scales = torch.rand(40, 1, generator=torch.Generator().manual_seed(9)) / levels
    _, described = round_trip(codes.float() * scales)
    assert (described["kind"], described["bits"], described["levels"]) == ("grid", bits, "odd")


def test_values_no_grid_reproduces_exactly_are_not_taken_as_one():
    weight = gaussian(16, 100, seed=2)
    _, described = round_trip(weight)
    assert described["kind"] == "dense"
    # A grid that is off by a little in one value of one row is no grid: stored some other way.
    scale = weight.abs().amax(dim=1, keepdim=True) / 127
    quantized = torch.round(weight / scale) * scale
    quantized[3, 7] = torch.nextafter(quantized[3, 7], torch.tensor(10.0))
    _, described = round_trip(quantized)
    assert described["kind"] != "grid"


@settings(max_examples=30, deadline=None)
@given(
    st.integers(1, 12),
    st.integers(2, 200),
    st.integers(1, 9),
    st.sampled_from([torch.float32, torch.float64]),
    st.booleans(),
)
def test_every_grid_round_trips_exactly(rows, columns, bits, dtype, odd):
    generator = torch.Generator().manual_seed(rows * 1000 + columns * 10 + bits)
    high = (1 << bits) - 1
    if odd:
        codes = 2 * torch.randint(0, high + 1, (rows, columns), generator=generator) - high
    else:
        codes = torch.randint(-(1 << (bits - 1)), 1 << (bits - 1), (rows, columns), generator=generator)
    scales = torch.rand(rows, 1, generator=generator, dtype=torch.float64).to(dtype) + 0.01
    round_trip(codes.to(dtype) * scales)


def test_a_packed_tensor_whose_length_is_not_its_headers_is_refused_naming_file_and_tensor(tmp_path):
    weight = gaussian(8, 64)
    tensors, encoding = encode_state({"conv.weight": weight.abs().mean(1, keepdim=True) * binarize(weight)})
    assert encoding["conv.weight"]["kind"] == "grid"
    tensors["conv.weight#codes"] = tensors["conv.weight#codes"][:-1].clone()
    path = tmp_path / "cut.safetensors"
    save_file(tensors, str(path), metadata={"format": "papers.compressed", "encoding": json.dumps(encoding)})
    with pytest.raises(ContainerError) as refused:
        read_container(path)
    message = str(refused.value)
    assert isinstance(refused.value, PapersError) and "\n" not in message
    assert str(path) in message and "conv.weight#codes" in message and "63 bytes" in message


# -- the binary kernel ----------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(
    st.integers(1, 3),
    st.integers(1, 140),
    st.integers(1, 9),
    st.integers(1, 5),
    st.integers(1, 3),
    st.integers(0, 2),
    st.integers(5, 11),
)
def test_the_packed_convolution_equals_conv2d_on_plus_minus_one_tensors(n, cin, cout, k, stride, pad, size):
    generator = torch.Generator().manual_seed(n * 7 + cin * 13 + cout + k + stride + pad + size)
    x = binarize(torch.randn(n, cin, size, size, generator=generator))
    w = binarize(torch.randn(cout, cin, k, k, generator=generator))
    expected = F.conv2d(x, w, stride=stride, padding=pad)
    out = binary_conv2d(pack_signs(x), pack_signs(w), (k, k), (stride, stride), (pad, pad))
    assert out.dtype == torch.int32 and torch.equal(out.float(), expected)


@pytest.mark.parametrize("features", [5, 64, 200])
def test_the_packed_product_equals_matmul_on_plus_minus_one_matrices(features):
    x, w = binarize(gaussian(6, features)), binarize(gaussian(11, features, seed=3))
    assert torch.equal(binary_linear(pack_signs(x, -1), pack_signs(w, -1)).float(), x @ w.T)


def test_packing_keeps_every_sign_and_takes_a_bit_a_weight():
    weight = gaussian(128, 256, 3, 3)
    packed = pack_signs(weight)
    assert torch.equal(unpack_signs(packed), binarize(weight))
    assert weight.numel() * 4 / packed.nbytes == 32


def test_both_popcounts_count_the_bits_of_each_word():
    words = torch.randint(-(2**62), 2**62, (500,), generator=torch.Generator().manual_seed(4))
    expected = torch.tensor([bin(int(w) & (2**64 - 1)).count("1") for w in words])
    assert torch.equal(popcount_swar(words), expected)
    assert torch.equal(popcount(words).view(500, 8).sum(-1).long(), expected)


@pytest.mark.parametrize("groups", [1, 2])
def test_a_binary_layer_gives_the_same_numbers_with_the_packed_kernel_and_in_float(groups):
    layer = BinaryConv2d(8, 6, 3, padding=1, stride=2, groups=groups).eval()
    x = gaussian(2, 8, 9, 9)
    with torch.no_grad():
        packed = layer(x)
        layer.kernel = "float"
        floating = layer(x)
    torch.testing.assert_close(packed, floating, rtol=1e-6, atol=1e-6)
    linear = BinaryLinear(70, 4).eval()
    x = gaussian(3, 70)
    with torch.no_grad():
        packed = linear(x)
        linear.kernel = "float"
        torch.testing.assert_close(packed, linear(x), rtol=1e-6, atol=1e-6)


def test_xnor_scales_the_counts_by_alpha_per_filter_and_k_per_position():
    layer = BinaryConv2d(4, 3, 3, padding=1, bias=False).eval()
    x = gaussian(1, 4, 6, 6)
    alpha = layer.weight.abs().mean(dim=(1, 2, 3)).view(1, -1, 1, 1)
    k = F.avg_pool2d(x.abs().mean(1, keepdim=True), 3, 1, 1, count_include_pad=True)
    expected = F.conv2d(binarize(x), binarize(layer.weight), padding=1) * alpha * k
    with torch.no_grad():
        torch.testing.assert_close(layer(x), expected)


def test_the_straight_through_estimator_cancels_the_gradient_where_the_input_exceeds_one():
    x = torch.tensor([-2.0, -1.0, -0.3, 0.0, 0.5, 1.0, 1.5], requires_grad=True)
    sign_ste(x).sum().backward()
    assert torch.equal(sign_ste(x.detach()), torch.tensor([-1.0, -1, -1, 1, 1, 1, 1]))
    assert torch.equal(x.grad, torch.tensor([0.0, 1, 1, 1, 1, 1, 0]))


@pytest.mark.slow  # compiles the C++ extension on first use (30 to 100 s)
@pytest.mark.parametrize(("cin", "k", "stride", "pad"), [(3, 3, 1, 1), (20, 5, 1, 0), (130, 3, 2, 2)])
def test_the_native_kernel_equals_conv2d_on_plus_minus_one_tensors(cin, k, stride, pad):
    x, w = binarize(gaussian(2, cin, 11, 9)), binarize(gaussian(7, cin, k, k, seed=5))
    out = binary_conv2d(pack_signs(x), pack_signs(w), (k, k), (stride, stride), (pad, pad), backend="native")
    assert torch.equal(out.float(), F.conv2d(x, w, stride=stride, padding=pad))
    x, w = binarize(gaussian(4, cin)), binarize(gaussian(6, cin, seed=6))
    assert torch.equal(binary_linear(pack_signs(x, -1), pack_signs(w, -1), backend="native").float(), x @ w.T)


def test_an_unknown_backend_or_kernel_is_refused():
    signs = pack_signs(binarize(gaussian(1, 4, 5, 5)))
    with pytest.raises(ValueError, match="backend is one of torch, native, not 'gpu'"):
        binary_conv2d(signs, pack_signs(binarize(gaussian(2, 4, 3, 3))), (3, 3), backend="gpu")
    with pytest.raises(ValueError, match="kernel is one of packed, native, float"):
        BinaryConv2d(4, 2, 3, kernel="fast")


def test_inference_reuses_the_binarized_weights_until_they_change():
    layer = BinaryConv2d(4, 3, 3, bias=False).eval()
    x = gaussian(1, 4, 6, 6)
    with torch.no_grad():
        first = layer(x)
        assert layer.packed_weight() is layer.packed_weight()
        layer.weight.neg_()
        assert torch.equal(layer(x), -first)
