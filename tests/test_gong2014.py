"""Gong et al. 2014 (``gong2014``): ``VQLinear`` rebuilds its weight from codebooks and indices; the three
quantizers (k-means, product, residual) fill them from trained weights with scikit-learn's k-means;
the settings' compression ratio; the rewrite and its refusals; ``papers compress`` writes codebooks and
indices; a smoke of the proxy."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml

import papers
import papers.registry
from papers.api import expand_variant
from papers.compression import read_container
from papers.methods import static_measurements
from papers.registry import Registry
from papers_plugins.compression import vector_quantization
from papers_plugins.compression.vector_quantization import VQSettings, layer_bits, quantize_matrix
from papers_plugins.compression.vq_linear import VQLinear
from tests.conftest import REPO
from tests.test_han2015 import registry_with

SPEC = REPO / "specs" / "compression" / "gong2014.yaml"

pytestmark = pytest.mark.usefixtures("one_thread")


def filled(weight: torch.Tensor, **settings) -> VQLinear:
    """A ``VQLinear`` holding ``weight`` quantized as ``settings`` say."""
    chosen = VQSettings(**settings)
    out, inputs = weight.shape
    shape = vector_quantization.layout(chosen.kind, inputs, chosen.segment, chosen.stages)
    layer = VQLinear(inputs, out, clusters=chosen.clusters, bias=False, **shape)
    books, codes = quantize_matrix(weight, chosen)
    with torch.no_grad():
        layer.codebook.copy_(books.float())
    layer.set_indices(codes)
    return layer


# -- the layer and the quantizers ----------------------------------------------------------------------


def test_a_vq_linear_multiplies_by_the_weight_its_codes_pick():
    layer = VQLinear(6, 2, clusters=3, dim=2, groups=3, bias=False)
    with torch.no_grad():
        layer.codebook.copy_(torch.arange(18.0).view(1, 3, 3, 2))
    layer.set_indices(torch.tensor([[[0, 1, 2], [2, 2, 0]]]))
    # segment j's codebook holds rows 6j + 2c, 6j + 2c + 1
    expected = torch.tensor([[0.0, 1, 8, 9, 16, 17], [4, 5, 10, 11, 12, 13]])
    assert torch.equal(layer.dense_weight(), expected)
    assert torch.equal(layer(torch.eye(6)), expected.T)


def test_scalar_kmeans_keeps_at_most_k_values_and_reproduces_a_weight_of_k_values_exactly():
    values = torch.tensor([-0.5, 0.1, 0.3, 0.9])
    weight = values[torch.randint(0, 4, (20, 30), generator=torch.Generator().manual_seed(0))]
    layer = filled(weight, kind="kmeans", clusters=4)
    assert torch.equal(layer.dense_weight(), weight)
    noisy = filled(torch.randn(20, 30), kind="kmeans", clusters=8)
    assert torch.unique(noisy.dense_weight()).numel() <= 8


def test_product_quantization_has_k_pieces_per_segment_and_beats_kmeans_at_the_same_codebook():
    weight = torch.randn(64, 16, generator=torch.Generator().manual_seed(1))
    layer = filled(weight, kind="product", clusters=8, segment=4)
    rebuilt = layer.dense_weight().detach()
    for j in range(4):
        assert torch.unique(rebuilt[:, 4 * j : 4 * j + 4], dim=0).shape[0] <= 8
    error = float((rebuilt - weight).pow(2).mean())
    assert error < float(weight.pow(2).mean()), "closer than zero weights"


def test_residual_stages_each_reduce_the_error():
    weight = torch.randn(80, 12, generator=torch.Generator().manual_seed(2))
    rebuilt = [
        filled(weight, kind="residual", clusters=8, stages=t).dense_weight().detach() for t in (1, 2, 3)
    ]
    errors = [float((approximation - weight).pow(2).mean()) for approximation in rebuilt]
    assert errors[0] > errors[1] > errors[2]


def test_fewer_distinct_rows_than_clusters_are_each_their_own_centre():
    weight = torch.randn(3, 8).repeat(4, 1)  # 12 rows, 3 distinct
    layer = filled(weight, kind="residual", clusters=16)
    assert torch.allclose(layer.dense_weight(), weight)


# -- the settings ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        # k-means: every weight one index of log2 k bits, k scalar centres
        ({"kind": "kmeans", "clusters": 16}, 32 * 16 + 4 * 300 * 784),
        # product: 784/4 segments, each with k centres of 4 values, one index per row and segment
        ({"kind": "product", "clusters": 32, "segment": 4}, 32 * 32 * 784 + 5 * 300 * 196),
        # residual: t codebooks of k rows, t indices per row
        ({"kind": "residual", "clusters": 32, "stages": 2}, 2 * 32 * 32 * 784 + 2 * 5 * 300),
    ],
)
def test_the_bits_of_a_quantized_matrix_follow_from_the_settings(settings, expected):
    assert layer_bits(300, 784, VQSettings(**settings)) == expected


def test_the_static_compression_ratio_counts_the_other_parameters_at_32_bits():
    ratio = static_measurements("gong2014-lenet300_100-kmeans")["compression_ratio"]
    settings = VQSettings(kind="kmeans", clusters=16)
    shapes = [(300, 784), (100, 300), (10, 100)]
    weights = sum(o * i for o, i in shapes)
    biases = sum(o for o, _ in shapes)
    after = sum(layer_bits(o, i, settings) for o, i in shapes) + 32 * biases
    assert ratio == pytest.approx(32 * (weights + biases) / after)
    assert 32 / math.log2(16) * 0.95 < ratio < 32 / math.log2(16), "near 32 / log2 k, less the codebooks"


def test_the_rewrite_turns_the_named_layers_into_vq_linear():
    flat = expand_variant("gong2014-lenet300_100-pq")
    ops = {node.name: node.op for node in flat.nodes if node.name.startswith("fc")}
    assert ops == {"fc1": "vq_linear", "fc2": "vq_linear", "fc3": "linear"}
    assert dict(flat.node("fc1").args) == {
        "out_features": 300, "clusters": 32, "dim": 4, "groups": 196, "stages": 1,
    }  # fmt: skip


def test_compress_writes_codebooks_and_indices_and_reads_them_back(run, tmp_path):
    result = run("compress", "gong2014-lenet300_100-kmeans", "--out", str(tmp_path), "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["bytes_after"] < report["bytes_before"] / 3.5
    state, _ = read_container(tmp_path / "model.safetensors")
    assert state["fc1.codes"].dtype == torch.uint8 and state["fc1.codebook"].shape == (1, 1, 16, 1)
    assert state["fc1.codes"].numel() == 300 * 784 * 4 // 8, "4-bit indices, two to a byte"
    model = papers.load_compressed(tmp_path / "model.safetensors")
    assert isinstance(model.fc1, VQLinear)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # the fixed seed compress initialises the base from
        base = papers.build_model("lenet300_100")
    error = (model.fc1.dense_weight() - base.fc1.weight).abs().max()
    assert float(error) < float(base.fc1.weight.abs().max()) / 8, "the trained weights, quantized"


# -- bad settings: one line, exit 2 ------------------------------------------------------------------


def copied_spec(tmp_path: Path, settings: dict) -> Path:
    spec = yaml.safe_load(SPEC.read_text())
    spec["id"] = "vq"
    spec["variants"] = [spec["variants"][3]]
    spec["variants"][0]["id"] = "vq-lenet300_100"
    spec["variants"][0]["methods"][0]["settings"] = settings
    path = tmp_path / "vq.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.mark.parametrize(
    ("settings", "field", "message"),
    [
        ({"kind": "kmeans", "clusters": 1}, "settings.clusters", "greater than or equal to 2"),
        ({"kind": "kmeans", "clusters": 1 << 17}, "settings.clusters", "less than or equal to 65536"),
        ({"kind": "scalar", "clusters": 4}, "settings.kind", "'kmeans', 'product' or 'residual'"),
        ({"kind": "product", "clusters": 4, "segment": 5}, "variants[0]", "segment 5 does not divide fc1's"),
        ({"kind": "kmeans", "clusters": 4, "segment": 2}, "variants[0]", "segments are for kind: product"),
        ({"kind": "kmeans", "clusters": 4, "layers": ["fc9"]}, "variants[0]", "settings.layers[0] names"),
    ],
)
def test_bad_settings_are_one_line_and_exit_2(settings, field, message, tmp_path, monkeypatch, run):
    path = copied_spec(tmp_path, settings)
    monkeypatch.setattr(Registry, "discover", classmethod(lambda cls: registry_with(path)))
    monkeypatch.setattr(papers.registry, "_current", None)
    monkeypatch.chdir(tmp_path)
    result = run("compress", "vq-lenet300_100", "--out", "out")
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("papers: error: ")
    assert str(path) in result.stderr and field in result.stderr and message in result.stderr
    assert not (tmp_path / "out").exists()


def test_the_proxy_trains_quantizes_through_compress_and_reports_both_accuracies():
    measured = vector_quantization.vq_proxy(
        "gong2014-lenet300_100-pq", data="builtin:digits", epochs=1, limit=300, latency_runs=1
    )
    assert 0 <= measured["metric_after"] <= 100 and 0 <= measured["metric_before"] <= 100
    assert measured["bytes_after"] < measured["bytes_before"] / 2


@pytest.mark.parametrize("bits", [1, 3, 4, 5, 8, 12])
def test_indices_pack_at_their_bit_width_and_unpack_to_themselves(bits):
    from papers_plugins.compression.vq_linear import pack_indices, unpack_indices

    indices = torch.randint(0, 1 << bits, (37,), generator=torch.Generator().manual_seed(bits))
    packed = pack_indices(indices, bits)
    assert packed.dtype == torch.uint8 and packed.numel() == math.ceil(37 * bits / 8)
    assert torch.equal(unpack_indices(packed, 37, bits), indices)
