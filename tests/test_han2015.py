"""Han et al. 2015 (``han2015``): magnitude pruning by kept fraction or quality × standard deviation,
iterative, conv and fc retrained separately, masks held through retraining; the relative-index
storage; ``papers compress`` on a pruned LeNet; Table 1's static columns checked from the settings;
bad settings refused in one line; a smoke of the MNIST proxy."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import papers
import papers.registry
from papers.compression import _relative, decode_state, encode_state, read_container
from papers.errors import PluginError
from papers.methods import Estimate, Method, MethodContext, NoSettings, variant_steps
from papers.plugins import PluginInfo, PluginManager
from papers.registry import Registry
from papers_plugins.compression import pruning as han2015
from papers_plugins.compression.pruning import PruneSettings, kept_parameters, prune
from tests.conftest import REPO
from tests.test_methods import method_plugin, spec_plugin

SPEC = REPO / "specs" / "compression" / "han2015.yaml"

pytestmark = pytest.mark.usefixtures("one_thread")


def seeded(variant: str) -> torch.nn.Module:
    """The base ``papers compress`` starts from without --weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return papers.build_model(variant).eval()


def weights(model: torch.nn.Module, names) -> dict[str, torch.Tensor]:
    return {name: model.get_submodule(name).weight.detach().clone() for name in names}


def random_batches(shape: tuple[int, ...], count: int = 64, batch_size: int = 32):
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(count, *shape, generator=generator)
    labels = torch.randint(0, 10, (count,), generator=generator)
    return han2015.shuffled_batches(images, labels, batch_size)


# -- the pruning rules -----------------------------------------------------------------------------


@pytest.mark.parametrize("iterations", [1, 3])
def test_a_kept_fraction_keeps_exactly_that_many_of_the_largest_weights(iterations):
    model = seeded("lenet300_100")
    before = weights(model, ["fc1", "fc2", "fc3"])
    kept = {"fc1": 0.08, "fc2": 0.09, "fc3": 0.26}
    settings = PruneSettings(kept=kept, iterations=iterations)
    prune(model, settings, papers.expand_variant("lenet300_100"), None, "cpu")
    for name, fraction in kept.items():
        original, after = before[name], model.get_submodule(name).weight.detach()
        alive = after != 0
        assert int(alive.sum()) == round(original.numel() * fraction), name
        assert torch.equal(after[alive], original[alive]), "kept weights are left as they were"
        assert original.abs()[alive].min() >= original.abs()[~alive].max(), "the largest are kept"


def test_the_quality_rule_prunes_below_quality_times_the_layers_standard_deviation():
    model = seeded("lenet300_100")
    before = weights(model, ["fc1", "fc2", "fc3"])
    prune(model, PruneSettings(quality=1.5), papers.expand_variant("lenet300_100"), None, "cpu")
    for name, original in before.items():
        threshold = 1.5 * float(original.std())
        expected = torch.where(original.abs() > threshold, original, torch.zeros(()))
        assert torch.equal(model.get_submodule(name).weight.detach(), expected), name
        assert 0.05 < float((expected != 0).float().mean()) < 0.3


def test_a_layer_given_a_fraction_keeps_it_beside_the_quality_rule_for_the_rest():
    model = seeded("lenet300_100")
    settings = PruneSettings(kept={"fc3": 0.5}, quality=1.0)
    prune(model, settings, papers.expand_variant("lenet300_100"), None, "cpu")
    assert int(torch.count_nonzero(model.fc3.weight)) == 500
    assert 0.3 < int(torch.count_nonzero(model.fc1.weight)) / model.fc1.weight.numel() < 0.55


def test_pruned_weights_stay_zero_through_retraining():
    model = seeded("lenet300_100")
    before = weights(model, ["fc1", "fc2", "fc3"])
    settings = PruneSettings(kept={"fc1": 0.1, "fc2": 0.2, "fc3": 0.5}, iterations=2, retrain_epochs=1)
    masks = prune(model, settings, papers.expand_variant("lenet300_100"), random_batches((1, 28, 28)), "cpu")
    for name, original in before.items():
        after = model.get_submodule(name).weight.detach()
        assert torch.equal(after == 0, masks[name] == 0), name
        assert int(torch.count_nonzero(after)) == round(original.numel() * settings.kept[name])
        assert not torch.equal(after[after != 0], original[after != 0]), "retraining moved the kept ones"


def test_separately_retrains_fc_with_conv_fixed_then_conv_with_fc_fixed(monkeypatch):
    model = seeded("lenet5_caffe")
    calls = []
    original_retrain = han2015.retrain

    def recording(model, batches, trainable, masks, settings, device, epochs=None):
        before = {name: p.detach().clone() for name, p in model.named_parameters()}
        original_retrain(model, batches, trainable, masks, settings, device, epochs)
        changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
        calls.append(changed)

    monkeypatch.setattr(han2015, "retrain", recording)
    settings = PruneSettings(kept={"conv1": 0.66, "conv2": 0.12, "fc1": 0.08, "fc2": 0.19}, retrain_epochs=1)
    prune(model, settings, papers.expand_variant("lenet5_caffe"), random_batches((1, 28, 28)), "cpu")
    fc = {f"{layer}.{p}" for layer in ("fc1", "fc2") for p in ("weight", "bias")}
    conv = {f"{layer}.{p}" for layer in ("conv1", "conv2") for p in ("weight", "bias")}
    assert calls == [fc, conv]


def test_all_at_once_retrains_every_pruned_layer_together(monkeypatch):
    model = seeded("lenet5_caffe")
    rounds = []
    monkeypatch.setattr(
        han2015, "retrain", lambda model, batches, trainable, *rest: rounds.append(len(trainable))
    )
    settings = PruneSettings(kept={"conv2": 0.12, "fc1": 0.08}, retrain_epochs=1, separately=False)
    prune(model, settings, papers.expand_variant("lenet5_caffe"), random_batches((1, 28, 28)), "cpu")
    assert rounds == [4], "conv2 and fc1, weight and bias, in one round"


# -- the relative-index storage ----------------------------------------------------------------------


def unpacked(packed: torch.Tensor, count: int, bits: int) -> list[int]:
    """The format's packing read independently: ``bits`` bits per index, least significant first."""
    planes = np.unpackbits(packed.numpy(), bitorder="little")[: count * bits].reshape(count, bits)
    return (planes.astype(np.int64) @ (1 << np.arange(bits))).tolist()


def test_relative_indices_bridge_a_long_gap_with_filler_entries():
    mask = torch.zeros(64, dtype=torch.bool)
    mask[[0, 3, 40]] = True
    gaps, values = _relative(mask, torch.tensor([1.0, 2.0, 3.0]), bits=5)
    assert gaps.tolist() == [0, 2, 31, 4], "36 zeros before position 40: a filler 32 places on, then 4"
    assert values.tolist() == [1.0, 2.0, 0.0, 3.0]


def spaced(count: int, step: int, long_gap: int) -> torch.Tensor:
    """A weight vector of ``count`` with every ``step``-th entry non-zero from the first on, but for one
    run of ``long_gap`` zeros."""
    positions = list(range(0, 600, step))
    positions += list(range(positions[-1] + long_gap + 1, count, step))
    weight = torch.zeros(count)
    signs = torch.tensor([1.0, -1.0]).repeat(len(positions))[: len(positions)]
    weight[positions] = torch.linspace(0.5, 1.5, len(positions)) * signs
    return weight


def test_a_sparse_matrix_is_stored_with_5_bit_relative_indices_and_decodes_exactly():
    weight = spaced(64 * 256, step=12, long_gap=100).reshape(64, 256)
    tensors, encoding = encode_state({"w": weight})
    described = encoding["w"]
    entries = int(torch.count_nonzero(weight)) + 100 // 32  # three fillers bridge the 100 zeros
    assert described["kind"] == "relative" and described["bits"] == 5 and described["entries"] == entries
    assert tensors["w#gaps"].dtype == torch.uint8 and tensors["w#gaps"].numel() == math.ceil(entries * 5 / 8)
    assert tensors["w#entries"].dtype == torch.float32 and tensors["w#entries"].numel() == entries
    gaps = unpacked(tensors["w#gaps"], entries, 5)
    assert gaps[0] == 0, "the first weight is non-zero: no zeros before it"
    assert gaps.count(31) == 3 and set(gaps) == {0, 11, 31, 100 - 3 * 32}
    assert int((tensors["w#entries"] == 0).sum()) == 3, "fillers hold zeros"
    decoded = decode_state(tensors, json.loads(json.dumps(encoding)))["w"]
    assert torch.equal(decoded, weight)


def test_a_sparse_convolution_uses_8_bit_relative_indices():
    weight = spaced(64 * 256, step=20, long_gap=700).reshape(64, 16, 4, 4)
    tensors, encoding = encode_state({"w": weight})
    entries = int(torch.count_nonzero(weight)) + 700 // 256
    assert encoding["w"]["kind"] == "relative" and encoding["w"]["bits"] == 8
    assert encoding["w"]["entries"] == entries and tensors["w#gaps"].numel() == entries
    assert set(unpacked(tensors["w#gaps"], entries, 8)) == {0, 19, 255, 700 - 2 * 256}
    assert torch.equal(decode_state(tensors, encoding)["w"], weight)


# -- papers compress ---------------------------------------------------------------------------------


def test_compress_writes_the_pruned_lenet_sparsely_and_it_decodes_to_the_pruned_weights(run, tmp_path):
    result = run("compress", "han2015-lenet300_100", "--out", str(tmp_path), "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["bytes_after"] < report["bytes_before"] / 4
    assert (tmp_path / "model.safetensors").stat().st_size == report["bytes_after"]
    state, metadata = read_container(tmp_path / "model.safetensors")
    assert json.loads(metadata["encoding"])["fc1.weight"]["kind"] == "relative"
    pruned = seeded("lenet300_100")
    (step,) = variant_steps("han2015-lenet300_100")
    han2015.MAGNITUDE_PRUNE.apply(pruned, step.settings, MethodContext(papers.expand_variant("lenet300_100")))
    assert state.keys() == pruned.state_dict().keys()
    assert all(torch.equal(state[k], v) for k, v in pruned.state_dict().items())
    assert int(torch.count_nonzero(state["fc1.weight"])) == round(235_200 * 0.08)


# -- the static checks: Table 1 from the settings ------------------------------------------------------


def test_kept_weights_are_the_fractions_of_each_layers_weights_biases_not_counted():
    settings = PruneSettings(kept={"conv1": 0.66, "conv2": 0.12, "fc1": 0.08, "fc2": 0.19})
    kept = kept_parameters(papers.expand_variant("lenet5_caffe"), settings)
    assert kept.total == 500 + 25_000 + 400_000 + 5_000
    assert kept.kept == pytest.approx(330 + 3_000 + 32_000 + 950)
    assert kept.low == pytest.approx(kept.kept - 0.005 * kept.total)
    assert kept.high == pytest.approx(kept.kept + 0.005 * kept.total)


def test_table_1s_kept_parameters_and_ratios_pass_from_the_settings_alone():
    checks = papers.check("han2015")
    static = [c for c in checks if c.metric in ("nonzero_params", "compression_ratio")]
    assert len(static) == 8 and all(c.status == "pass" for c in static), [
        c for c in static if c.status != "pass"
    ]
    rest = [c for c in checks if c not in static]
    assert {c.status for c in rest} == {"not_measurable"} and len(rest) == 6
    vgg = next(c for c in static if c.variant == "han2015-vgg16" and c.metric == "nonzero_params")
    assert vgg.measured == pytest.approx(10.532392, abs=1e-6), "Table 5's fractions give 7.6%, printed 7.5%"
    assert "9.841 to 11.22" in vgg.reason, "passes on the interval the fractions' rounding allows"


def registry_with(*specs: Path, methods: tuple[Method, ...] = ()) -> Registry:
    """The built-in plugins and a plugin contributing ``specs`` (and ``methods``)."""
    manager = PluginManager()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PAPERS_PLUGINS", "")
        manager.load_entry_points()
    for index, path in enumerate(specs):
        manager.register(spec_plugin(path), PluginInfo(f"copy{index}", "copy-dist", "1", "tests"))
    if methods:
        manager.register(method_plugin(*methods), PluginInfo("measures", "measures-dist", "1", "tests"))
    return Registry(manager)


def copied_spec(tmp_path: Path, change=None, variants=("lenet300_100", "lenet5_caffe")) -> Path:
    """han2015's spec as another paper (``prune``), with its LeNet variants only, changed by ``change``."""
    spec = yaml.safe_load(SPEC.read_text())
    spec["id"] = "prune"
    spec["variants"] = [v for v in spec["variants"] if v["base"] in variants]
    for variant in spec["variants"]:
        variant["id"] = variant["id"].replace("han2015", "prune")
    spec["results"] = [
        {**r, "variant": r["variant"].replace("han2015", "prune")}
        for r in spec["results"]
        if r["variant"].removeprefix("han2015-") in variants
    ]
    if change is not None:
        change(spec)
    path = tmp_path / "prune.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_a_wrong_kept_parameter_count_in_a_copied_spec_fails(tmp_path, monkeypatch, run):
    def wrong(spec):
        spec["results"][0]["value"] = 24  # 21,776 kept, at most 23,109 with the fractions' rounding

    monkeypatch.setattr(papers.registry, "_current", registry_with(copied_spec(tmp_path, wrong)))
    result = run("check", "prune", "--json")
    assert result.exit_code == 1, result.stderr
    by_row = {(c["variant"], c["metric"]): c["status"] for c in json.loads(result.stdout)}
    assert by_row.pop(("prune-lenet300_100", "nonzero_params")) == "fail"
    assert by_row.pop(("prune-lenet300_100", "compression_ratio")) == "pass"
    assert by_row.pop(("prune-lenet5_caffe", "nonzero_params")) == "pass"


def test_a_quality_rule_leaves_the_counts_not_measurable(tmp_path, monkeypatch):
    def quality(spec):
        spec["variants"][0]["methods"][0]["settings"] = {"quality": 1.0, "kept": {"fc3": 0.26}}

    monkeypatch.setattr(papers.registry, "_current", registry_with(copied_spec(tmp_path, quality)))
    statuses = {c.metric: c.status for c in papers.check("prune-lenet300_100")}
    assert statuses == dict.fromkeys(("nonzero_params", "compression_ratio", "error"), "not_measurable")


def _measures(values):
    def measure(flat, settings):
        if isinstance(values, Exception):
            raise values
        return values

    return Method("measures", NoSettings, "measures", apply=lambda m, s, c: m, measure=measure)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            RuntimeError("no table"),
            "method 'measures' (measures (measures-dist)): measure failed: RuntimeError",
        ),
        ({"kept": 3.0}, "measure gave 'kept', which is no metric"),
        ({"compression_ratio": float("nan")}, "not a finite number"),
        ({"compression_ratio": Estimate(5.0, 6.0, 7.0)}, "low <= value <= high"),
        ([1, 2], "measure returned list, not a mapping"),
    ],
)
def test_a_method_whose_measure_fails_or_gives_no_metric_is_one_error_naming_it(
    values, message, tmp_path, monkeypatch
):
    spec = yaml.safe_load(SPEC.read_text())
    spec.update(id="measured", results=[])
    spec["variants"] = [
        {"id": "measured-lenet5", "name": "m", "base": "lenet5", "methods": [{"name": "measures"}]}
    ]
    spec["results"] = [
        {
            "variant": "measured-lenet5",
            "metric": "compression_ratio",
            "value": 5,
            "unit": "ratio",
            "source": "T",
        }
    ]
    path = tmp_path / "measured.yaml"
    path.write_text(yaml.safe_dump(spec))
    monkeypatch.setattr(papers.registry, "_current", registry_with(path, methods=(_measures(values),)))
    with pytest.raises(PluginError) as caught:
        papers.check("measured")
    assert message in caught.value.message and caught.value.field == "variants[0].methods[0]"
    assert caught.value.file == str(path)


# -- bad settings: one line, exit 2 ------------------------------------------------------------------


def _set(settings):
    def change(spec):
        spec["variants"][0]["methods"][0]["settings"] = settings

    return change


@pytest.mark.parametrize(
    ("settings", "field", "message"),
    [
        ({"kept": {"fc1": 1.5}}, "settings.kept.fc1", "less than or equal to 1"),
        ({"kept": {"fc1": 0.0}}, "settings.kept.fc1", "greater than 0"),
        (
            {"kept": {"fc9": 0.5}},
            "variants[0]",
            "settings.kept names 'fc9', which is no convolution or linear",
        ),
        ({"iterations": 2}, "variants[0]", "neither `kept` fractions nor a `quality`"),
    ],
)
def test_bad_settings_are_one_line_and_exit_2(settings, field, message, tmp_path, monkeypatch, run):
    path = copied_spec(tmp_path, _set(settings), variants=("lenet300_100",))
    monkeypatch.setattr(Registry, "discover", classmethod(lambda cls: registry_with(path)))
    monkeypatch.setattr(papers.registry, "_current", None)
    monkeypatch.chdir(tmp_path)
    result = run("compress", "prune-lenet300_100", "--out", "out")
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("papers: error: ")
    assert str(path) in result.stderr and field in result.stderr and message in result.stderr
    assert not (tmp_path / "out").exists()


# -- the proxy on MNIST digits -----------------------------------------------------------------------


def test_the_proxy_trains_prunes_and_retrains_and_keeps_the_settings_fractions():
    measured = han2015.pruning_proxy(
        "han2015-lenet5_caffe", epochs=1, iterations=1, retrain_epochs=1, limit=200
    )
    assert set(measured) == {"before", "after", "kept"}
    assert 0 <= measured["before"] <= 100 and 0 <= measured["after"] <= 100
    assert measured["kept"] == pytest.approx(
        {"conv1": 0.66, "conv2": 0.12, "fc1": 0.08, "fc2": 0.19}, abs=1e-3
    )
