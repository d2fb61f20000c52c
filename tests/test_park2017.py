"""Park et al. 2017 (``park2017``): the direct sparse convolution equals the dense one; ``SparseConv2d``
is a Conv2d that runs the kernel only where no gradient is wanted and where it measured faster; the
break-even read from a measured table; guided pruning prunes a convolution only where its target
reaches that break-even; ``papers compress`` on it; bad settings refused in one line; a smoke of the
MNIST proxy. Timings in tests are replaced by fixed tables where a decision depends on them, so no
test depends on this machine's speed."""

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
from papers.methods import MethodContext, variant_steps
from papers.plugins import PluginInfo, PluginManager
from papers.registry import Registry
from papers_plugins.compression import guided_pruning, sparse_conv
from papers_plugins.compression.guided_pruning import GuidedSettings, check_settings, plan
from papers_plugins.compression.sparse_conv import (
    Geometry,
    SparseConv2d,
    Timing,
    break_even,
    sparse_conv2d,
    sparse_weight,
    time_geometry,
)
from tests.conftest import REPO
from tests.test_methods import spec_plugin

SPEC = REPO / "specs" / "compression" / "park2017.yaml"

pytestmark = pytest.mark.usefixtures("one_thread")


def sparse(shape: tuple[int, ...], sparsity: float, seed: int = 0) -> torch.Tensor:
    """Weights of ``shape`` at the scale of a conv's initialisation, ``sparsity`` of them zero."""
    generator = torch.Generator().manual_seed(seed)
    fan_in = shape[1] * shape[2] * shape[3]
    weight = torch.randn(shape, generator=generator) / fan_in**0.5
    return weight * (torch.rand(shape, generator=generator) >= sparsity)


def table(crossing: float) -> tuple[Timing, ...]:
    """A measured table whose sparse kernel is slower below ``crossing`` and faster above it."""
    grid = (0.5, 0.7, 0.8, 0.9, 0.95, 0.99)
    return tuple(Timing(s, 1.0, 1.0 / (1.0 + 4 * (s - crossing))) for s in grid)


# -- the kernel ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("channels", "out", "size", "kernel", "stride", "padding"),
    [
        (3, 8, (11, 9), (3, 3), (1, 1), (1, 1)),
        (3, 16, (35, 35), (11, 11), (4, 4), (2, 2)),  # AlexNet's conv1, smaller
        (5, 7, (10, 13), (3, 5), (2, 3), (0, 2)),
        (4, 6, (8, 8), (1, 1), (2, 2), (0, 0)),
        (4, 6, (9, 9), (3, 3), (3, 3), (1, 0)),
    ],
)
@pytest.mark.parametrize("sparsity", [0.0, 0.7, 0.97])
def test_the_sparse_kernel_equals_the_dense_convolution(
    channels, out, size, kernel, stride, padding, sparsity
):
    weight = sparse((out, channels, *kernel), sparsity)
    bias = torch.randn(out)
    image = torch.randn(2, channels, *size)
    expected = F.conv2d(image, weight, bias, stride, padding)
    got = sparse_conv2d(image, sparse_weight(weight, stride), bias, padding)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_the_kernel_keeps_one_csr_matrix_per_kernel_offset_that_holds_a_non_zero():
    weight = torch.zeros(4, 3, 3, 3)
    weight[1, 2, 0, 1] = 1.5
    weight[3, 0, 2, 2] = -2.0
    weight[0, 0, 2, 2] = 0.5
    split = sparse_weight(weight)
    assert [(row, col) for _, row, col, _ in split.parts] == [(0, 1), (2, 2)]
    assert all(matrix.layout == torch.sparse_csr for *_, matrix in split.parts)
    assert split.nonzero == 3 and split.sparsity == pytest.approx(1 - 3 / 108)


def test_all_zero_weights_give_the_bias_alone():
    bias = torch.tensor([1.0, -2.0])
    out = sparse_conv2d(torch.randn(1, 3, 5, 5), sparse_weight(torch.zeros(2, 3, 3, 3)), bias, (1, 1))
    assert torch.equal(out, bias.view(1, 2, 1, 1).expand(1, 2, 5, 5))


# -- SparseConv2d ----------------------------------------------------------------------------------


def layer(kernel: str = "auto", sparsity: float = 0.9) -> SparseConv2d:
    conv = SparseConv2d(4, 6, 3, padding=1, kernel=kernel)
    with torch.no_grad():
        conv.weight.copy_(sparse(tuple(conv.weight.shape), sparsity))
    return conv.eval()


def test_a_sparse_conv2d_is_a_conv2d_with_the_same_weights_and_arguments():
    torch.manual_seed(0)
    plain = torch.nn.Conv2d(4, 6, 3, stride=2, padding=1)
    torch.manual_seed(0)
    conv = SparseConv2d(4, 6, 3, stride=2, padding=1)
    assert isinstance(conv, torch.nn.Conv2d)
    assert conv.state_dict().keys() == plain.state_dict().keys()
    pairs = zip(conv.state_dict().values(), plain.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)


def test_without_gradients_the_sparse_kernel_gives_the_convolution(monkeypatch):
    conv, image = layer("sparse"), torch.randn(2, 4, 7, 7)
    calls = []
    monkeypatch.setattr(sparse_conv, "sparse_conv2d", lambda *a: calls.append(1) or sparse_conv2d(*a))
    with torch.inference_mode():
        out = conv(image)
    assert calls == [1]
    torch.testing.assert_close(out, F.conv2d(image, conv.weight, conv.bias, 1, 1), rtol=1e-5, atol=1e-5)


def test_training_runs_the_dense_convolution_and_its_gradients(monkeypatch):
    conv = layer("sparse").train()
    monkeypatch.setattr(sparse_conv, "sparse_conv2d", lambda *a: pytest.fail("no backward in the kernel"))
    conv(torch.randn(2, 4, 7, 7)).sum().backward()
    assert conv.weight.grad is not None and conv.weight.grad.shape == conv.weight.shape


def test_auto_times_both_kernels_once_per_input_shape_and_runs_the_faster(monkeypatch):
    conv, image = layer("auto"), torch.randn(2, 4, 7, 7)
    measured = []
    monkeypatch.setattr(sparse_conv, "interleaved", lambda runs, repeats=5: measured.append(1) or [2.0, 1.0])
    ran = []
    monkeypatch.setattr(sparse_conv, "sparse_conv2d", lambda *a: ran.append(1) or sparse_conv2d(*a))
    with torch.no_grad():
        conv(image)
        conv(image)
    assert measured == [1] and ran == [1, 1], "timed once, the sparse kernel faster: run twice"
    assert list(conv.timings.values()) == [(2.0, 1.0)]


def test_auto_keeps_the_dense_convolution_where_the_sparse_kernel_is_slower(monkeypatch):
    conv = layer("auto", sparsity=0.0)
    monkeypatch.setattr(sparse_conv, "interleaved", lambda runs, repeats=5: [1.0, 3.0])
    monkeypatch.setattr(sparse_conv, "sparse_conv2d", lambda *a: pytest.fail("slower: not run"))
    with torch.no_grad():
        conv(torch.randn(1, 4, 7, 7))


def test_new_weights_are_split_and_timed_again():
    conv, image = layer("auto"), torch.randn(1, 4, 6, 6)
    with torch.no_grad():
        conv(image)
        first = conv.sparse()
        conv.weight.mul_(0.0)
        out = conv(image)
    assert conv.sparse() is not first and conv.sparse().nonzero == 0
    assert len(conv.timings) == 1
    assert torch.allclose(out, conv.bias.view(1, -1, 1, 1).expand_as(out))


def test_an_unknown_kernel_choice_is_refused():
    with pytest.raises(ValueError, match="kernel is one of auto, sparse, dense"):
        SparseConv2d(2, 2, 3, kernel="fast")


# -- the measured table and its break-even ------------------------------------------------------------


def test_the_break_even_is_where_the_log_speed_up_crosses_one():
    rows = [Timing(0.8, 1.0, 2.0), Timing(0.9, 1.0, 0.5)]  # 0.5x, then 2x: halfway in log
    assert break_even(rows) == pytest.approx(0.85)
    assert break_even(table(0.82)) == pytest.approx(0.82, abs=0.01)


def test_a_kernel_never_faster_has_no_break_even_and_one_always_faster_the_lowest_sparsity():
    assert break_even([Timing(0.5, 1.0, 3.0), Timing(0.99, 1.0, 1.5)]) is None
    assert break_even([Timing(0.9, 1.0, 0.9), Timing(0.5, 1.0, 0.8)]) == 0.5


def test_the_break_even_is_where_the_kernel_stays_faster_a_noisy_point_below_it_does_not_count():
    rows = [Timing(0.5, 1.0, 0.9), Timing(0.7, 1.0, 2.0), Timing(0.8, 1.0, 2.0), Timing(0.9, 1.0, 0.5)]
    assert 0.8 < break_even(rows) < 0.9


def test_a_geometry_is_timed_at_each_sparsity_once_per_process():
    geometry = Geometry(4, 8, (3, 3), (1, 1), (1, 1), 6, 6)
    rows = time_geometry(geometry, [0.5, 0.9], repeats=1)
    assert [row.sparsity for row in rows] == [0.5, 0.9]
    assert all(row.dense_s > 0 and row.sparse_s > 0 for row in rows)
    assert time_geometry(geometry, [0.5, 0.9], repeats=1) is rows
    with pytest.raises(ValueError, match="in \\[0, 1\\)"):
        time_geometry(geometry, [1.0], repeats=1)


# -- guided pruning ----------------------------------------------------------------------------------


@pytest.fixture
def measured_break_even(monkeypatch):
    """Every convolution measures a sparse kernel faster from 80% sparsity."""
    monkeypatch.setattr(sparse_conv, "time_geometry", lambda geometry, grid, repeats=5: table(0.8))


TARGETS = {"conv1": 0.34, "conv2": 0.88, "fc1": 0.92, "fc2": 0.81}


def test_guided_pruning_prunes_a_convolution_only_where_its_target_reaches_the_break_even(
    measured_break_even,
):
    decisions = plan(papers.expand_variant("park2017-lenet5_caffe"), GuidedSettings(sparsity=TARGETS))
    assert {name: d.pruned for name, d in decisions.items()} == {
        "conv1": False,
        "conv2": True,
        "fc1": True,
        "fc2": True,
    }
    assert decisions["conv2"].break_even == pytest.approx(0.8, abs=0.01)
    assert decisions["conv2"].geometry == Geometry(20, 50, (5, 5), (1, 1), (0, 0), 12, 12, 1)
    assert "left dense" in decisions["conv1"].describe()


def test_the_applied_method_prunes_the_chosen_layers_to_their_targets_and_leaves_the_rest(
    measured_break_even,
):
    torch.manual_seed(0)
    model = papers.build_model("park2017-lenet5_caffe").eval()
    conv1 = model.conv1.weight.detach().clone()
    flat = papers.expand_variant("park2017-lenet5_caffe")
    guided_pruning.guided_prune(model, GuidedSettings(sparsity=TARGETS), MethodContext(flat))
    assert torch.equal(model.conv1.weight, conv1), "below the break-even: left dense"
    for name in ("conv2", "fc1", "fc2"):
        weight = model.get_submodule(name).weight
        assert int((weight == 0).sum()) == weight.numel() - round(weight.numel() * (1 - TARGETS[name])), name


def test_the_rewrite_makes_the_named_convolutions_sparse_conv2d():
    flat = papers.expand_variant("park2017-lenet5_caffe")
    assert {node.name: node.op for node in flat.nodes if "conv" in node.op or node.op == "linear"} == {
        "conv1": "sparse_conv2d",
        "conv2": "sparse_conv2d",
        "fc1": "linear",
        "fc2": "linear",
    }
    only = check_settings(papers.expand_variant("lenet5_caffe"), GuidedSettings(sparsity={"conv2": 0.9}))
    assert [node.op for node in only.nodes if node.name in ("conv1", "conv2")] == ["conv2d", "sparse_conv2d"]
    assert isinstance(papers.build_model("park2017-lenet5_caffe").conv2, SparseConv2d)


def test_compress_writes_the_guided_model_sparsely_and_it_loads_as_sparse_conv2d(
    measured_break_even, run, tmp_path
):
    result = run("compress", "park2017-lenet5_caffe", "--out", str(tmp_path), "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    kept = 500 + round(25_000 * 0.12) + round(400_000 * 0.08) + round(5_000 * 0.19)
    assert report["nonzero_after"] == kept + 20 + 50 + 500 + 10, "weights kept, and every bias"
    assert report["bytes_after"] < report["bytes_before"] / 4
    assert report["latency_ms_after"] > 0 and report["speedup"] is not None, "timed here"
    state, _ = read_container(tmp_path / "model.safetensors")
    assert int(torch.count_nonzero(state["conv1.weight"])) == 500
    model = papers.load_compressed(tmp_path / "model.safetensors")
    assert isinstance(model.conv2, SparseConv2d)


# -- bad settings: one line, exit 2 ------------------------------------------------------------------


def copied_spec(tmp_path: Path, settings: dict) -> Path:
    spec = yaml.safe_load(SPEC.read_text())
    spec["id"] = "guided"
    spec["variants"] = [spec["variants"][0]]
    spec["variants"][0]["id"] = "guided-lenet5_caffe"
    spec["variants"][0]["methods"][0]["settings"] = settings
    path = tmp_path / "guided.yaml"
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
        ({"sparsity": {"conv2": 1.0}}, "settings.sparsity.conv2", "less than 1"),
        ({"sparsity": {"conv2": -0.1}}, "settings.sparsity.conv2", "greater than or equal to 0"),
        ({"sparsity": {"conv9": 0.5}}, "variants[0]", "settings.sparsity names 'conv9', which is no"),
        ({"sparsity": {}}, "variants[0]", "names no layer"),
        ({"sparsity": {"conv2": 0.9}, "grid": [0.5, 1.2]}, "settings.grid[1]", "less than 1"),
    ],
)
def test_bad_settings_are_one_line_and_exit_2(settings, field, message, tmp_path, monkeypatch, run):
    path = copied_spec(tmp_path, settings)
    monkeypatch.setattr(Registry, "discover", classmethod(lambda cls: registry_with(path)))
    monkeypatch.setattr(papers.registry, "_current", None)
    monkeypatch.chdir(tmp_path)
    result = run("compress", "guided-lenet5_caffe", "--out", "out")
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("papers: error: ")
    assert str(path) in result.stderr and field in result.stderr and message in result.stderr
    assert not (tmp_path / "out").exists()


# -- the spec and the proxy -----------------------------------------------------------------------------


def test_the_variants_targets_are_han_et_al_s_kept_fractions_as_sparsities():
    han = {s.method.name: s.settings for s in variant_steps("han2015-alexnet")}["magnitude_prune"]
    (step,) = variant_steps("park2017-alexnet")
    assert step.settings.sparsity == {name: pytest.approx(1 - kept) for name, kept in han.kept.items()}


def test_the_proxy_trains_prunes_by_the_rule_and_reports_its_decisions(measured_break_even):
    measured = guided_pruning.guided_proxy(epochs=1, retrain_epochs=1, limit=200)
    assert 0 <= measured["before"] <= 100 and 0 <= measured["after"] <= 100
    assert {name: d.pruned for name, d in measured["decisions"].items()}["conv1"] is False
    assert measured["kept"] == pytest.approx(
        {"conv1": 1.0, "conv2": 0.12, "fc1": 0.08, "fc2": 0.19}, abs=1e-3
    )
