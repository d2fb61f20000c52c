"""The LC algorithm (``carreira2017``, ``carreira2017_quantization``): the C steps as projections (an
adaptive k-means codebook, pruning to a kept fraction, a truncated SVD exact at full rank), the
compression ratio the settings give, the L/C alternation with a growing μ ending on compressed
weights, bad settings refused in one line, the topics, and a smoke of the trade-off."""

from __future__ import annotations

import pytest
import torch
import yaml

import papers
import papers.registry
from papers.methods import static_measurements, variant_steps
from papers.registry import Registry
from papers_plugins.compression import lc
from papers_plugins.compression.pruning import shuffled_batches
from tests.conftest import REPO
from tests.test_han2015 import registry_with

pytestmark = pytest.mark.usefixtures("one_thread")


def settings(**given) -> lc.LCSettings:
    return lc.LCSettings(**given)


def test_the_quantizing_c_step_is_k_means_on_the_weights():
    weight = torch.randn(40, 30, generator=torch.Generator().manual_seed(0))
    state: dict = {}
    quantized = lc.project(weight, settings(c_step="quantize", codebook=4), state)
    codebook = torch.tensor(sorted(state["codebook"]), dtype=weight.dtype)
    assert set(quantized.unique().tolist()) == set(codebook.tolist())
    nearest = codebook[(weight.unsqueeze(-1) - codebook).abs().argmin(-1)]
    assert torch.equal(quantized, nearest), "each weight takes its nearest code"
    for code in codebook:  # each code is the mean of its weights (a k-means fixed point)
        assert weight[quantized == code].mean().item() == pytest.approx(code.item(), rel=1e-4, abs=1e-6)


def test_the_pruning_c_step_keeps_the_largest_weights():
    weight = torch.randn(20, 50, generator=torch.Generator().manual_seed(1))
    pruned = lc.project(weight, settings(c_step="prune", kept=0.1), {})
    alive = pruned != 0
    assert int(alive.sum()) == 100 and torch.equal(pruned[alive], weight[alive])
    assert weight.abs()[alive].min() >= weight.abs()[~alive].max()


@pytest.mark.parametrize("shape", [(30, 20), (16, 8, 3, 3)])
def test_the_low_rank_c_step_is_exact_at_full_rank_and_of_the_given_rank_below(shape):
    weight = torch.randn(*shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    full = min(shape[0], weight[0].numel())
    assert torch.allclose(
        lc.project(weight, settings(c_step="low_rank", rank=full), {}), weight, rtol=1e-5, atol=1e-10
    )
    low = lc.project(weight, settings(c_step="low_rank", rank=3), {})
    assert torch.linalg.matrix_rank(low.reshape(shape[0], -1)).item() == 3


@pytest.mark.parametrize(
    ("variant", "expected"),
    [
        # 266,200 weights of 32 bits over 1 bit each and two 32-bit codes per layer
        ("carreira2017_quantization-lenet300_100-k2", 266200 * 32 / (266200 + 3 * 2 * 32)),
        ("carreira2017_quantization-lenet300_100-k16", 266200 * 32 / (266200 * 4 + 3 * 16 * 32)),
        # rank 10: 10 × (300 + 784) + 10 × (100 + 300) + 10 × (10 + 100) floats
        ("carreira2017-lenet300_100-rank10", 266200 / (10 * (1084 + 400 + 110))),
        # 5% kept of each layer: values in 32 bits and a bit per weight for where they are
        ("carreira2017-lenet300_100-prune", 266200 * 32 / (32 * (11760 + 1500 + 50) + 266200)),
    ],
)
def test_the_compression_ratio_follows_from_the_settings(variant, expected):
    assert static_measurements(variant)["compression_ratio"] == pytest.approx(expected)


def test_the_lc_algorithm_grows_mu_and_ends_on_compressed_weights():
    torch.manual_seed(0)
    model = papers.build_model("lenet300_100")
    flat = papers.expand_variant("lenet300_100")
    chosen = settings(c_step="quantize", codebook=3, lc_steps=4, mu0=0.01, mu_growth=2.0)
    layers = lc.compressed_layers(flat, chosen)
    images = torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    labels = torch.randint(0, 10, (64,), generator=torch.Generator().manual_seed(4))
    mus = []
    lc.lc(model, layers, chosen, shuffled_batches(images, labels, 32), on_step=lambda k, mu: mus.append(mu))
    assert mus == pytest.approx([0.01, 0.02, 0.04, 0.08])
    for layer in ("fc1", "fc2", "fc3"):
        assert len(model.get_submodule(layer).weight.unique()) <= 3, layer


def test_the_multipliers_make_it_an_augmented_lagrangian(monkeypatch):
    """With multipliers the C step compresses w − λ/μ: from the second step on, it is given other weights
    than the model's (the quadratic penalty alone gives it the weights themselves)."""
    seen = {True: [], False: []}
    original = lc.project
    for multipliers in (True, False):
        torch.manual_seed(0)
        model = papers.build_model("lenet300_100")
        chosen = settings(c_step="prune", kept=0.5, lc_steps=2, layers=["fc3"], multipliers=multipliers)

        def recording(weight, s, state, multipliers=multipliers, model=model):
            seen[multipliers].append(torch.equal(weight, model.fc3.weight))
            return original(weight, s, state)

        monkeypatch.setattr(lc, "project", recording)
        images, labels = torch.rand(32, 1, 28, 28), torch.randint(0, 10, (32,))
        lc.lc(model, lc.compressed_layers(papers.expand_variant("lenet300_100"), chosen), chosen,
              shuffled_batches(images, labels, 32))  # fmt: skip
    assert seen[False] == [True, True, True] and seen[True] == [True, True, False]


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"c_step": "quantize"}, "c_step quantize takes `codebook`"),
        ({"c_step": "quantize", "codebook": 1}, "greater than or equal to 2"),
        ({"c_step": "low_rank", "rank": 101}, "settings.rank 101 is above layer 'fc2''s limit 100"),
        ({"c_step": "low_rank", "rank": 0}, "greater than or equal to 1"),
        ({"c_step": "prune", "kept": 0.1, "layers": ["act1"]}, "settings.layers names 'act1'"),
    ],
)
def test_bad_settings_are_one_line_and_exit_2(given, message, tmp_path, monkeypatch, run):
    spec = yaml.safe_load((REPO / "specs" / "compression" / "carreira2017.yaml").read_text())
    spec["id"] = "bad_lc"
    spec["variants"] = [{"id": "bad_lc-lenet300_100", "name": "b", "base": "lenet300_100",
                         "methods": [{"name": "lc_compress", "settings": given}]}]  # fmt: skip
    path = tmp_path / "bad_lc.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    monkeypatch.setattr(Registry, "discover", classmethod(lambda cls: registry_with(path)))
    monkeypatch.setattr(papers.registry, "_current", None)
    result = run("build", "bad_lc-lenet300_100")
    assert result.exit_code == 2 and result.stdout == "" and result.stderr.count("\n") == 1
    assert (
        str(path) in result.stderr and "variants[0].methods[0]" in result.stderr and message in result.stderr
    )


@pytest.mark.parametrize(
    ("topic", "paper"),
    [
        ("review", "carreira2017"),
        ("quantization", "carreira2017_quantization"),
        ("compression", "carreira2017"),
        ("compression", "carreira2017_quantization"),
    ],
)
def test_papers_list_by_topic_lists_both_parts(topic, paper, run):
    assert f"\n{paper} " in run("list", "--topic", topic).stdout


def test_the_tradeoff_rows_and_chart():
    (step,) = variant_steps("carreira2017_quantization-lenet300_100-k4")
    assert step.settings.codebook == 4
    made = lc.tradeoff(
        [
            ("carreira2017_quantization-lenet300_100-k2", {"lc_steps": 1}),
            ("carreira2017-lenet300_100-rank10", {"lc_steps": 1}),
        ],
        reference_epochs=1,
        limit=300,
    )
    assert [row.setting for row in made.rows] == ["K = 2", "rank 10"]
    assert made.rows[0].reference == made.rows[1].reference, "one reference network"
    assert all(0 <= v <= 100 for row in made.rows for v in (row.reference, row.direct, row.lc))
    assert made.svg().startswith("<svg") and "LC algorithm" in made.svg() and len(made.lines()) == 3
