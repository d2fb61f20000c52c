"""Q-CNN (``qcnn``): lookup-table layers give what their dense weights give; k-means starts the
sub-codebooks; the response fit (fully connected and convolution, the latter's sub-codebooks shared by
its kernel positions) lowers the response error and error correction fits on the quantized inputs; the
rewrite, the settings' compression ratio and the refusals. Speed is measured in
``benchmarks/qcnn_lookup.py``, never here."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import papers
from papers.api import expand_variant
from papers.build import build
from papers.errors import SpecError
from papers.methods import MethodContext, static_measurements
from papers.registry import get_registry
from papers_plugins.compression import qcnn_method as qm
from papers_plugins.compression.qcnn_layers import QConv2d, QLinear

pytestmark = pytest.mark.usefixtures("one_thread")


def filled(layer: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        layer.codebooks.copy_(torch.randn(layer.codebooks.shape, generator=generator))
        layer.bias.copy_(torch.randn(layer.bias.shape, generator=generator))
    layer.set_indices(torch.randint(0, layer.codewords, layer.index_shape, generator=generator))
    return layer.eval()


def test_the_linear_lookup_tables_give_the_dense_product():
    layer = filled(QLinear(12, 5, dim=3, codewords=4))
    inputs = torch.randn(7, 12)
    with torch.inference_mode():
        got = layer(inputs)
    torch.testing.assert_close(got, F.linear(inputs, layer.dense_weight().detach(), layer.bias.detach()))


@pytest.mark.parametrize(
    ("kernel", "stride", "padding"), [(3, 1, 1), (3, 2, 1), (5, 1, 0), ((3, 5), (2, 1), (1, 2))]
)
def test_the_convolution_lookup_tables_give_the_convolution(kernel, stride, padding):
    conv = filled(QConv2d(6, 5, kernel, stride, padding, dim=2, codewords=4))
    image = torch.randn(2, 6, 9, 8)
    with torch.inference_mode():
        got = conv(image)
    expected = F.conv2d(image, conv.dense_weight().detach(), conv.bias.detach(), conv.stride, conv.padding)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_a_conv_sub_codebook_is_shared_by_the_kernel_positions():
    conv = filled(QConv2d(4, 3, 3, dim=2, codewords=5))
    kernel = conv.dense_weight().detach()  # out × in × 3 × 3
    pieces = kernel[:, 0:2].permute(0, 2, 3, 1).reshape(-1, 2)  # subspace 0 at every position
    assert torch.unique(pieces, dim=0).shape[0] <= 5


def test_kmeans_reproduces_a_weight_made_of_few_sub_vectors():
    codewords = torch.randn(3, 2)
    weight = codewords[torch.randint(0, 3, (40, 5), generator=torch.Generator().manual_seed(1))].reshape(
        40, 10
    )
    books, assignments = qm.kmeans_init(weight, dim=2, codewords=4)
    layer = QLinear(10, 40, dim=2, codewords=4, bias=False)
    with torch.no_grad():
        layer.codebooks.copy_(books.float())
    layer.set_indices(assignments)
    torch.testing.assert_close(layer.dense_weight().detach(), weight)


def test_the_response_fit_lowers_the_response_error():
    generator = torch.Generator().manual_seed(2)
    weight = torch.randn(30, 16, generator=generator)
    inputs = torch.randn(400, 16, generator=generator) @ torch.randn(16, 16, generator=generator)
    targets = inputs @ weight.T
    books, assignments = qm.kmeans_init(weight, dim=4, codewords=4)

    def error(b: torch.Tensor, a: torch.Tensor) -> float:
        rebuilt = b[torch.arange(4).unsqueeze(1), a].permute(1, 0, 2).reshape(30, 16)
        return float((inputs.double() @ rebuilt.T.double() - targets.double()).pow(2).mean())

    fitted = qm.fit_responses(inputs, targets, books, assignments, iterations=3)
    assert error(*fitted) < 0.8 * error(books, assignments)


def correlated_conv(seed: int = 0) -> tuple[torch.nn.Conv2d, torch.Tensor]:
    """A 3 × 3 convolution of 8 channels to 12 and inputs whose channels mix three sources (the
    correlation a response fit can use and k-means of the weights cannot see)."""
    generator = torch.Generator().manual_seed(seed)
    conv = torch.nn.Conv2d(8, 12, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator))
    mixing = torch.randn(8, 3, generator=generator) @ torch.randn(3, 8, generator=generator)
    images = torch.einsum("dc,nchw->ndhw", mixing, torch.randn(30, 8, 9, 9, generator=generator))
    return conv, images


def kernel_from(books: torch.Tensor, assignments: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """The kernel the sub-codebooks and per-position assignments stand for, written out slice by slice."""
    _, channels, height, width = shape
    dim = books.shape[2]
    kernel = torch.empty(shape, dtype=books.dtype)
    for position in range(height * width):
        for subspace in range(channels // dim):
            words = books[subspace][assignments[position, subspace]]  # out × dim
            kernel[:, subspace * dim : (subspace + 1) * dim, position // width, position % width] = words
    return kernel


def test_the_convolution_response_fit_lowers_its_response_error_below_kmeans():
    conv, images = correlated_conv()
    books, assignments = qm.kmeans_init(conv.weight, dim=2, codewords=4)
    inputs, targets = qm._response_rows(conv, images, images, 800, torch.Generator().manual_seed(0))
    assert inputs.shape == (800, 9, 8) and targets.shape == (800, 12)
    fitted = qm.fit_responses(inputs, targets, books, assignments, iterations=3)
    assert fitted[1].shape == assignments.shape == (9, 4, 12)
    expected = F.conv2d(images.double(), conv.weight.detach().double(), padding=1)

    def error(b: torch.Tensor, a: torch.Tensor) -> float:  # on every output, not only the sampled rows
        rebuilt = F.conv2d(images.double(), kernel_from(b, a, tuple(conv.weight.shape)), padding=1)
        return float((rebuilt - expected).pow(2).mean())

    assert error(*fitted) < 0.5 * error(books, assignments)


def test_a_fitted_convolution_run_by_lookup_tables_is_the_convolution_of_its_codewords():
    conv, images = correlated_conv(1)
    books, assignments = qm.kmeans_init(conv.weight, dim=2, codewords=4)
    inputs, targets = qm._response_rows(conv, images, images, 400, torch.Generator().manual_seed(0))
    books, assignments = qm.fit_responses(inputs, targets, books, assignments, iterations=2)
    layer = QConv2d(8, 12, 3, 1, 1, dim=2, codewords=4, bias=False).eval()
    with torch.no_grad():
        layer.codebooks.copy_(books.float())
    layer.set_indices(assignments)
    with torch.inference_mode():
        got = layer(images)
    expected = F.conv2d(images, kernel_from(books, assignments, (12, 8, 3, 3)).float(), padding=1)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_the_method_fits_a_convolution_on_its_receptive_fields():
    flat0 = expand_variant("lenet5_caffe")
    settings = qm.QCNNSettings(dim=4, codewords=8, layers=["conv2"], iterations=1, images=16, samples=300)
    flat = qm.rewrite(flat0, settings)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        trained = papers.build_model("lenet5_caffe").eval()
    model = build(flat, get_registry().catalogue).eval()
    qm.qcnn_quantize(model, settings, MethodContext(flat=flat, data=None, before=trained))
    start = model.conv2.dense_weight().detach()
    assert torch.equal(model.conv2.bias, trained.conv2.bias)
    qm.qcnn_quantize(model, settings, MethodContext(flat=flat, data="builtin:digits", before=trained))
    assert not torch.equal(model.conv2.dense_weight().detach(), start), "fitted to the responses"


def test_the_method_quantizes_from_the_trained_weights_and_fits_with_error_correction():
    flat0 = expand_variant("lenet300_100")
    settings = qm.QCNNSettings(dim=4, codewords=8, layers=["fc1", "fc2"], iterations=1, images=64, samples=64)
    flat = qm.rewrite(flat0, settings)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        trained = papers.build_model("lenet300_100").eval()
    model = build(flat, get_registry().catalogue).eval()
    qm.qcnn_quantize(model, settings, MethodContext(flat=flat, data=None, before=trained))
    start = model.fc1.dense_weight().detach()
    assert float((start - trained.fc1.weight).norm() / trained.fc1.weight.norm()) < 0.7
    assert torch.equal(model.fc1.bias, trained.fc1.bias)
    qm.qcnn_quantize(model, settings, MethodContext(flat=flat, data="builtin:digits", before=trained))
    assert not torch.equal(model.fc1.dense_weight().detach(), start), "fitted to the responses"


def test_the_rewrite_and_the_settings_compression_ratio():
    flat = expand_variant("qcnn-lenet5_caffe")
    assert {n.name: n.op for n in flat.nodes if n.name in ("conv1", "conv2", "fc1", "fc2")} == {
        "conv1": "conv2d", "conv2": "qcnn_conv2d", "fc1": "qcnn_linear", "fc2": "qcnn_linear",
    }  # fmt: skip
    total = 431_080
    weights = 50 * 20 * 25 + 500 * 800 + 10 * 500
    quantized = (
        qm.layer_bits(50, 20, 25, 4, 32)
        + qm.layer_bits(500, 800, 1, 4, 32)
        + qm.layer_bits(10, 500, 1, 4, 32)
    )
    after = 32 * (total - weights) + quantized
    assert static_measurements("qcnn-lenet5_caffe")["compression_ratio"] == pytest.approx(32 * total / after)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"dim": 3, "codewords": 8, "layers": ["fc1"]}, "settings.dim 3 does not divide fc1's 800 inputs"),
        ({"dim": 4, "codewords": 8, "layers": ["pool1"]}, "settings.layers[0] names 'pool1'"),
    ],
)
def test_settings_the_graph_cannot_take_are_refused(settings, message):
    with pytest.raises(SpecError, match=message.replace("[", r"\[").replace("]", r"\]")):
        qm.rewrite(expand_variant("lenet5_caffe"), qm.QCNNSettings(**settings))


@pytest.mark.parametrize(("field", "value"), [("codewords", 1), ("codewords", 257), ("dim", 0)])
def test_bad_numbers_are_refused_naming_the_setting(field, value):
    with pytest.raises(ValueError, match=field):
        qm.QCNNSettings(**{"dim": 4, "codewords": 8, field: value})
