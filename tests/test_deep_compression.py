"""Deep Compression (Han, Mao and Dally 2016): trained quantization as a method, the container's
Huffman coding, the spec's static numbers, and ``papers compress`` on its variants."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import papers
from papers import compression
from papers.compression import ContainerError, decode_state, encode_state, read_container, stored_bytes
from papers.methods import MethodContext, variant_steps
from papers.registry import Registry, get_registry
from papers_plugins.compression.pruning import training_split
from papers_plugins.compression.quantization import (
    QuantizeSettings,
    centroid_gradients,
    finetune_centroids,
    kept_weight_bits,
    linear_init,
    quantize,
    share_weights,
)
from tests.test_compress import REPORT_KEYS, compressed, seeded_base
from tests.test_methods import compression_spec, demo_manager, method_variant, spec_plugin, write

pytestmark = pytest.mark.usefixtures("one_thread")

VARIANT = "deep_compression-lenet300_100"


# -- weight sharing --------------------------------------------------------------------------------


def test_linear_initialisation_spans_the_weights_from_min_to_max_evenly():
    values = np.array([0.3, -1.5, 0.2, 2.5, -0.1])
    init = linear_init(values, 5)
    assert init[0] == -1.5 and init[-1] == 2.5
    assert np.allclose(np.diff(init), 1.0)


def test_kmeans_starts_from_the_linear_initialisation(monkeypatch):
    import sklearn.cluster

    seen = {}
    real = sklearn.cluster.KMeans

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(sklearn.cluster, "KMeans", spy)
    weight = torch.linspace(-1.0, 3.0, 200).reshape(20, 10)
    share_weights(weight, 2)
    assert seen["n_clusters"] == 4
    assert seen["init"].reshape(-1).tolist() == pytest.approx([-1.0, 1 / 3, 5 / 3, 3.0], abs=1e-12)


def test_quantized_layers_hold_at_most_2_to_the_bits_values_and_pruned_weights_stay_zero():
    model = seeded_base("lenet300_100")
    with torch.no_grad():
        model.fc1.weight[model.fc1.weight.abs() < 0.03] = 0
    zeros = {name: model.get_submodule(name).weight == 0 for name in ("fc1", "fc2")}
    quantize(model, {"fc1": 3, "fc2": 2})
    for name, bits in (("fc1", 3), ("fc2", 2)):
        weight = model.get_submodule(name).weight
        assert torch.unique(weight[weight != 0]).numel() <= 2**bits
        assert torch.equal(weight == 0, zeros[name])
    assert zeros["fc1"].float().mean() > 0.5  # the test prunes most of fc1


def test_centroid_gradient_is_the_sum_of_the_gradients_of_the_weights_that_share_it():
    grad = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    labels = torch.tensor([[0, 1, -1], [0, 2, 1]])
    assert centroid_gradients(grad, labels, 3).tolist() == [5.0, 8.0, 5.0]


def test_fine_tuning_moves_each_centroid_by_the_rate_times_its_summed_gradient():
    layer = torch.nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.5, 0.0, -0.5], [-0.5, 0.5, 0.0]]))
    model = torch.nn.Sequential(layer)
    model[0].weight.requires_grad_(True)
    shared = quantize(model, {"0": 1})
    assert shared["0"].centroids.tolist() == [-0.5, 0.5]
    images, labels = torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([1])
    weight = model[0].weight.detach().clone().requires_grad_(True)
    torch.nn.functional.cross_entropy(images @ weight.T, labels).backward()
    g = weight.grad
    expected = [-0.5 - 0.1 * float(g[0, 2] + g[1, 0]), 0.5 - 0.1 * float(g[0, 0] + g[1, 1])]
    settings = QuantizeSettings(bits={"0": 1}, lr=0.1, momentum=0.0)
    tuned = finetune_centroids(model, shared, lambda: iter([(images, labels)]), settings, "cpu", epochs=1)
    assert tuned["0"].centroids.tolist() == pytest.approx(expected, abs=1e-7)
    after = model[0].weight.detach().reshape(-1).tolist()
    assert after == pytest.approx([expected[1], 0.0, expected[0], expected[0], expected[1], 0.0], abs=1e-7)
    assert expected[0] != -0.5 and expected[1] != 0.5  # both centroids moved


# -- Huffman coding in the container ---------------------------------------------------------------


def skewed_sparse(rows: int = 200, columns: int = 300, seed: int = 0) -> torch.Tensor:
    """A pruned (about 10% kept) and quantized (64 values, most near the middle) weight matrix."""
    generator = torch.Generator().manual_seed(seed)
    weight = torch.zeros(rows, columns)
    kept = torch.rand(rows, columns, generator=generator) < 0.1
    levels = torch.linspace(-0.25, 0.25, 64)
    picks = (torch.randn(int(kept.sum()), generator=generator) * 6 + 32).round().clamp(0, 63).long()
    weight[kept] = levels[picks]
    return weight


def test_huffman_coding_round_trips_exactly_and_beats_fixed_width_indices():
    weight = skewed_sparse()
    tensors, encoding = encode_state({"w": weight})
    described = encoding["w"]
    assert described["kind"] == "huffman" and described["bits"] == 5
    decoded = decode_state(tensors, json.loads(json.dumps(encoding)))
    assert torch.equal(decoded["w"], weight)
    entries, book = described["entries"], tensors["w#codebook"].numel()
    fixed_indices = entries * int(np.ceil(np.log2(book))) / 8
    assert tensors["w#indices"].numel() < 0.85 * fixed_indices
    assert tensors["w#gaps"].numel() < entries * 5 / 8
    assert stored_bytes(described, tensors) < 0.6 * entries * 4  # below the kept float values alone


def test_a_convolution_of_256_shared_values_and_filler_zeros_is_huffman_coded():
    generator = torch.Generator().manual_seed(3)
    weight = torch.zeros(64, 64, 3, 3)
    kept = torch.rand(weight.shape, generator=generator) < 0.1
    kept.view(-1)[1000:2000] = False  # a gap longer than 8 bits of relative index bridge: filler zeros
    picks = (torch.randn(int(kept.sum()), generator=generator) * 25 + 128).round().clamp(0, 255).long()
    picks[:256] = torch.arange(256)  # every one of the 256 values is used
    weight[kept] = torch.linspace(-0.5, 0.5, 256)[picks]
    tensors, encoding = encode_state({"w": weight})
    assert encoding["w"]["kind"] == "huffman" and encoding["w"]["bits"] == 8
    assert tensors["w#codebook"].numel() == 257  # 256 values and the fillers' zero
    assert torch.equal(decode_state(tensors, encoding)["w"], weight)


@given(
    st.integers(1, 40),
    st.integers(1, 300),
    st.floats(0.001, 1),
    st.integers(1, 256),
    st.sampled_from([torch.float32, torch.float16, torch.float64]),
)
def test_every_huffman_coded_tensor_decodes_exactly(rows, columns, density, levels, dtype):
    generator = torch.Generator().manual_seed(rows * 1000 + columns + levels)
    values = torch.randn(levels, generator=generator).to(dtype)
    tensor = values[torch.randint(0, levels, (rows, columns), generator=generator)]
    tensor[torch.rand(rows, columns, generator=generator) > density] = 0
    flat = tensor.reshape(-1)
    mask = flat != 0
    if not mask.any():
        return
    header = {"shape": [rows, columns], "dtype": str(dtype).removeprefix("torch.")}
    planned = compression._huffman("t", mask, flat[mask], 5, header)
    assert planned is not None
    stored, described = planned[1]()
    decoded = decode_state(stored, json.loads(json.dumps({"t": described})))
    assert decoded["t"].dtype == dtype and torch.equal(decoded["t"], tensor)


def written(tmp_path, state):
    path = tmp_path / "m.safetensors"
    papers.compression.write_container(path, state, {"variant": VARIANT})
    return path


def metadata_of(path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as handle:
        return handle.metadata()


def test_a_corrupted_huffman_stream_is_refused_naming_the_bytes(tmp_path):
    path = written(tmp_path, {"w": skewed_sparse(400, 400)})
    tensors = load_file(str(path))
    assert tensors["w#indices"].numel() > 8192
    tensors["w#indices"][5000] ^= 0x10
    save_file(tensors, str(path), metadata=metadata_of(path))
    with pytest.raises(
        ContainerError, match=r"damaged: ValueError: w#indices: bytes 4096-\d+ are damaged"
    ) as e:
        read_container(path)
    assert "\n" not in str(e.value)


def test_a_cut_stream_or_a_cut_file_is_refused(tmp_path):
    path = written(tmp_path, {"w": skewed_sparse()})
    tensors = load_file(str(path))
    size = tensors["w#gaps"].numel()
    tensors["w#gaps"] = tensors["w#gaps"][:-3].clone()
    save_file(tensors, str(tmp_path / "cut.safetensors"), metadata=metadata_of(path))
    with pytest.raises(ContainerError, match=f"w#gaps: {size - 3} bytes, {size} were written"):
        read_container(tmp_path / "cut.safetensors")
    (tmp_path / "short.safetensors").write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ContainerError, match="cannot read"):
        read_container(tmp_path / "short.safetensors")


def test_damaged_code_lengths_never_decode_into_other_weights(tmp_path):
    path = written(tmp_path, {"w": skewed_sparse()})
    metadata = metadata_of(path)
    encoding = json.loads(metadata["encoding"])
    lengths = encoding["w"]["indices_code"]["lengths"]  # lengths[0] is the end symbol's
    short, long = lengths.index(min(n for n in lengths[1:] if n), 1), lengths.index(max(lengths[1:]), 1)
    assert lengths[short] < lengths[long]
    lengths[short], lengths[long] = lengths[long], lengths[short]  # a prefix code still: it decodes
    metadata["encoding"] = json.dumps(encoding)
    save_file(load_file(str(path)), str(path), metadata=metadata)
    with pytest.raises(
        ContainerError, match=r"decodes to (other symbols than|[0-9]+ symbols, [0-9]+) were coded"
    ):
        read_container(path)


# -- the spec ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "variant", ["lenet300_100", "lenet5_caffe", "alexnet", "vgg16"], ids=lambda v: f"deep_compression-{v}"
)
def test_the_settings_give_the_papers_mean_bits_of_a_kept_weight(variant):
    variant_id = f"deep_compression-{variant}"
    spec = papers.get_spec(variant_id)
    (reported,) = [r for r in spec.results if r.variant == variant_id and r.metric == "bits_per_weight"]
    prune, quantized = (step.settings for step in variant_steps(variant_id))
    computed = kept_weight_bits(papers.expand_variant(variant), prune, quantized)
    assert abs(computed - reported.value) <= papers.checks.default_tolerance(reported.value)


def test_no_ratio_is_checked_from_the_settings_once_huffman_coding_decides_it():
    checks = papers.check("deep_compression")
    ratios = [c for c in checks if c.metric == "compression_ratio"]
    assert len(ratios) == 8 and {c.status for c in ratios} == {"not_measurable"}
    assert not [c for c in checks if c.status == "fail"]


@pytest.mark.parametrize(
    ("bits", "message"), [(0, "greater than or equal to 1"), (9, "less than or equal to 8")]
)
def test_bits_below_one_or_above_eight_are_refused_in_one_line_with_exit_2(bits, message, tmp_path, run):
    quantized = {"name": "kmeans_quantize", "settings": {"bits": {"fc1": bits}}}
    path = write(tmp_path, compression_spec(method_variant("lenet300_100", quantized)))
    result = run("validate", str(path))
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert "variants[0].methods[0].settings.bits.fc1" in result.stderr and message in result.stderr


def test_a_layer_the_base_lacks_is_refused(tmp_path, run):
    quantized = {"name": "kmeans_quantize", "settings": {"bits": {"fc9": 4}}}
    path = write(tmp_path, compression_spec(method_variant("lenet300_100", quantized)))
    result = run("validate", str(path))
    assert result.exit_code == 2 and "settings.bits names 'fc9'" in result.stderr


# -- papers compress -------------------------------------------------------------------------------


def test_the_written_file_decodes_to_the_pruned_and_quantized_weights(run, tmp_path):
    report = compressed(run, VARIANT, "--out", str(tmp_path))
    expected = seeded_base("lenet300_100")
    flat = papers.expand_variant("lenet300_100")
    for step in variant_steps(VARIANT):
        expected = step.method.apply(expected, step.settings, MethodContext(flat))
    state, metadata = read_container(tmp_path / "model.safetensors")
    assert state.keys() == expected.state_dict().keys()
    assert all(torch.equal(state[k], v) for k, v in expected.state_dict().items())
    kinds = {k: v["kind"] for k, v in json.loads(metadata["encoding"]).items()}
    assert kinds["fc1.weight"] == kinds["fc2.weight"] == "huffman"
    assert report["bytes_after"] == (tmp_path / "model.safetensors").stat().st_size
    assert report["compression_ratio"] > 25
    assert torch.unique(state["fc1.weight"]).numel() <= 2**6 + 1


def test_user_weights_run_through_the_pipeline_and_report_the_same_keys(run, tmp_path):
    generator = torch.Generator().manual_seed(1)
    shapes = {k: v.shape for k, v in seeded_base("lenet300_100").state_dict().items()}
    weights = tmp_path / "random.safetensors"
    save_file({k: 0.05 * torch.randn(s, generator=generator) for k, s in shapes.items()}, str(weights))
    given = compressed(run, VARIANT, "--weights", str(weights), "--out", str(tmp_path / "given"))
    seeded = compressed(run, VARIANT, "--out", str(tmp_path / "seeded"))
    assert set(given) == set(seeded) and set(given) >= REPORT_KEYS
    assert given["bytes_after"] != seeded["bytes_after"]  # other weights, another file
    assert given["weights"] == str(weights) and given["nonzero_after"] < 0.1 * given["params_after"]
    state, _ = read_container(tmp_path / "given" / "model.safetensors")
    base = load_file(str(tmp_path / "given" / "base.safetensors"))
    assert torch.equal(base["fc1.weight"], load_file(str(weights))["fc1.weight"])
    kept = state["fc1.weight"] != 0
    assert torch.unique(state["fc1.weight"][kept]).numel() <= 64


def test_the_method_is_registered_with_its_paper():
    registry = get_registry()
    assert registry.methods["kmeans_quantize"][0].startswith("deep_compression")
    assert {c.variant for c in registry.training_checks("deep_compression")} == {
        "deep_compression-lenet300_100",
        "deep_compression-lenet5_caffe",
    }


def test_with_data_the_centroids_are_fine_tuned_and_top1_reads_the_bases_logits(tmp_path, monkeypatch, run):
    model = seeded_base("lenet300_100").train()
    images, labels = training_split("builtin:digits", (1, 28, 28))  # loads in a blink, unlike mnist5k
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        for batch in torch.randperm(len(labels), generator=generator).split(50):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(images[batch]), labels[batch]).backward()
            optimizer.step()
    weights = tmp_path / "trained.safetensors"
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(weights))
    quantized = {"name": "kmeans_quantize", "settings": {"fc_bits": 2, "finetune_epochs": 1, "lr": 1.0e-3}}
    path = write(tmp_path, compression_spec(method_variant("lenet300_100", quantized)))
    monkeypatch.setattr(
        Registry, "discover", classmethod(lambda cls: cls(demo_manager(("shrink", spec_plugin(path)))))
    )
    monkeypatch.setattr(papers.registry, "_current", None)
    args = ("--weights", str(weights), "--data", "builtin:digits")
    tuned = compressed(run, "shrink-lenet300_100", *args, "--out", str(tmp_path / "tuned"))
    assert tuned["metric_before"] > 80  # LeNet-300-100's logits, not LeNet-5's RBF penalties
    state, _ = read_container(tmp_path / "tuned" / "model.safetensors")
    untuned = dict(load_file(str(weights)))
    reference = seeded_base("lenet300_100")
    reference.load_state_dict(untuned)
    quantize(reference, {"fc1": 2, "fc2": 2, "fc3": 2})
    assert torch.unique(state["fc1.weight"]).numel() <= 4
    assert not torch.equal(state["fc1.weight"], reference.fc1.weight.detach())  # the centroids moved
    assert torch.equal(state["fc1.weight"] == 0, reference.fc1.weight == 0)


@pytest.mark.parametrize(("after", "status"), [(97.2, "pass"), (96.4, "fail")])
def test_the_proxy_check_passes_within_a_point_and_prints_the_files_ratio(after, status, monkeypatch, capsys):
    from papers_plugins.compression import quantization as deep_compression

    measured = {
        "metric_before": 97.5,
        "metric_after": after,
        "bytes_before": 1_724_920,
        "bytes_after": 55_899,
        "compression_ratio": 30.8578,
    }
    monkeypatch.setattr(deep_compression, "compression_proxy", lambda variant_id: measured)
    checks = papers.check("deep_compression-lenet5_caffe", run=True, progress=True)
    (proxy,) = [c for c in checks if c.proxy is not None]
    assert proxy.status == status and proxy.metric == "error" and proxy.reported == 0.74
    assert proxy.measured == pytest.approx(100 - after)
    assert "1,724,920 → 55,899 bytes on disk, 30.8578×" in capsys.readouterr().err
