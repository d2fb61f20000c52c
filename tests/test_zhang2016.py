"""Zhang et al. 2016 (``zhang2016``): the "3D" decomposition, d″ vertical k×1 filters, d′ horizontal 1×k
ones and a 1×1 layer back to d: exact at full ranks; the channel fit from the spatial pair's responses
absorbs the pair's error; a layer without d″ decomposed as ``channel_decompose`` does; the ratio and
speed-up from d′ and d″; the d″ for a speed-up; ``papers compress``; bad d″ refused in one line; a
smoke of the MNIST proxy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

import papers
import papers.registry
from papers.build import build
from papers.compression import read_container
from papers.measure import measure_graph
from papers.methods import MethodContext, static_measurements, variant_steps
from papers.registry import Registry, get_registry
from papers_plugins.compression import channel_decomposition_3d as zhang3d
from papers_plugins.compression import low_rank
from papers_plugins.compression.channel_decomposition import ChannelSettings
from papers_plugins.compression.channel_decomposition_3d import Channel3DSettings
from tests.conftest import REPO
from tests.test_han2015 import registry_with
from tests.test_zhang2015 import decomposed as decomposed_2d
from tests.test_zhang2015 import relative, seeded

SPEC = REPO / "specs" / "compression" / "zhang2016.yaml"
VARIANT = "zhang2016-lenet5_caffe"
DATA = "builtin:mnist5k"

pytestmark = pytest.mark.usefixtures("one_thread")


def decomposed(model, settings, data=None):
    flat = papers.expand_variant("lenet5_caffe")
    rewritten = zhang3d.channel_3d_rewrite(flat, settings)
    new = build(rewritten, get_registry().catalogue).eval()
    low_rank.copy_unchanged(model, new)
    zhang3d.channel_3d_apply(new, settings, MethodContext(rewritten, data=data, before=model))
    return new


def held_out_digits() -> torch.Tensor:
    """Training digits the fits (the first 300) did not sample."""
    from papers_plugins.compression.channel_decomposition import training_images

    return training_images(DATA, (1, 28, 28))[1000:1300]


# -- the decomposition ---------------------------------------------------------------------------------


@pytest.mark.parametrize("data", [None, DATA])
def test_at_full_ranks_the_3d_decomposed_network_reproduces_the_original(data):
    model = seeded()
    full = Channel3DSettings(
        ranks={"conv1": 20, "conv2": 50}, spatial_ranks={"conv1": 5, "conv2": 100}, images=100
    )
    new = decomposed(model, full, data)
    assert new.get_submodule("conv2.reduce.v").weight.shape == (100, 20, 5, 1)
    assert new.get_submodule("conv2.reduce.h").weight.shape == (50, 100, 1, 5)
    images = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        assert relative(model(images), new(images)) < 1e-5


def test_the_channel_fit_from_the_pairs_responses_corrects_the_spatial_error():
    model = seeded()
    settings = Channel3DSettings(ranks={"conv2": 50}, spatial_ranks={"conv2": 6}, images=300)
    new = decomposed(model, settings, DATA)
    vertical, horizontal = zhang3d.vh_factors(model.conv2.weight.detach().double(), 6)
    pair = zhang3d._spatial_pair(model.conv2, vertical, horizontal, model.conv2.bias.detach().double())
    with torch.no_grad():
        inputs = model.pool1(model.conv1(held_out_digits()))
        reference = model.conv2(inputs)
        chain = torch.nn.Sequential(
            *(new.get_submodule(f"conv2.{p}") for p in ("reduce.v", "reduce.h", "expand"))
        )
        assert relative(reference, chain(inputs)) < 0.9 * relative(reference, pair(inputs))


def test_a_layer_without_d_double_prime_is_decomposed_as_channel_decompose_does():
    model = seeded()
    alone = decomposed_2d(model, ChannelSettings(ranks={"conv1": 6, "conv2": 12}, images=200), DATA)
    mixed = decomposed(
        model,
        Channel3DSettings(ranks={"conv1": 6, "conv2": 12}, spatial_ranks={"conv2": 20}, images=200),
        DATA,
    )
    for part in ("reduce", "expand"):
        assert torch.allclose(
            alone.get_submodule(f"conv1.{part}").weight, mixed.get_submodule(f"conv1.{part}").weight
        )
    assert isinstance(mixed.get_submodule("conv2.reduce.v"), torch.nn.Conv2d)


# -- static --------------------------------------------------------------------------------------------


def test_the_ratio_and_speed_up_from_d_prime_and_d_double_prime_are_the_base_over_the_decomposed():
    base, after = papers.measure("lenet5_caffe"), papers.measure(VARIANT)
    computed = static_measurements(VARIANT)
    assert computed["compression_ratio"] == pytest.approx(base.params / after.params)
    assert computed["speedup"] == pytest.approx(base.macs / after.macs)
    (step,) = variant_steps(VARIANT)
    d1, d2 = step.settings.ranks["conv2"], step.settings.spatial_ranks["conv2"]
    layers = {layer.name: layer.params for layer in after.layers}
    assert layers["conv2.reduce.v"] == d2 * 20 * 5
    assert layers["conv2.reduce.h"] == d1 * d2 * 5 + d1
    assert layers["conv2.expand"] == 50 * d1 + 50


def test_spatial_ranks_are_the_largest_d_double_prime_within_the_budget():
    flat = papers.expand_variant("lenet5_caffe")
    ranks = {"conv1": 13, "conv2": 17}
    chosen = zhang3d.spatial_ranks(flat, ranks, 2.0)
    catalogue = get_registry().catalogue
    reduced = {
        layer.name: layer.macs
        for layer in measure_graph(
            "c", zhang3d.channel_rewrite(flat, ChannelSettings(ranks=ranks)), catalogue
        ).layers
    }

    def pair_macs(d2: dict[str, int]) -> dict[str, int]:
        settings = Channel3DSettings(ranks=ranks, spatial_ranks=d2)
        macs = {
            layer.name: layer.macs
            for layer in measure_graph("s", zhang3d.channel_3d_rewrite(flat, settings), catalogue).layers
        }
        return {n: macs[f"{n}.reduce.v"] + macs[f"{n}.reduce.h"] for n in ranks}

    within, above = pair_macs(chosen), pair_macs({n: r + 1 for n, r in chosen.items()})
    for name in ranks:
        assert within[name] <= reduced[f"{name}.reduce"] / 2 < above[name]


# -- papers compress -----------------------------------------------------------------------------------


def test_compress_without_data_writes_the_weight_only_3d_decomposition(run, tmp_path):
    result = run("compress", VARIANT, "--out", str(tmp_path), "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["macs_after"] == papers.measure(VARIANT).macs
    state, _ = read_container(tmp_path / "model.safetensors")
    (step,) = variant_steps(VARIANT)
    expected = decomposed(seeded(), step.settings)
    assert state.keys() == expected.state_dict().keys()
    assert all(torch.allclose(state[k], v, atol=1e-6) for k, v in expected.state_dict().items())


# -- bad d″: one line, exit 2 --------------------------------------------------------------------------


def copied_spec(tmp_path: Path, settings: dict) -> Path:
    """zhang2016's LeNet variant as another paper's (``cd3``), with ``settings``."""
    spec = yaml.safe_load(SPEC.read_text())
    spec["id"] = "cd3"
    spec["variants"][0]["id"] = "cd3-lenet5_caffe"
    spec["variants"][0]["methods"][0]["settings"] = settings
    path = tmp_path / "cd3.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.mark.parametrize(
    ("settings", "field", "message"),
    [
        (
            {"ranks": {"conv2": 17}, "spatial_ranks": {"conv2": 86}},
            "settings.spatial_ranks.conv2",
            "rank 86 is above the layer's limit of 85 (conv2: min(c·kh, d′·kw) = min(20·5, 17·5))",
        ),
        ({"ranks": {"conv2": 17}, "spatial_ranks": {"conv1": 3}}, "settings.spatial_ranks.conv1", "no d′"),
        (
            {"ranks": {"conv2": 17}, "spatial_ranks": {"conv2": 0}},
            "settings.spatial_ranks.conv2",
            "greater than or equal to 1",
        ),
        ({"ranks": {"conv2": 51}, "spatial_ranks": {}}, "settings.ranks.conv2", "limit of 50"),
        ({"ranks": {"conv2": 17}}, "settings.spatial_ranks", "needs this setting"),
    ],
)
def test_bad_d_double_prime_is_one_line_naming_the_field_and_exit_2(
    settings, field, message, tmp_path, monkeypatch, run
):
    path = copied_spec(tmp_path, settings)
    monkeypatch.setattr(Registry, "discover", classmethod(lambda cls: registry_with(path)))
    monkeypatch.setattr(papers.registry, "_current", None)
    monkeypatch.chdir(tmp_path)
    result = run("compress", "cd3-lenet5_caffe", "--out", "out")
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("papers: error: ")
    assert str(path) in result.stderr and field in result.stderr and message in result.stderr
    assert not (tmp_path / "out").exists()


# -- the proxy on MNIST digits -------------------------------------------------------------------------


def test_the_proxy_chooses_d_prime_and_d_double_prime_decomposes_and_fine_tunes():
    measured = zhang3d.channel_3d_proxy(epochs=1, fine_tune_epochs=1, limit=200)
    settings = measured["settings"]
    assert set(settings.ranks) == set(settings.spatial_ranks) == {"conv1", "conv2"}
    assert measured["macs_after"] < measured["macs_before"]
    assert all(0 <= measured[k] <= 100 for k in ("before", "decomposed", "after"))
