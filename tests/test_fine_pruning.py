"""Fine-Pruning (``fine_pruning``): Bayesian optimisation over per-layer pruning rates within their
bounds, never scoring below the point it starts from; magnitude pruning by rate; rounds that search,
prune and fine-tune with the pruned weights held at zero; bad settings refused in one line; a smoke of
the MNIST proxy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

import papers
import papers.registry
from papers.plugins import PluginInfo, PluginManager
from papers.registry import Registry
from papers_plugins.compression import bayes_pruning
from papers_plugins.compression.bayes_pruning import (
    FinePruneSettings,
    fine_prune,
    magnitude_masks,
    objective,
    search_rates,
)
from papers_plugins.compression.pruning import shuffled_batches
from tests.conftest import REPO
from tests.test_methods import spec_plugin

SPEC = REPO / "specs" / "compression" / "fine_pruning.yaml"

pytestmark = pytest.mark.usefixtures("one_thread")


# -- the search ---------------------------------------------------------------------------------------


def bowl(rates: dict[str, float]) -> float:
    """Highest at a = 0.3, b = 0.7."""
    return -((rates["a"] - 0.3) ** 2) - (rates["b"] - 0.7) ** 2


BOUNDS = {"a": (0.0, 0.9), "b": (0.2, 0.95)}


def test_the_search_stays_within_the_bounds_and_never_ends_below_its_start():
    search = search_rates(bowl, BOUNDS, start={"a": 0.0, "b": 0.0}, init_points=2, iterations=3)
    assert len(search.candidates) == 1 + 2 + 3
    for rates, _ in search.candidates:
        assert all(BOUNDS[name][0] <= rate <= BOUNDS[name][1] for name, rate in rates.items())
    assert search.candidates[0][0] == {"a": 0.0, "b": 0.2}, "the start, clipped into the bounds"
    assert search.initial == bowl({"a": 0.0, "b": 0.2})
    assert search.objective >= search.initial
    assert search.objective == max(value for _, value in search.candidates)
    assert bowl(search.rates) == search.objective


def test_the_search_is_repeatable_from_its_seed():
    first = search_rates(bowl, BOUNDS, start={}, init_points=2, iterations=2, seed=3)
    again = search_rates(bowl, BOUNDS, start={}, init_points=2, iterations=2, seed=3)
    assert first.candidates == again.candidates


@pytest.mark.parametrize("bounds", [{"a": (0.0, 1.0)}, {"a": (-0.1, 0.5)}, {"a": (0.6, 0.5)}])
def test_rates_outside_zero_to_one_are_refused(bounds):
    with pytest.raises(ValueError, match="lie in \\[0, 1\\)"):
        search_rates(bowl, bounds, start={}, init_points=1, iterations=0)


def test_the_objective_weighs_accuracy_by_gamma_and_sparsity_by_the_rest():
    assert objective(0.9, 0.5, 1.0) == 0.9
    assert objective(0.9, 0.5, 0.0) == 0.5
    assert objective(0.9, 0.5, 0.75) == pytest.approx(0.75 * 0.9 + 0.25 * 0.5)


# -- pruning by rate and the rounds -----------------------------------------------------------------------


def tiny() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(16, 12), torch.nn.ReLU(), torch.nn.Linear(12, 3)
    )


def test_a_rate_removes_that_fraction_of_the_smallest_weights_and_what_is_pruned_stays_pruned():
    model = tiny()
    weight = model.get_submodule("1").weight
    (mask,) = magnitude_masks(model, {"1": 0.75}).values()
    assert int(mask.sum()) == 48
    assert weight.abs()[mask == 1].min() >= weight.abs()[mask == 0].max()
    with torch.no_grad():
        weight.mul_(mask)
    (lower,) = magnitude_masks(model, {"1": 0.25}).values()
    assert torch.equal(lower, mask), "a lower rate than the layer has prunes nothing back"
    with pytest.raises(ValueError, match="in \\[0, 1\\)"):
        magnitude_masks(model, {"1": 1.0})


def test_rounds_search_prune_and_fine_tune_with_the_pruned_weights_held_at_zero():
    model = tiny()
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(96, 1, 4, 4, generator=generator)
    labels = (images.flatten(1)[:, :3].argmax(1)).long()  # learnable: the largest of three pixels
    batches = shuffled_batches(images[:64], labels[:64], 16)
    settings = FinePruneSettings(
        bounds={"1": [0.1, 0.9], "3": [0.0, 0.5]},
        gamma=0.5,
        rounds=2,
        init_points=1,
        iterations=1,
        candidate_epochs=1,
        finetune_epochs=1,
        retrain_lr=0.05,
    )
    rounds = fine_prune(model, settings, batches, (images[64:], labels[64:]))
    assert len(rounds) == 2
    for record in rounds:
        assert record.search.objective >= record.search.initial
        assert 0 <= record.accuracy <= 1
    final = rounds[-1].search.rates
    for name in ("1", "3"):
        weight = model.get_submodule(name).weight
        zeros = int((weight == 0).sum())
        assert zeros >= round(weight.numel() * final[name]) - 1, "the last round's rate, held through tuning"
    assert rounds[1].sparsity >= rounds[0].sparsity - 1e-9, "pruned weights are never restored"


# -- settings ---------------------------------------------------------------------------------------------


def copied_spec(tmp_path: Path, settings: dict) -> Path:
    spec = yaml.safe_load(SPEC.read_text())
    spec["id"] = "bo"
    spec["variants"][0]["id"] = "bo-lenet5_caffe"
    spec["variants"][0]["methods"][0]["settings"] = settings
    path = tmp_path / "bo.yaml"
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
        ({"bounds": {"fc1": [0.0, 1.0]}}, "settings.bounds.fc1[1]", "less than 1"),
        ({"bounds": {"fc1": [-0.2, 0.5]}}, "settings.bounds.fc1[0]", "greater than or equal to 0"),
        ({"bounds": {"fc1": [0.6, 0.5]}}, "settings", "low < high"),
        ({"bounds": {"fc9": [0.0, 0.5]}}, "variants[0]", "settings.bounds names 'fc9', which is no"),
        ({"bounds": {"fc1": [0.0, 0.5]}, "gamma": 1.5}, "settings.gamma", "less than or equal to 1"),
    ],
)
def test_bad_settings_are_one_line_and_exit_2(settings, field, message, tmp_path, monkeypatch, run):
    path = copied_spec(tmp_path, settings)
    monkeypatch.setattr(Registry, "discover", classmethod(lambda cls: registry_with(path)))
    monkeypatch.setattr(papers.registry, "_current", None)
    monkeypatch.chdir(tmp_path)
    result = run("compress", "bo-lenet5_caffe", "--out", "out", "--data", "builtin:mnist5k")
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("papers: error: ")
    assert str(path) in result.stderr and field in result.stderr and message in result.stderr
    assert not (tmp_path / "out").exists()


def test_compress_with_data_searches_on_its_training_split_and_writes_the_pruned_model(
    tmp_path, monkeypatch, run
):
    light = {"bounds": {"fc1": [0.5, 0.9]}, "rounds": 1, "init_points": 1, "iterations": 0}
    path = copied_spec(tmp_path, {**light, "candidate_epochs": 0, "finetune_epochs": 0})
    monkeypatch.setattr(Registry, "discover", classmethod(lambda cls: registry_with(path)))
    monkeypatch.setattr(papers.registry, "_current", None)
    result = run("compress", "bo-lenet5_caffe", "--out", str(tmp_path / "out"), "--data", "builtin:mnist5k")
    assert result.exit_code == 0, result.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    pruned = report["nonzero_before"] - report["nonzero_after"]
    assert 0.5 * 400_000 - 1 <= pruned <= 0.9 * 400_000 + 1, "fc1 alone, at a rate within its bounds"
    assert report["metric_before"] is not None and report["metric_after"] is not None


def test_compress_without_data_is_refused_in_one_line(run, tmp_path):
    result = run("compress", "fine_pruning-lenet5_caffe", "--out", str(tmp_path / "out"))
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "give --data" in result.stderr
    assert not (tmp_path / "out").exists()


# -- the proxy on MNIST digits -----------------------------------------------------------------------


def test_the_proxy_trains_searches_prunes_and_reports_each_round():
    overrides = {"rounds": 1, "init_points": 1, "iterations": 1, "candidate_epochs": 0, "finetune_epochs": 1}
    measured = bayes_pruning.fine_pruning_proxy(epochs=1, overrides=overrides, limit=300)
    assert 0 <= measured["before"] <= 100 and 0 <= measured["after"] <= 100
    assert set(measured["rates"]) == {"conv1", "conv2", "fc1", "fc2"}
    (record,) = measured["rounds"]
    assert record.search.objective >= record.search.initial
    assert measured["rates"] == pytest.approx(record.search.rates, abs=0.01)
