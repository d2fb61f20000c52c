"""Dynamic Network Surgery (``dns``): the two-threshold mask update, the decaying update probability, the
straight-through mask, surgery keeping the paper's fractions, ``papers compress`` on its LeNet, Table
1's static columns from the settings, bad settings refused in one line, a smoke of the MNIST proxy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

import papers
import papers.registry
from papers.compression import read_container
from papers.registry import Registry
from papers_plugins.compression import pruning
from papers_plugins.compression.surgery import (
    SurgerySettings,
    _straight_through,
    surgery,
    surgery_proxy,
    update_mask,
    update_probability,
)
from tests.conftest import REPO
from tests.test_han2015 import registry_with

SPEC = REPO / "specs" / "compression" / "dns.yaml"

pytestmark = pytest.mark.usefixtures("one_thread")


def seeded(variant: str) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return papers.build_model(variant).eval()


def random_batches(shape: tuple[int, ...], count: int = 64, batch_size: int = 32):
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(count, *shape, generator=generator)
    labels = torch.randint(0, 10, (count,), generator=generator)
    return pruning.shuffled_batches(images, labels, batch_size)


# -- the mask update (eq. 3) -------------------------------------------------------------------------


def test_a_threshold_prunes_below_a_splices_above_b_and_leaves_the_band_alone():
    weight = torch.tensor([0.5, 0.95, 1.05, 1.5, 0.5, 0.95, 1.05, 1.5])
    mask = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0])
    new, threshold = update_mask(-weight, mask, 0.1, threshold=1.0)  # signs do not matter
    assert threshold == 1.0
    assert new.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0], "a = 0.9, b = 1.1"


def test_a_kept_fraction_keeps_exactly_that_many_preferring_alive_connections_within_the_margin():
    weight = torch.tensor([1.0, 1.05, 2.0, 0.1, 0.2, 0.3])
    mask = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0])
    new, threshold = update_mask(weight, mask, 0.1, kept=1 / 3)
    assert new.tolist() == [1.0, 0.0, 1.0, 0.0, 0.0, 0.0], "1.0 alive beats 1.05 pruned: 1.05 < b"
    assert 1.05 < 1.1 * threshold < 2.0 and 0.9 * threshold > 0.3
    spliced, _ = update_mask(
        torch.tensor([1.0, 1.3, 0.1, 0.1]), torch.tensor([1.0, 0.0, 1.0, 1.0]), 0.1, kept=0.25
    )
    assert spliced.tolist() == [0.0, 1.0, 0.0, 0.0], "a pruned weight well above an alive one is spliced"


def test_the_update_probability_starts_at_one_decays_and_stops():
    settings = SurgerySettings(kept={"fc1": 0.5}, gamma=1e-2, power=1.0, stop=300)
    values = [update_probability(i, settings) for i in (0, 100, 200, 299, 300)]
    assert values[:4] == pytest.approx([1.0, 0.5, 1 / 3, 1 / 3.99])
    assert values[4] == 0.0


def test_the_masked_weights_compute_but_every_weight_takes_the_gradient():
    weight = torch.nn.Parameter(torch.tensor([1.0, 2.0, 3.0]))
    masked = _straight_through()(torch.tensor([1.0, 0.0, 1.0]))
    inputs = torch.tensor([4.0, 5.0, 6.0])
    output = (masked(weight) * inputs).sum()
    assert float(output.detach()) == 1 * 4 + 3 * 6
    output.backward()
    assert weight.grad.tolist() == [4.0, 5.0, 6.0], "the pruned weight is updated too (eq. 4)"


# -- surgery -------------------------------------------------------------------------------------------


def test_surgery_keeps_the_settings_fractions_and_leaves_masked_weights_in_plain_layers():
    model = seeded("lenet300_100")
    keys = set(model.state_dict())
    kept = {"fc1": 0.018, "fc2": 0.018, "fc3": 0.055}
    settings = SurgerySettings(kept=kept, epochs=2, lr=0.05, gamma=0.0)
    result = surgery(
        model, settings, papers.expand_variant("lenet300_100"), random_batches((1, 28, 28)), "cpu"
    )
    assert set(model.state_dict()) == keys, "no parametrization is left behind"
    for name, fraction in kept.items():
        weight = model.get_submodule(name).weight.detach()
        assert int(torch.count_nonzero(weight)) == round(weight.numel() * fraction)
        assert torch.equal(weight != 0, result[name]["mask"].bool())


def test_surgery_splices_back_connections_that_training_makes_large():
    model = seeded("lenet300_100")
    flat = papers.expand_variant("lenet300_100")
    first = SurgerySettings(kept={"fc1": 0.05}, epochs=0)
    start = surgery(seeded("lenet300_100"), first, flat, None, "cpu")["fc1"]["mask"].bool()
    settings = SurgerySettings(
        kept={"fc1": 0.05}, epochs=3, lr=0.5, momentum=0.0, weight_decay=0.0, gamma=0.0
    )
    end = surgery(model, settings, flat, random_batches((1, 28, 28)), "cpu")["fc1"]["mask"].bool()
    assert int((end & ~start).sum()) > 0, "some connection pruned at the start is alive at the end"


def test_a_crate_sets_the_threshold_from_the_layers_mean_and_spread():
    model = seeded("lenet300_100")
    magnitude = model.fc2.weight.detach().abs()
    threshold = float(magnitude.mean() + 1.0 * magnitude.std(unbiased=False))
    result = surgery(
        model, SurgerySettings(crate={"fc2": 1.0}), papers.expand_variant("lenet300_100"), None, "cpu"
    )
    assert result["fc2"]["threshold"] == pytest.approx(threshold)
    assert result["fc2"]["c"] == pytest.approx(1.0)
    assert torch.equal(model.fc2.weight != 0, magnitude > 0.9 * threshold), "from all-alive: pruned below a"


# -- papers compress -----------------------------------------------------------------------------------


def test_compress_writes_the_lenet_sparsely_at_the_papers_fractions(run, tmp_path):
    result = run("compress", "dns-lenet300_100", "--out", str(tmp_path), "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["bytes_after"] < report["bytes_before"] / 15
    state, _ = read_container(tmp_path / "model.safetensors")
    for name, count in (("fc1", 235_200), ("fc2", 30_000), ("fc3", 1_000)):
        kept = {"fc1": 0.018, "fc2": 0.018, "fc3": 0.055}[name]
        assert int(torch.count_nonzero(state[f"{name}.weight"])) == round(count * kept)


# -- the static checks: Table 1 from the settings --------------------------------------------------------


def test_table_1s_parameters_and_ratios_pass_from_the_settings_alone():
    checks = papers.check("dns")
    static = [c for c in checks if c.metric in ("nonzero_params", "compression_ratio")]
    assert len(static) == 6 and all(c.status == "pass" for c in static), static
    assert {c.status for c in checks if c not in static} == {"not_measurable"}
    alexnet = next(c for c in static if c.variant == "dns-alexnet" and c.metric == "compression_ratio")
    assert alexnet.measured == pytest.approx(17.665, abs=1e-3)


def copied_spec(tmp_path: Path, change) -> Path:
    """dns's spec as another paper (``surgery``), its LeNet-300-100 variant only, changed by ``change``."""
    spec = yaml.safe_load(SPEC.read_text())
    spec["id"] = "surgery"
    spec["variants"] = [
        dict(v, id="surgery-lenet300_100") for v in spec["variants"] if v["base"] == "lenet300_100"
    ]
    spec["results"] = []
    change(spec)
    path = tmp_path / "surgery.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_a_wrong_ratio_in_a_copied_spec_fails(tmp_path, monkeypatch):
    def wrong(spec):
        spec["results"] = [
            {
                "variant": "surgery-lenet300_100",
                "metric": "compression_ratio",
                "value": 70,
                "unit": "ratio",
                "source": "T",
            }
        ]

    monkeypatch.setattr(papers.registry, "_current", registry_with(copied_spec(tmp_path, wrong)))
    (check,) = papers.check("surgery")
    assert check.status == "fail"


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
        ({"kept": {"fc1": 0.5}, "crate": {"fc1": 1.0}}, "variants[0]", "both name 'fc1'"),
        ({"kept": {"fc1": 0.5}, "margin": 1.0}, "settings.margin", "less than 1"),
        ({"kept": {"fc1": 0.5}, "gamma": -1.0}, "settings.gamma", "greater than or equal to 0"),
        ({"epochs": 2}, "variants[0]", "neither `kept` fractions nor a `crate`"),
    ],
)
def test_bad_settings_are_one_line_and_exit_2(settings, field, message, tmp_path, monkeypatch, run):
    def change(spec):
        spec["variants"][0]["methods"][0]["settings"] = settings

    path = copied_spec(tmp_path, change)
    monkeypatch.setattr(Registry, "discover", classmethod(lambda cls: registry_with(path)))
    monkeypatch.setattr(papers.registry, "_current", None)
    monkeypatch.chdir(tmp_path)
    result = run("compress", "surgery-lenet300_100", "--out", "out")
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("papers: error: ")
    assert str(path) in result.stderr and field in result.stderr and message in result.stderr
    assert not (tmp_path / "out").exists()


# -- the proxy on MNIST digits ---------------------------------------------------------------------------


def test_the_proxy_trains_then_operates_at_the_papers_fractions():
    measured = surgery_proxy("dns-lenet5_caffe", epochs=1, surgery_epochs=1, limit=200)
    assert set(measured) == {"before", "after", "kept", "c"}
    assert 0 <= measured["before"] <= 100 and 0 <= measured["after"] <= 100
    assert measured["kept"] == pytest.approx(
        {"conv1": 0.142, "conv2": 0.031, "fc1": 0.007, "fc2": 0.043}, abs=1e-3
    )
