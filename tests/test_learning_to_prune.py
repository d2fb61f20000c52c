"""Learning to Prune (Vieira and Eisner 2017): the pruned CKY parser, LOLS and the frontier."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from papers_plugins.compression import parsing
from papers_plugins.compression.parsing import (
    GRAMMAR,
    Grammar,
    Policy,
    constituents,
    evaluate,
    lols,
    parse,
    prunable,
    reward,
    treebank,
    words,
)

SHARP = Grammar.from_rules(GRAMMAR)
SMOOTH = Grammar.from_rules(GRAMMAR, smoothing=0.01)


def _brute_force(grammar: Grammar, sentence: list[str]) -> tuple[float, set]:
    """The best tree by enumerating every binary bracketing and labelling (tiny sentences only)."""
    s = len(grammar.symbols)

    def best(i: int, k: int, a: int) -> tuple[float, frozenset]:
        if k - i == 1:
            return float(grammar.lexicon[sentence[i]][a]), frozenset()
        options = [(-math.inf, frozenset())]
        for j, b, c in itertools.product(range(i + 1, k), range(s), range(s)):
            rule = grammar.binary[a, b, c]
            if rule == -math.inf:
                continue
            left, right = best(i, j, b), best(j, k, c)
            options.append((rule + left[0] + right[0], left[1] | right[1] | {(grammar.symbols[a], i, k)}))
        return max(options, key=lambda o: o[0])

    score, spans = best(0, len(sentence), grammar.symbols.index("S"))
    return score, set(spans)


def test_the_grammar_is_a_pcfg_and_a_bad_one_is_refused():
    assert {lhs for lhs, _, _ in GRAMMAR} == set(SHARP.symbols)
    for a in range(len(SMOOTH.symbols)):  # smoothing keeps every left-hand side a distribution
        total = np.exp(SMOOTH.binary[a]).sum() + sum(np.exp(v[a]) for v in SMOOTH.lexicon.values())
        assert total == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"rules of S sum to 0\.5"):
        Grammar.from_rules([("S", ("S", "S"), 0.25), ("S", ("a",), 0.25)])


def test_viterbi_cky_finds_the_best_tree_that_brute_force_finds():
    for sentence in (["the", "dog", "saw", "the", "cat"], ["they", "fish", "with", "a", "duck"]):
        score, spans = _brute_force(SHARP, sentence)
        assert score > -math.inf
        assert parse(SHARP, sentence, np.ones((6, 6), dtype=bool)).spans == spans


def test_an_unambiguous_sentence_parses_to_its_gold_tree():
    subject = ("NP", ("DT", "the"), ("NN", "dog"))
    tree = ("S", subject, ("VP", ("VB", "chased"), ("NP", ("DT", "a"), ("NN", "cat"))))
    gold, width = constituents(tree)
    assert width == 5 and words(tree) == ["the", "dog", "chased", "a", "cat"]
    assert gold == {("S", 0, 5), ("NP", 0, 2), ("VP", 2, 5), ("NP", 3, 5)}
    result = parse(SMOOTH, words(tree), np.ones((6, 6), dtype=bool))
    assert result.spans == gold
    assert reward(gold, result, 0.001) == pytest.approx(4 - 0.001 * result.edges)


def test_the_policy_decides_only_spans_between_width_two_and_the_sentence():
    asked = []
    parse(SMOOTH, ["they", "saw", "the", "big", "dog"], lambda i, k: asked.append((i, k)) or True)
    assert sorted(asked) == sorted(prunable(5))
    assert all(2 <= k - i < 5 for i, k in asked)


def test_pruning_spans_saves_runtime_and_pruning_everything_leaves_no_parse():
    sentence = words(treebank(SHARP, 1, seed=3, lengths=(8, 8))[0])
    full = parse(SMOOTH, sentence, np.ones((9, 9), dtype=bool))
    mask = np.ones((9, 9), dtype=bool)
    edges = full.edges
    for i, k in prunable(8)[::3]:
        mask[i, k] = False
        pruned = parse(SMOOTH, sentence, mask).edges
        assert pruned < edges  # each span pruned removes the rule applications over it
        edges = pruned
    nothing = parse(SMOOTH, sentence, np.zeros((9, 9), dtype=bool))
    assert nothing.spans == set() and nothing.edges == 0


def test_the_treebank_is_seeded_and_the_unpruned_parser_recovers_most_of_it():
    trees = treebank(SHARP, 30, seed=0, lengths=(5, 10))
    assert trees == treebank(SHARP, 30, seed=0, lengths=(5, 10))
    assert trees != treebank(SHARP, 30, seed=1, lengths=(5, 10))
    assert all(5 <= len(words(t)) <= 10 for t in trees)
    assert evaluate(SMOOTH, Policy(), trees).recall > 85.0


def test_lols_trades_accuracy_for_runtime_as_lambda_grows():
    trees = treebank(SHARP, 20, seed=0, lengths=(5, 8))
    full = evaluate(SMOOTH, Policy(), trees)
    cheap = evaluate(SMOOTH, lols(SMOOTH, trees, 1e-6, iterations=1), trees)
    dear = evaluate(SMOOTH, lols(SMOOTH, trees, 1e-3, iterations=1), trees)
    assert dear.edges < cheap.edges < full.edges
    assert cheap.recall >= full.recall - 10.0
    assert dear.recall < cheap.recall


def test_the_frontier_reports_and_draws_both_policies():
    settings = {
        **parsing.SETTINGS,
        "train_sentences": 10,
        "test_sentences": 10,
        "lengths": (5, 7),
        "iterations": 1,
        "lambdas": (1e-5,),
        "thresholds": (0.1, 0.9),
    }
    made = parsing.frontier(settings)
    rows = made.rows()
    assert rows[0].startswith("unpruned: recall") and any(r.startswith("LOLS λ=1e-05") for r in rows)
    svg = made.svg()
    assert svg.startswith("<svg") and "LOLS" in svg and "gold-span baseline" in svg


def test_the_proxy_check_is_registered_for_the_paper():
    from papers.registry import get_registry

    (check,) = get_registry().training_checks("learning_to_prune")
    assert check.variant == "learning_to_prune" and check.metric == "labelled_recall"
    assert check.runner is parsing.proxy_runner
