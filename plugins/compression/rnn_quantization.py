"""He, Wen, Zhou, Wu, Yao, Zhou and Zou, "Effective Quantization Methods for Recurrent Neural Networks"
(arXiv 1611.10176): balanced quantization of LSTM and GRU weights, and quantized activations.

Balanced quantization (the registry's reading of the abstract's "balanced quantization methods for
weights"; the paper's body was not read here): the k-bit code of a weight is its percentile bin, the
2^k bins cut at the weight matrix's i / 2^k quantiles, so every code is used by as many weights (the
histogram is equalised); the codes stand for 2^k evenly spaced levels symmetric about zero, scaled by
the least-squares factor. Uniform quantization, the baseline, cuts [-max, max] into 2^k even levels
instead, so most weights, near zero, share few codes. Activations (the cells' hidden states, in
(-1, 1)) are quantized uniformly to k bits.

The language model here is the registry's proxy, not the paper's: a word embedding, one LSTM or GRU
layer and a softmax over the vocabulary of sentences sampled from Learning to Prune's fixed grammar
(:data:`papers_plugins.compression.parsing.GRAMMAR`), trained in float with torch's ``nn.LSTM`` or
``nn.GRU``, then evaluated step by step with the weights and the hidden states quantized
(:func:`run_cell`). Perplexity is exp of the mean negative log-likelihood of the held-out words.

Hand-written: the two quantizers and the step-by-step cells that quantize their hidden states
(torch's fused RNNs have no hook between steps).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from papers_plugins.compression.he2016 import PROXY

END = "</s>"


def check_bits(bits: int) -> int:
    """A bit width of 1 to 32, else ``ValueError`` naming it."""
    if type(bits) is not int or not 1 <= bits <= 32:
        raise ValueError(f"bits is 1 to 32, not {bits!r}")
    return bits


def _levels(bits: int) -> torch.Tensor:
    count = 1 << bits
    return (2 * torch.arange(count, dtype=torch.float64) - (count - 1)) / max(count - 1, 1)


def balanced_quantize(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """``weight`` at ``bits`` bits by percentile bins (each of the 2^bits codes used equally often)
    mapped to even symmetric levels times their least-squares scale."""
    check_bits(bits)
    flat = weight.detach().double().reshape(-1)
    count = 1 << bits
    if count >= flat.numel():
        return weight.detach().clone()
    edges = (
        torch.quantile(flat, torch.arange(1, count, dtype=torch.float64) / count) if count > 1 else flat[:0]
    )
    codes = torch.bucketize(flat, edges)
    levels = _levels(bits)[codes]
    scale = (flat @ levels) / (levels @ levels).clamp(min=1e-30)
    return (levels * scale).reshape(weight.shape).to(weight.dtype)


def uniform_quantize(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """``weight`` at ``bits`` bits on 2^bits even levels spanning [-max |w|, max |w|]."""
    check_bits(bits)
    flat = weight.detach().double()
    top = flat.abs().max().clamp(min=1e-30)
    count = 1 << bits
    codes = torch.round((flat / top + 1) / 2 * (count - 1)).clamp(0, count - 1)
    return ((2 * codes - (count - 1)) / max(count - 1, 1) * top).to(weight.dtype)


def quantize_activation(values: torch.Tensor, bits: int | None) -> torch.Tensor:
    """Values in [-1, 1] (a hidden state) on 2^bits even levels; unchanged where ``bits`` is None."""
    if bits is None:
        return values
    count = 1 << check_bits(bits)
    codes = torch.round((values.clamp(-1, 1) + 1) / 2 * (count - 1))
    return 2 * codes / (count - 1) - 1


class LanguageModel(nn.Module):
    """Embedding, one LSTM or GRU layer, and a linear layer to the vocabulary."""

    def __init__(self, vocabulary: int, cell: str, embedding: int = 32, hidden: int = 64) -> None:
        super().__init__()
        if cell not in ("lstm", "gru"):
            raise ValueError(f"cell is lstm or gru, not {cell!r}")
        self.cell = cell
        self.embed = nn.Embedding(vocabulary, embedding)
        self.rnn = (nn.LSTM if cell == "lstm" else nn.GRU)(embedding, hidden, batch_first=True)
        self.out = nn.Linear(hidden, vocabulary)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        states, _ = self.rnn(self.embed(tokens))
        return self.out(states)


def run_cell(model: LanguageModel, tokens: torch.Tensor, activation_bits: int | None) -> torch.Tensor:
    """The model's logits computed one step at a time with torch's gate equations, the hidden state
    quantized to ``activation_bits`` after each step (float where None)."""
    rnn = model.rnn
    w_ih, w_hh, b_ih, b_hh = rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0
    inputs = model.embed(tokens)
    batch, steps, _ = inputs.shape
    h = inputs.new_zeros(batch, rnn.hidden_size)
    c = inputs.new_zeros(batch, rnn.hidden_size)
    outputs = []
    for t in range(steps):
        x = inputs[:, t]
        if model.cell == "lstm":
            i, f, g, o = (F.linear(x, w_ih, b_ih) + F.linear(h, w_hh, b_hh)).chunk(4, 1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
        else:
            r_x, z_x, n_x = F.linear(x, w_ih, b_ih).chunk(3, 1)
            r_h, z_h, n_h = F.linear(h, w_hh, b_hh).chunk(3, 1)
            r, z = torch.sigmoid(r_x + r_h), torch.sigmoid(z_x + z_h)
            n = torch.tanh(n_x + r * n_h)
            h = (1 - z) * n + z * h
        h = quantize_activation(h, activation_bits)
        outputs.append(h)
    return model.out(torch.stack(outputs, 1))


@dataclass(frozen=True)
class Corpus:
    vocabulary: tuple[str, ...]
    train: torch.Tensor
    """Sentences as rows of word indices, padded with -1."""
    test: torch.Tensor


def corpus(train: int, test: int, seed: int = 0) -> Corpus:
    """Sentences sampled from Learning to Prune's grammar, each ended by ``</s>``, as index rows."""
    from papers_plugins.compression.parsing import GRAMMAR, Grammar, treebank, words

    grammar = Grammar.from_rules(GRAMMAR)
    sentences = [[*words(tree), END] for tree in treebank(grammar, train + test, seed)]
    vocabulary = (END, *sorted({w for sentence in sentences for w in sentence} - {END}))
    index = {w: i for i, w in enumerate(vocabulary)}
    width = max(len(s) for s in sentences)
    rows = torch.full((len(sentences), width + 1), -1, dtype=torch.long)
    for row, sentence in enumerate(sentences):
        rows[row, 0] = 0  # each sentence starts after an end symbol
        rows[row, 1 : len(sentence) + 1] = torch.tensor([index[w] for w in sentence])
    return Corpus(vocabulary, rows[:train], rows[train:])


def nll(logits: torch.Tensor, rows: torch.Tensor) -> tuple[float, int, int]:
    """Summed negative log-likelihood of the next words, their count, and how many are the top guess."""
    targets = rows[:, 1:]
    mask = targets >= 0
    chosen = logits[mask]
    wanted = targets[mask]
    loss = F.cross_entropy(chosen, wanted, reduction="sum")
    return float(loss), int(mask.sum()), int((chosen.argmax(-1) == wanted).sum())


def train(model: LanguageModel, rows: torch.Tensor, epochs: int, seed: int = 0, batch: int = 32) -> None:
    """Adam on the next-word cross-entropy, shuffled batches from a fixed seed."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(rows), generator=generator)
        for start in range(0, len(rows), batch):
            chunk = rows[order[start : start + batch]]
            logits = model(chunk[:, :-1].clamp(min=0))
            mask = chunk[:, 1:] >= 0
            loss = F.cross_entropy(logits[mask], chunk[:, 1:][mask])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    model.eval()


def evaluate(
    model: LanguageModel, rows: torch.Tensor, activation_bits: int | None = None
) -> dict[str, float]:
    """Perplexity and next-word top-1 (percent) on ``rows``, computed step by step."""
    with torch.no_grad():
        logits = run_cell(model, rows[:, :-1].clamp(min=0), activation_bits)
    total, count, correct = nll(logits, rows)
    return {"perplexity": float(torch.exp(torch.tensor(total / count))), "accuracy": 100.0 * correct / count}


def quantized_copy(model: LanguageModel, bits: int, quantizer: str) -> LanguageModel:
    """A copy whose recurrent layer's weight matrices are quantized to ``bits`` (``balanced`` or
    ``uniform``); embeddings, biases and the output layer stay float."""
    import copy

    if quantizer not in ("balanced", "uniform"):
        raise ValueError(f"quantizer is balanced or uniform, not {quantizer!r}")
    function = balanced_quantize if quantizer == "balanced" else uniform_quantize
    out = copy.deepcopy(model)
    with torch.no_grad():
        for name in ("weight_ih_l0", "weight_hh_l0"):
            weight = getattr(out.rnn, name)
            weight.copy_(function(weight, bits))
    return out


def proxy(cell: str, settings: dict[str, Any] = PROXY, progress: Any = None) -> dict[str, Any]:
    """Train a float language model on the synthetic corpus, then measure held-out perplexity and
    next-word top-1 in float and with weights and hidden states at each bit width, balanced and
    uniform."""
    from papers.train import intra_op_threads

    data = corpus(settings["train"], settings["test"])
    with intra_op_threads(1), torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = LanguageModel(len(data.vocabulary), cell)
        train(model, data.train, settings["epochs"])
        results: dict[str, Any] = {"float": evaluate(model, data.test)}
        for bits in settings["bits"]:
            for quantizer in ("balanced", "uniform"):
                quantized = quantized_copy(model, bits, quantizer)
                results[f"{quantizer}-{bits}"] = evaluate(quantized, data.test, activation_bits=bits)
                if progress:
                    progress(f"{cell} {quantizer} {bits}-bit: {results[f'{quantizer}-{bits}']}")
    return results
