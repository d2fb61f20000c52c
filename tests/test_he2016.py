"""He et al. 2016 (``he2016``): balanced quantization uses every code equally often and beats uniform
quantization on bell-shaped weights; hidden states on even levels; the step-by-step cells equal torch's
LSTM and GRU; the corpus comes from Learning to Prune's grammar; bit widths outside 1-32 are refused;
a smoke of the proxy."""

from __future__ import annotations

import pytest
import torch

from papers_plugins.compression import rnn_quantization as rq

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_balanced_codes_are_used_equally_often(bits):
    weight = torch.randn(64, 50, generator=torch.Generator().manual_seed(bits))
    values, counts = torch.unique(rq.balanced_quantize(weight, bits), return_counts=True)
    assert len(values) == 1 << bits
    assert int(counts.max() - counts.min()) <= 1
    steps = values.diff()
    torch.testing.assert_close(steps, torch.full_like(steps, float(steps[0])))
    torch.testing.assert_close(values.sum(), torch.tensor(0.0), atol=1e-5, rtol=0)


def test_balanced_beats_uniform_on_bell_shaped_weights():
    weight = torch.randn(200, 200, generator=torch.Generator().manual_seed(0))
    weight[0, 0] = 8.0  # one outlier stretches the uniform range
    balanced = float((rq.balanced_quantize(weight, 2) - weight).pow(2).mean())
    uniform = float((rq.uniform_quantize(weight, 2) - weight).pow(2).mean())
    assert balanced < uniform / 2


def test_hidden_states_take_even_levels_in_minus_one_to_one():
    values = torch.linspace(-1.2, 1.2, 101)
    assert torch.unique(rq.quantize_activation(values, 2)).tolist() == pytest.approx([-1, -1 / 3, 1 / 3, 1])
    assert torch.equal(rq.quantize_activation(values, None), values)


@pytest.mark.parametrize("bits", [0, 33, -1])
def test_bit_widths_outside_1_to_32_are_refused(bits):
    with pytest.raises(ValueError, match="bits is 1 to 32"):
        rq.balanced_quantize(torch.randn(4, 4), bits)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_the_step_by_step_cell_equals_torchs_recurrent_layer(cell):
    torch.manual_seed(0)
    model = rq.LanguageModel(11, cell, embedding=5, hidden=7).eval()
    tokens = torch.randint(0, 11, (3, 6))
    with torch.no_grad():
        torch.testing.assert_close(rq.run_cell(model, tokens, None), model(tokens), rtol=1e-5, atol=1e-5)


def test_the_corpus_is_sentences_of_the_grammar_ending_in_the_end_symbol():
    data = rq.corpus(20, 5)
    assert data.vocabulary[0] == rq.END and len(data.train) == 20 and len(data.test) == 5
    for row in data.train:
        words = row[row >= 0].tolist()
        assert words[0] == 0 and words[-1] == 0 and 0 not in words[1:-1]


def test_the_proxy_reports_float_and_quantized_perplexities():
    settings = {"train": 200, "test": 50, "epochs": 1, "bits": (2,), "margin": 1.0}
    results = rq.proxy("gru", settings)
    assert set(results) == {"float", "balanced-2", "uniform-2"}
    for measured in results.values():
        assert measured["perplexity"] > 1 and 0 <= measured["accuracy"] <= 100
