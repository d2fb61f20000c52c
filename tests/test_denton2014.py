"""Denton et al. 2014 (``denton2014``): the monochromatic approximation of a first layer (colour vectors
clustered into equal groups, a 1×1 colour projection, single-channel filters in a grouped convolution,
the output order restored) and the biclustered SVD of higher layers; both exact where the weights allow
it; the ``channel_permute`` op; the ratio and speed-up from the settings; ``papers compress``; bad
settings refused in one line; a smoke of the MNIST proxy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import papers
import papers.registry
from papers.compression import read_container
from papers.methods import static_measurements, variant_steps
from papers.plugins import PluginInfo, PluginManager
from papers.registry import Registry
from papers_plugins.compression import linear_structure as denton
from papers_plugins.compression import low_rank
from papers_plugins.compression.linear_structure import BiclusterSettings, MonochromaticSettings
from tests.conftest import REPO
from tests.test_methods import spec_plugin

SPEC = REPO / "specs" / "compression" / "denton2014.yaml"
VARIANT = "denton2014-lenet5_caffe"
ALEXNET = "denton2014-alexnet"

pytestmark = pytest.mark.usefixtures("one_thread")


def seeded(variant: str = "lenet5_caffe") -> torch.nn.Module:
    """The base ``papers compress`` starts from without --weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return papers.build_model(variant).eval()


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / a.norm())


def chain(model: torch.nn.Module, name: str, parts) -> torch.nn.Module:
    return torch.nn.Sequential(*(model.get_submodule(f"{name}.{part}") for part in parts))


def bicluster(model, settings):
    return low_rank.decompose(
        model,
        papers.expand_variant("lenet5_caffe"),
        settings,
        denton.bicluster_rewrite,
        denton.bicluster_apply,
    )


# -- monochromatic -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def colour_rank_one_nin():
    """NIN (CIFAR-10) whose 192 first-layer filters are each one of 16 colours times a spatial filter,
    12 filters per colour, in shuffled order."""
    model = seeded("nin_cifar10")
    generator = torch.Generator().manual_seed(3)
    colours = torch.nn.functional.normalize(torch.rand(16, 3, generator=generator), dim=1)
    colours = colours.repeat_interleave(12, 0)[torch.randperm(192, generator=generator)]
    with torch.no_grad():
        spatial = torch.randn(192, 5, 5, generator=generator)
        model.conv1.weight.copy_(torch.einsum("fc,fij->fcij", colours, spatial))
    return model


def test_filters_of_few_colours_are_reproduced_exactly_in_their_original_order(colour_rank_one_nin):
    model = colour_rank_one_nin
    settings = MonochromaticSettings(layer="conv1", clusters=16)
    flat = papers.expand_variant("nin_cifar10")
    approximated, _ = low_rank.decompose(
        model, flat, settings, denton.monochromatic_rewrite, denton.monochromatic_apply
    )
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        split = chain(approximated, "conv1", ("colour", "mono", "order"))
        assert relative(model.conv1(images), split(images)) < 1e-5
        assert relative(model(images), approximated(images)) < 1e-5
    assert approximated.get_submodule("conv1.mono").groups == 16


def test_fewer_colours_than_the_filters_have_approximate_them_worse(colour_rank_one_nin):
    model, flat = colour_rank_one_nin, papers.expand_variant("nin_cifar10")
    images = torch.randn(1, 3, 32, 32)
    errors = []
    for clusters in (16, 4, 1):
        settings = MonochromaticSettings(layer="conv1", clusters=clusters)
        approximated, _ = low_rank.decompose(
            model, flat, settings, denton.monochromatic_rewrite, denton.monochromatic_apply
        )
        with torch.no_grad():
            errors.append(
                relative(
                    model.conv1(images), chain(approximated, "conv1", ("colour", "mono", "order"))(images)
                )
            )
    assert errors[0] < 1e-5 < errors[1] < errors[2]


def test_colour_vectors_are_each_filters_top_singular_vector_with_its_rank_one_error():
    weight = torch.randn(5, 3, 4, 4, dtype=torch.float64)
    colours, tail = denton.colour_vectors(weight)
    for f in range(5):
        matrix = weight[f].reshape(3, -1)
        projected = torch.outer(colours[f], colours[f] @ matrix)
        assert float((matrix - projected).norm() / matrix.norm()) == pytest.approx(float(tail[f]))
        assert float(colours[f].sum()) >= 0 and float(colours[f].norm()) == pytest.approx(1.0)


def test_balanced_clusters_are_equal_and_keep_well_separated_groups_together():
    generator = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    points = np.concatenate([centre + 0.1 * generator.standard_normal((4, 2)) for centre in centres])
    labels = denton.balanced_clusters(points[generator.permutation(12)], 3)
    assert sorted(np.bincount(labels)) == [4, 4, 4]
    labels = denton.balanced_clusters(points, 3)
    assert all(len(set(labels[i * 4 : (i + 1) * 4])) == 1 for i in range(3))


# -- biclustering with SVD -----------------------------------------------------------------------------


@pytest.mark.parametrize(("groups", "rank"), [((1, 1), 20), ((2, 5), 10), ((4, 2), 5)])
def test_at_full_rank_each_bicluster_is_exact(groups, rank):
    model = seeded()
    approximated, _ = bicluster(model, BiclusterSettings(layers={"conv2": [*groups, rank]}))
    images = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        assert relative(model(images), approximated(images)) < 1e-5


def test_below_full_rank_the_error_grows_as_the_rank_falls():
    model, images = seeded(), torch.randn(4, 20, 12, 12)
    errors = []
    for rank in (10, 6, 2):
        approximated, _ = bicluster(model, BiclusterSettings(layers={"conv2": [2, 5, rank]}))
        parts = ("gather", "project", "shuffle", "spatial", "order")
        with torch.no_grad():
            errors.append(relative(model.conv2(images), chain(approximated, "conv2", parts)(images)))
    assert errors[0] < 1e-5 < errors[1] < errors[2]


def test_a_single_bicluster_is_the_truncated_svd_of_the_input_unfolding():
    weight = torch.randn(6, 4, 3, 3, dtype=torch.float64)
    parts = denton.bicluster_factors(weight, denton.Bicluster(1, 1, 2))
    approximation = torch.einsum("kc,fkij->fcij", parts["project"][:, :, 0, 0], parts["spatial"])[
        parts["order"]
    ]
    singular = torch.linalg.svdvals(weight.transpose(0, 1).reshape(4, -1))
    assert float((weight - approximation).norm()) == pytest.approx(float(singular[2:].norm()))


# -- static --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", [VARIANT, ALEXNET])
def test_the_ratio_and_speed_up_from_the_settings_are_the_base_over_the_approximation(variant):
    base = papers.measure(papers.registry.get_registry().variant(variant)[1].base)
    after, computed = papers.measure(variant), static_measurements(variant)
    assert computed["compression_ratio"] == pytest.approx(base.params / after.params)
    assert computed["speedup"] == pytest.approx(base.macs / after.macs)


def test_a_freshly_built_channel_permute_is_the_identity():
    model = seeded(VARIANT)
    for name in ("conv2.gather", "conv2.shuffle", "conv2.order"):
        order = model.get_submodule(name).order
        assert torch.equal(order, torch.arange(order.numel())), name


def test_the_variants_layers_have_the_settings_widths_and_groups():
    layers = {layer.name: layer for layer in papers.measure(VARIANT).layers}
    assert layers["conv2.project"].params == 2 * 5 * 4 * 10, "G·H·K maps, each from C/G inputs"
    assert layers["conv2.spatial"].params == 50 * 2 * 4 * 25 + 50, "each output reads G·K maps"
    assert layers["conv2.order"].macs == 0
    mono = {layer.name: layer for layer in papers.measure(ALEXNET).layers}
    assert mono["features.0.colour"].params == 3 * 16 and mono["features.0.mono"].params == 96 * 121 + 96


# -- papers compress -----------------------------------------------------------------------------------


def test_compress_writes_the_factors_and_orders_and_reads_them_back(run, tmp_path):
    result = run("compress", VARIANT, "--out", str(tmp_path), "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["macs_after"] == papers.measure(VARIANT).macs
    state, _ = read_container(tmp_path / "model.safetensors")
    (step,) = variant_steps(VARIANT)
    expected, _ = bicluster(seeded(), step.settings)
    assert state.keys() == expected.state_dict().keys() and "conv2.order.order" in state
    assert all(
        torch.allclose(state[k].double(), v.double(), atol=1e-6) for k, v in expected.state_dict().items()
    )


# -- bad settings: one line, exit 2 --------------------------------------------------------------------


def copied_spec(tmp_path: Path, method: dict) -> Path:
    """denton2014's LeNet variant as another paper's (``ls``), with ``method``."""
    spec = yaml.safe_load(SPEC.read_text())
    spec["id"] = "ls"
    spec["variants"] = [v for v in spec["variants"] if v["id"] == VARIANT]
    spec["variants"][0]["id"] = "ls-lenet5_caffe"
    spec["variants"][0]["methods"] = [method]
    path = tmp_path / "ls.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def registry_with(path: Path) -> Registry:
    manager = PluginManager()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PAPERS_PLUGINS", "")
        manager.load_entry_points()
    manager.register(spec_plugin(path), PluginInfo("copy", "copy-dist", "1", "tests"))
    return Registry(manager)


def _bicluster(layers) -> dict:
    return {"name": "bicluster_svd", "settings": {"layers": layers}}


@pytest.mark.parametrize(
    ("method", "field", "message"),
    [
        (
            _bicluster({"conv2": [2, 5, 11]}),
            "settings.layers.conv2[2]",
            "rank 11 is above the layer's limit of 10",
        ),
        (_bicluster({"conv2": [2, 5, 0]}), "settings.layers.conv2[2]", "greater than or equal to 1"),
        (_bicluster({"conv2": [3, 5, 2]}), "settings.layers.conv2[0]", "3 input clusters (G) do not divide"),
        (_bicluster({"conv2": [2, 7, 2]}), "settings.layers.conv2[1]", "7 output clusters (H) do not divide"),
        (_bicluster({"conv2": [2, 5]}), "settings.layers.conv2", "at least 3 items"),
        (_bicluster({"fc1": [1, 1, 1]}), "settings.layers.fc1", "'fc1' is no convolution"),
        (_bicluster({}), "settings.layers", "nothing would be approximated"),
        (
            {"name": "monochromatic", "settings": {"layer": "conv1", "clusters": 3}},
            "settings.clusters",
            "divide",
        ),
        (
            {"name": "monochromatic", "settings": {"layer": "conv1", "clusters": 0}},
            "settings.clusters",
            "greater",
        ),
        ({"name": "monochromatic", "settings": {"clusters": 2}}, "settings.layer", "needs this setting"),
    ],
)
def test_bad_settings_are_one_line_naming_the_field_and_exit_2(
    method, field, message, tmp_path, monkeypatch, run
):
    path = copied_spec(tmp_path, method)
    monkeypatch.setattr(Registry, "discover", classmethod(lambda cls: registry_with(path)))
    monkeypatch.setattr(papers.registry, "_current", None)
    monkeypatch.chdir(tmp_path)
    result = run("compress", "ls-lenet5_caffe", "--out", "out")
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("papers: error: ")
    assert str(path) in result.stderr and field in result.stderr and message in result.stderr
    assert not (tmp_path / "out").exists()


# -- the proxy on MNIST digits -------------------------------------------------------------------------


def test_the_proxy_trains_approximates_conv2_and_fine_tunes():
    measured = denton.bicluster_proxy(epochs=1, fine_tune_epochs=1, limit=200)
    assert measured["settings"].layers == {"conv2": [2, 5, 4]}
    assert measured["macs_after"] == papers.measure(VARIANT).macs < measured["macs_before"]
    assert all(0 <= measured[k] <= 100 for k in ("before", "decomposed", "after"))
