"""Lin et al. 2017 (``separable_filters``): every filter used is a rank-one ±1 pattern that matches the
sign pattern it approximates where that is already separable; the layer is a Conv2d whose latent
weights learn through the straight-through gradient; the rewrite and the bits per weight; a smoke of
the proxy."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import papers
from papers.api import expand_variant
from papers.errors import SpecError
from papers.methods import static_measurements
from papers_plugins.compression import separable_binary as sb
from papers_plugins.compression import separable_binary_layers as layers

pytestmark = pytest.mark.usefixtures("one_thread")


def test_each_filter_becomes_a_rank_one_pattern_of_plus_and_minus_one():
    filters = layers.separable_binary(torch.randn(6, 4, 5, 5, generator=torch.Generator().manual_seed(0)))
    assert set(filters.unique().tolist()) == {-1.0, 1.0}
    ranks = torch.linalg.matrix_rank(filters.reshape(-1, 5, 5))
    assert bool((ranks == 1).all())


def test_a_sign_pattern_that_is_already_separable_is_kept():
    column, row = torch.tensor([1.0, -1, 1]), torch.tensor([-1.0, -1, 1])
    weight = (column.outer(row) * torch.rand(3, 3)).view(1, 1, 3, 3)
    assert torch.equal(layers.separable_binary(weight), torch.sign(weight))


def test_the_layer_convolves_with_scaled_separable_filters_and_learns_its_latent_weights():
    conv = layers.SeparableBinaryConv2d(3, 4, 3, padding=1)
    image = torch.randn(2, 3, 8, 8)
    alpha = conv.weight.detach().abs().mean(dim=(1, 2, 3), keepdim=True)
    expected = F.conv2d(image, layers.separable_binary(conv.weight.detach()) * alpha, conv.bias, padding=1)
    output = conv(image)
    torch.testing.assert_close(output, expected)
    output.sum().backward()
    assert conv.weight.grad is not None and float(conv.weight.grad.abs().sum()) > 0
    assert isinstance(conv, torch.nn.Conv2d) and set(conv.state_dict()) == {"weight", "bias"}


def test_the_rewrite_and_the_bits_per_weight():
    flat = expand_variant("separable_filters-lenet5_caffe")
    assert {n.name: n.op for n in flat.nodes if n.name.startswith("conv")} == {
        "conv1": "sf_binary_conv2d", "conv2": "sf_binary_conv2d",
    }  # fmt: skip
    assert static_measurements("separable_filters-lenet5_caffe")["bits_per_weight"] == pytest.approx(10 / 25)
    built = papers.build_model("separable_filters-lenet5_caffe")
    assert isinstance(built.conv2, layers.SeparableBinaryConv2d)


def test_a_layer_that_is_no_convolution_is_refused():
    with pytest.raises(SpecError, match=r"settings.layers\[0\] names 'fc1', which is no convolution"):
        sb.rewrite(expand_variant("lenet5_caffe"), sb.SFSettings(layers=["fc1"]))


def test_the_proxy_trains_both_networks_and_reports_both_accuracies():
    measured = sb.sf_proxy(data="builtin:digits", epochs=1, limit=200)
    assert 0 <= measured["base"] <= 100 and 0 <= measured["separable"] <= 100
    assert measured["rank"] == 1
