"""Tai et al. 2016 (``tai2016``): a d×d convolution as K vertical d×1 and horizontal 1×d filters, the
closed-form optimum (the truncated SVD of the rearranged kernel), exact at full rank with any stride and
padding; a batch normalisation between the two that starts as the identity and trains from scratch;
the compression ratio and speed-up from K alone; ``papers compress``; bad K refused in one line; a
smoke of the MNIST proxy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

import papers
import papers.registry
from papers.compression import read_container
from papers.methods import MethodContext, static_measurements, variant_steps
from papers.plugins import PluginInfo, PluginManager
from papers.registry import Registry
from papers_plugins.compression import low_rank
from papers_plugins.compression import vh_decomposition as vh
from papers_plugins.compression.vh_decomposition import VHSettings, decompose, vh_factors
from tests.conftest import REPO
from tests.test_methods import spec_plugin

SPEC = REPO / "specs" / "compression" / "tai2016.yaml"
VARIANT = "tai2016-lenet5_caffe"
NIN = "tai2016-nin_cifar10-bn"

pytestmark = pytest.mark.usefixtures("one_thread")


def seeded(variant: str = "lenet5_caffe") -> torch.nn.Module:
    """The base ``papers compress`` starts from without --weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return papers.build_model(variant).eval()


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / a.norm())


def split(x: torch.Tensor, vertical, horizontal, bias, stride, padding) -> torch.Tensor:
    """The vertical then the horizontal convolution, each with its own direction's stride and padding."""
    middle = F.conv2d(x, vertical, stride=(stride[0], 1), padding=(padding[0], 0))
    return F.conv2d(middle, horizontal, bias, stride=(1, stride[1]), padding=(0, padding[1]))


# -- the closed form -----------------------------------------------------------------------------------


@pytest.mark.parametrize("batch_norm", [False, True])
def test_at_full_rank_the_split_network_reproduces_the_original(batch_norm):
    model, flat = seeded(), papers.expand_variant("lenet5_caffe")
    full = VHSettings(ranks={"conv1": 5, "conv2": 100}, batch_norm=batch_norm)  # min(C·d, N·d)
    decomposed, rewritten = decompose(model, flat, full)
    images = torch.randn(8, 1, 28, 28)
    with torch.no_grad():
        assert relative(model(images), decomposed(images)) < 1e-5
    names = [node.name for node in rewritten.nodes][:3]
    assert names == (["conv1.v", "conv1.bn", "conv1.h"] if batch_norm else ["conv1.v", "conv1.h", "pool1"])


def test_a_strided_padded_rectangular_kernel_is_exact_at_full_rank():
    layer = torch.nn.Conv2d(6, 8, (3, 5), stride=(2, 3), padding=(1, 2)).double()
    vertical, horizontal = vh_factors(layer.weight, min(6 * 3, 8 * 5))
    assert vertical.shape == (18, 6, 3, 1) and horizontal.shape == (8, 18, 1, 5)
    x = torch.randn(2, 6, 11, 13, dtype=torch.float64)
    with torch.no_grad():
        assert relative(layer(x), split(x, vertical, horizontal, layer.bias, (2, 3), (1, 2))) < 1e-12


@pytest.mark.parametrize("rank", [1, 3, 7])
def test_the_closed_form_error_is_the_tail_of_the_rearranged_kernels_singular_values(rank):
    weight = torch.randn(9, 4, 3, 3, dtype=torch.float64)  # N, C, d, d
    rearranged = torch.zeros(4 * 3, 9 * 3, dtype=torch.float64)  # [(c, i), (n, j)], built element by element
    for n in range(9):
        for c in range(4):
            for i in range(3):
                for j in range(3):
                    rearranged[c * 3 + i, n * 3 + j] = weight[n, c, i, j]
    tail = torch.linalg.svdvals(rearranged)[rank:]
    vertical, horizontal = vh_factors(weight, rank)
    approximation = torch.einsum("kci,nkj->ncij", vertical[..., 0], horizontal[:, :, 0, :])
    assert float((weight - approximation).norm()) == pytest.approx(float(tail.norm()))


def test_the_chain_computes_the_approximated_kernels_convolution():
    weight = torch.randn(6, 5, 5, 5, dtype=torch.float64)
    vertical, horizontal = vh_factors(weight, 4)
    approximation = torch.einsum("kci,nkj->ncij", vertical[..., 0], horizontal[:, :, 0, :])
    x = torch.randn(1, 5, 12, 12, dtype=torch.float64)
    assert torch.allclose(
        split(x, vertical, horizontal, None, (1, 1), (2, 2)), F.conv2d(x, approximation, padding=2)
    )


# -- static: the rewrite and its measurements -------------------------------------------------------------


def test_the_variants_counts_are_measured_on_the_split_graph():
    layers = {layer.name: layer for layer in papers.measure(VARIANT).layers}
    assert layers["conv2.v"].params == 12 * 20 * 5 and layers["conv2.h"].params == 50 * 12 * 5 + 50
    assert layers["conv2.v"].output_shape == [1, 12, 8, 12], "the vertical layer keeps every column"
    assert layers["conv2.h"].macs == 50 * 12 * 5 * 8 * 8


@pytest.mark.parametrize("variant", [VARIANT, NIN])
def test_the_ratio_and_speed_up_from_k_are_the_base_over_the_split(variant):
    base = papers.measure(papers.registry.get_registry().variant(variant)[1].base)
    after, computed = papers.measure(variant), static_measurements(variant)
    assert computed["compression_ratio"] == pytest.approx(base.params / after.params)
    assert computed["speedup"] == pytest.approx(base.macs / after.macs)


def test_the_nin_variants_k_halves_each_split_layers_multiply_adds():
    base = {layer.name: layer.macs for layer in papers.measure("nin_cifar10").layers}
    after = {layer.name: layer.macs for layer in papers.measure(NIN).layers}
    for name in ("conv2", "conv3"):
        assert after[f"{name}.v"] + after[f"{name}.h"] == pytest.approx(base[name] / 2, rel=0.01), name


def test_the_batch_normalised_low_rank_nin_trains_from_scratch():
    model = seeded(NIN).train()
    assert isinstance(model.get_submodule("conv2.bn"), torch.nn.BatchNorm2d)
    before = model.get_submodule("conv2.v").weight.detach().clone()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = F.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    optimizer.step()
    assert not torch.equal(model.get_submodule("conv2.v").weight, before)
    assert model.get_submodule("conv2.bn").num_batches_tracked == 1


def test_with_data_apply_fine_tunes_the_whole_network_after_the_closed_form():
    model, flat = seeded(), papers.expand_variant("lenet5_caffe")
    settings = VHSettings(ranks={"conv1": 4, "conv2": 12}, fine_tune_epochs=1, batch_size=256)
    closed_form, rewritten = decompose(model, flat, settings)
    tuned = papers.build_model(VARIANT).eval()
    low_rank.copy_unchanged(model, tuned)
    vh.vh_apply(tuned, settings, MethodContext(rewritten, data="builtin:digits", before=model))
    for name in ("conv2.v", "conv2.h", "fc1"):
        assert not torch.equal(tuned.get_submodule(name).weight, closed_form.get_submodule(name).weight), name


def test_the_low_rank_nin_has_a_recipe_to_train_it_from_scratch(run):
    result = run("train", NIN, "--data", "builtin:digits", "--epochs", "1", "--dry-run")
    assert result.exit_code == 0, result.stderr
    assert '"lr": 0.01' in result.stdout and '"batch_size": 128' in result.stdout


# -- papers compress ---------------------------------------------------------------------------------------


def test_compress_writes_the_factors_of_the_base_and_reads_them_back(run, tmp_path):
    result = run("compress", VARIANT, "--out", str(tmp_path), "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["macs_after"] == papers.measure(VARIANT).macs < report["macs_before"]
    state, _ = read_container(tmp_path / "model.safetensors")
    (step,) = variant_steps(VARIANT)
    expected, _ = decompose(seeded(), papers.expand_variant("lenet5_caffe"), step.settings)
    assert state.keys() == expected.state_dict().keys()
    assert all(torch.allclose(state[k], v, atol=1e-6) for k, v in expected.state_dict().items())


# -- bad K: one line, exit 2 ---------------------------------------------------------------------------------


def copied_spec(tmp_path: Path, settings: dict) -> Path:
    """tai2016's LeNet variant as another paper's (``vh``), with ``settings``."""
    spec = yaml.safe_load(SPEC.read_text())
    spec["id"] = "vh"
    spec.pop("recipes")  # the NIN variant's, which the copy leaves out
    spec["variants"] = [v for v in spec["variants"] if v["id"] == VARIANT]
    spec["variants"][0]["id"] = "vh-lenet5_caffe"
    spec["variants"][0]["methods"][0]["settings"] = settings
    path = tmp_path / "vh.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def registry_with(path: Path) -> Registry:
    manager = PluginManager()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PAPERS_PLUGINS", "")
        manager.load_entry_points()
    manager.register(spec_plugin(path), PluginInfo("copy", "copy-dist", "1", "tests"))
    return Registry(manager)


@pytest.mark.parametrize(
    ("settings", "field", "message"),
    [
        ({"ranks": {"conv2": 101}}, "settings.ranks.conv2", "rank 101 is above the layer's limit of 100"),
        (
            {"ranks": {"conv1": 6}},
            "settings.ranks.conv1",
            "limit of 5 (conv1: min(C·kh, N·kw) = min(1·5, 20·5))",
        ),
        ({"ranks": {"conv2": 0}}, "settings.ranks.conv2", "greater than or equal to 1"),
        ({"ranks": {"fc1": 4}}, "settings.ranks.fc1", "'fc1' is no convolution"),
        ({"ranks": {}}, "settings.ranks", "nothing would be decomposed"),
        ({"ranks": {"conv2": 4}, "batch_norm": "yes"}, "settings.batch_norm", "valid boolean"),
    ],
)
def test_bad_k_is_one_line_naming_the_field_and_exit_2(settings, field, message, tmp_path, monkeypatch, run):
    path = copied_spec(tmp_path, settings)
    monkeypatch.setattr(Registry, "discover", classmethod(lambda cls: registry_with(path)))
    monkeypatch.setattr(papers.registry, "_current", None)
    monkeypatch.chdir(tmp_path)
    result = run("compress", "vh-lenet5_caffe", "--out", "out")
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("papers: error: ")
    assert str(path) in result.stderr and field in result.stderr and message in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_1x1_convolution_has_no_vertical_and_horizontal_parts():
    with pytest.raises(papers.errors.SpecError) as refused:
        vh.vh_rewrite(papers.expand_variant("nin_cifar10"), VHSettings(ranks={"cccp1": 4}))
    assert refused.value.field == "settings.ranks.cccp1" and "1×1 convolution" in refused.value.message


# -- the proxy on MNIST digits -----------------------------------------------------------------------------


def test_the_proxy_trains_splits_at_the_variants_k_and_fine_tunes():
    measured = vh.vh_proxy(epochs=1, fine_tune_epochs=1, limit=200)
    assert measured["settings"].ranks == {"conv1": 4, "conv2": 12}
    assert measured["macs_after"] == papers.measure(VARIANT).macs < measured["macs_before"]
    assert all(0 <= measured[k] <= 100 for k in ("before", "decomposed", "after"))
