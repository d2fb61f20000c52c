"""Vieira and Eisner, "Learning to Prune: Exploring the Frontier of Fast and Accurate Parsing" (TACL
2017): a pruning policy for a chart parser, trained by LOLS for accuracy minus λ × runtime.

The paper prunes the CKY chart of a PCFG parser: before a span (i, k) is filled, a linear policy
reads features of the span and of the sentence and decides to keep the span or to prune it (every
constituent over it). Earlier work trained such a classifier to keep the spans of the gold trees; the
paper trains it for the end-to-end objective instead, the parser's accuracy minus λ times its
runtime, with LOLS (locally optimal learning to search): roll in with the current policy, and for
each span roll out both actions — change that one decision, keep the others — to measure what each
costs in the objective; the differences become weighted classification examples, aggregated over
iterations. Sweeping λ traces a speed/accuracy frontier.

What is here, and what the registry chose where the paper leaves room or works at another scale:

- The grammar is a fixed, small PCFG in Chomsky normal form (:data:`GRAMMAR`, with the
  prepositional-attachment ambiguity that makes pruning matter); the treebank is sampled from it with
  a seed, so nothing is downloaded. The paper parses the Penn Treebank with a latent-annotation
  grammar; its figures are plots, so the spec carries no number of them.
- Runtime is counted, not timed: the number of binary rule applications whose two children were
  built (the hyperedges the parser visits), the deterministic measure that wall time follows.
- Accuracy is the number of labelled gold constituents (width ≥ 2) in the Viterbi tree, summed over
  the corpus, so the objective is additive over sentences; divided by the gold count it is labelled
  recall (a full parse has as many constituents as the gold tree, so recall equals precision then).
- Spans of width 1 and the whole sentence are never pruned.
- Rollouts reparse the sentence (the paper makes them fast with change propagation; at ten words
  this is milliseconds).
- The baseline is the gold-span classifier on the same features, its frontier traced by its
  decision threshold.

Hand-written: the parser and the rollouts (no maintained library offers a pruned CKY with rollouts);
features are hashed by scikit-learn's ``FeatureHasher`` and the policy is its ``LogisticRegression``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Tree = tuple  # (label, word) for a preterminal, (label, left, right) otherwise
Rule = tuple[str, tuple[str, ...], float]

GRAMMAR: tuple[Rule, ...] = (
    ("S", ("NP", "VP"), 0.85),
    ("S", ("S", "CS"), 0.15),
    ("CS", ("CC", "S"), 1.0),
    ("NP", ("DT", "NN"), 0.3),
    ("NP", ("DT", "NB"), 0.15),
    ("NP", ("NN", "NN"), 0.05),
    ("NP", ("NP", "PP"), 0.2),
    ("NP", ("NP", "CNP"), 0.1),
    ("NP", ("she",), 0.05),
    ("NP", ("fish",), 0.05),
    ("NP", ("they",), 0.1),
    ("CNP", ("CC", "NP"), 1.0),
    ("NB", ("JJ", "NN"), 0.75),
    ("NB", ("JJ", "NB"), 0.25),
    ("VP", ("VB", "NP"), 0.5),
    ("VP", ("VP", "PP"), 0.25),
    ("VP", ("VP", "CVP"), 0.1),
    ("VP", ("fish",), 0.05),
    ("VP", ("saw",), 0.05),
    ("VP", ("watch",), 0.05),
    ("CVP", ("CC", "VP"), 1.0),
    ("PP", ("IN", "NP"), 1.0),
    *(("DT", (w,), p) for w, p in (("the", 0.6), ("a", 0.3), ("every", 0.1))),
    *(
        ("NN", (w,), 0.1)
        for w in ("dog", "cat", "park", "telescope", "man", "hill", "fish", "saw", "watch", "duck")
    ),
    *(("JJ", (w,), 0.2) for w in ("big", "small", "old", "red", "quiet")),
    *(("VB", (w,), 0.2) for w in ("saw", "chased", "watch", "fish", "duck")),
    *(("IN", (w,), 0.25) for w in ("with", "in", "on", "near")),
    *(("CC", (w,), 0.5) for w in ("and", "or")),
)
"""(left-hand side, right-hand side, probability): binary rules name two nonterminals, lexical rules
one word; each left-hand side's probabilities sum to 1."""


@dataclass(frozen=True)
class Grammar:
    """A PCFG in Chomsky normal form: the rules trees are sampled from, and the parser's arrays.

    The parser's grammar is the rules mixed with ``smoothing`` of a uniform grammar (every binary rule
    under each phrasal symbol, every word under each preterminal), as a grammar estimated from a
    treebank over-generates: every span can be built, which is what makes pruning pay.
    """

    symbols: tuple[str, ...]
    binary: np.ndarray  # (A, B, C) log-probability of A -> B C
    lexicon: dict[str, np.ndarray]  # word -> (A,) log-probability of A -> word
    rules: tuple[tuple[str, tuple[str, ...], float], ...]

    @classmethod
    def from_rules(cls, rules: Sequence[Rule], smoothing: float = 0.0) -> Grammar:
        symbols = tuple(dict.fromkeys(lhs for lhs, _, _ in rules))
        index = {s: i for i, s in enumerate(symbols)}
        totals: dict[str, float] = {}
        for lhs, _, p in rules:
            totals[lhs] = totals.get(lhs, 0.0) + p
        for lhs, total in totals.items():
            if not math.isclose(total, 1.0, abs_tol=1e-9):
                raise ValueError(f"the rules of {lhs} sum to {total}, not 1")
        s = len(symbols)
        binary = np.zeros((s, s, s))
        phrasal = {index[lhs] for lhs, rhs, _ in rules if len(rhs) == 2}
        preterminals = [index[lhs] for lhs in symbols if index[lhs] not in phrasal]
        vocabulary = sorted({rhs[0] for _, rhs, _ in rules if len(rhs) == 1 and rhs[0] not in index})
        lexical = {w: np.zeros(s) for w in vocabulary}
        for lhs, rhs, p in rules:
            if len(rhs) == 2:
                binary[index[lhs], index[rhs[0]], index[rhs[1]]] += (1 - smoothing) * p
            else:
                lexical[rhs[0]][index[lhs]] += (1 - smoothing) * p
        for a in phrasal:
            binary[a] += smoothing / (s * s)
        for a in preterminals:
            for scores in lexical.values():
                scores[a] += smoothing / len(vocabulary)
        with np.errstate(divide="ignore"):
            return cls(symbols, np.log(binary), {w: np.log(v) for w, v in lexical.items()}, tuple(rules))

    def sample(self, rng: random.Random, symbol: str = "S", depth: int = 0) -> Tree:
        """A tree drawn top-down from the grammar (deep recursion is cut off by rejection upstream)."""
        if depth > 30:
            raise RecursionError("tree too deep")
        options = [(rhs, p) for lhs, rhs, p in self.rules if lhs == symbol]
        rhs = rng.choices([r for r, _ in options], weights=[p for _, p in options])[0]
        if len(rhs) == 1:
            return (symbol, rhs[0])
        return (symbol, self.sample(rng, rhs[0], depth + 1), self.sample(rng, rhs[1], depth + 1))


def words(tree: Tree) -> list[str]:
    if isinstance(tree[1], str):
        return [tree[1]]
    return words(tree[1]) + words(tree[2])


def constituents(tree: Tree, start: int = 0) -> tuple[set[tuple[str, int, int]], int]:
    """The labelled spans (label, i, k) of width ≥ 2, and the tree's width."""
    if isinstance(tree[1], str):
        return set(), 1
    left, width_left = constituents(tree[1], start)
    right, width_right = constituents(tree[2], start + width_left)
    width = width_left + width_right
    return left | right | {(tree[0], start, start + width)}, width


def treebank(grammar: Grammar, n: int, seed: int, lengths: tuple[int, int] = (4, 12)) -> list[Tree]:
    """``n`` trees sampled from ``grammar`` with ``seed``, their sentences of ``lengths`` words."""
    rng = random.Random(seed)
    out: list[Tree] = []
    while len(out) < n:
        try:
            tree = grammar.sample(rng)
        except RecursionError:
            continue
        if lengths[0] <= len(words(tree)) <= lengths[1]:
            out.append(tree)
    return out


@dataclass(frozen=True)
class Parse:
    spans: set[tuple[str, int, int]]
    """The Viterbi tree's labelled spans of width ≥ 2 (empty when the pruned chart has no parse)."""
    edges: int
    """Binary rule applications whose two children were built: the runtime the paper trades."""


def parse(grammar: Grammar, sentence: Sequence[str], keep: Callable[[int, int], bool] | np.ndarray) -> Parse:
    """Viterbi CKY over ``sentence``, filling only the spans ``keep`` keeps (an (n+1)×(n+1) boolean
    array, or a function of (i, k)); spans of width 1 and the whole sentence are always filled."""
    n, s = len(sentence), len(grammar.symbols)
    best = np.full((n + 1, n + 1, s), -np.inf)
    back: dict[tuple[int, int, int], tuple[int, int, int]] = {}
    for i, word in enumerate(sentence):
        best[i, i + 1] = grammar.lexicon.get(word, best[i, i + 1])
    edges = 0
    for width in range(2, n + 1):
        for i in range(n - width + 1):
            k = i + width
            if width < n and not (keep[i, k] if isinstance(keep, np.ndarray) else keep(i, k)):
                continue
            lefts = best[i, i + 1 : k]  # (splits, B)
            rights = best[i + 1 : k, k]  # (splits, C)
            children = lefts[:, :, None] + rights[:, None, :]  # (splits, B, C)
            scores = grammar.binary[None] + children[:, None]  # (splits, A, B, C)
            built = np.isfinite(scores)
            edges += int(built.sum())
            flat = scores.transpose(1, 0, 2, 3).reshape(s, -1)  # (A, splits·B·C)
            winner = flat.argmax(axis=1)
            for a in np.flatnonzero(np.isfinite(flat[np.arange(s), winner])):
                split, b, c = np.unravel_index(int(winner[a]), (width - 1, s, s))
                best[i, k, a] = flat[a, winner[a]]
                back[i, k, int(a)] = (i + 1 + int(split), int(b), int(c))
    root = grammar.symbols.index("S")
    if not np.isfinite(best[0, n, root]):
        return Parse(set(), edges)
    spans: set[tuple[str, int, int]] = set()
    stack = [(0, n, root)]
    while stack:
        i, k, a = stack.pop()
        if k - i < 2:
            continue
        spans.add((grammar.symbols[a], i, k))
        j, b, c = back[i, k, a]
        stack += [(i, j, b), (j, k, c)]
    return Parse(spans, edges)


def span_features(sentence: Sequence[str], i: int, k: int) -> dict[str, float]:
    """The policy's features of span (i, k): its width, its boundary words and their neighbours."""
    n = len(sentence)
    before = sentence[i - 1] if i > 0 else "<s>"
    after = sentence[k] if k < n else "</s>"
    width = k - i
    return {
        "bias": 1.0,
        f"width={min(width, 8)}": 1.0,
        f"frac={round(width / n, 1)}": 1.0,
        f"first={sentence[i]}": 1.0,
        f"last={sentence[k - 1]}": 1.0,
        f"before={before}": 1.0,
        f"after={after}": 1.0,
        f"first,last={sentence[i]},{sentence[k - 1]}": 1.0,
        f"before,first={before},{sentence[i]}": 1.0,
        f"last,after={sentence[k - 1]},{after}": 1.0,
        f"first,width={sentence[i]},{min(width, 8)}": 1.0,
    }


def prunable(n: int) -> list[tuple[int, int]]:
    """The spans a policy decides: width 2 to n - 1."""
    return [(i, i + w) for w in range(2, n) for i in range(n - w + 1)]


@dataclass
class Policy:
    """A linear keep/prune classifier over hashed span features; ``threshold`` on P(keep) decides."""

    model: Any = None
    threshold: float = 0.5
    hasher: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        from sklearn.feature_extraction import FeatureHasher

        self.hasher = self.hasher or FeatureHasher(n_features=2**14, alternate_sign=False)

    def keep_mask(self, sentence: Sequence[str]) -> np.ndarray:
        n = len(sentence)
        mask = np.ones((n + 1, n + 1), dtype=bool)
        spans = prunable(n)
        if self.model is None or not spans:  # the unpruned parser
            return mask
        x = self.hasher.transform([span_features(sentence, i, k) for i, k in spans])
        keep = self.model.predict_proba(x)[:, list(self.model.classes_).index(1)] >= self.threshold
        for (i, k), kept in zip(spans, keep, strict=True):
            mask[i, k] = kept
        return mask

    def fit(self, features: list[dict[str, float]], labels: list[int], weights: list[float]) -> Policy:
        from sklearn.linear_model import LogisticRegression

        if len(set(labels)) < 2:  # one action everywhere: a constant policy
            self.model = _Constant(labels[0] if labels else 1)
            return self
        model = LogisticRegression(C=REGULARISATION, max_iter=1000)
        scale = len(weights) / sum(weights)  # mean weight 1: the regularisation weighs as the baseline's
        model.fit(self.hasher.transform(features), labels, sample_weight=[w * scale for w in weights])
        self.model = model
        return self


@dataclass
class _Constant:
    label: int

    @property
    def classes_(self) -> list[int]:
        return [0, 1]

    def predict_proba(self, x: Any) -> np.ndarray:
        out = np.zeros((x.shape[0], 2))
        out[:, self.label] = 1.0
        return out


REGULARISATION = 1.0
"""scikit-learn's C of the policy's logistic regression."""


def reward(gold: set[tuple[str, int, int]], result: Parse, lam: float) -> float:
    """The paper's objective on one sentence: accuracy − λ × runtime."""
    return len(gold & result.spans) - lam * result.edges


def lols(
    grammar: Grammar,
    trees: Sequence[Tree],
    lam: float,
    iterations: int = 3,
    progress: Callable[[str], None] | None = None,
    initial: Policy | None = None,
) -> Policy:
    """Train a pruning policy by LOLS: roll in with the current policy (the unpruned parser first),
    roll out each span's two actions with the other decisions fixed, and fit a classifier to the
    action with the higher reward, weighted by the difference; examples aggregate over iterations."""
    policy = initial or Policy()
    features: list[dict[str, float]] = []
    labels: list[int] = []
    weights: list[float] = []
    for iteration in range(iterations):
        for tree in trees:
            sentence = words(tree)
            gold, _ = constituents(tree)
            mask = policy.keep_mask(sentence)
            here = reward(gold, parse(grammar, sentence, mask), lam)
            for i, k in prunable(len(sentence)):
                flipped = mask.copy()
                flipped[i, k] = not mask[i, k]
                there = reward(gold, parse(grammar, sentence, flipped), lam)
                keep_minus_prune = (here - there) if mask[i, k] else (there - here)
                if keep_minus_prune == 0:
                    continue
                features.append(span_features(sentence, i, k))
                labels.append(int(keep_minus_prune > 0))
                weights.append(abs(keep_minus_prune))
        policy = Policy(hasher=policy.hasher).fit(features, labels, weights)
        if progress is not None:
            progress(f"LOLS λ={lam:g}: iteration {iteration + 1}/{iterations}, {len(labels)} examples")
    return policy


def gold_span_policy(trees: Sequence[Tree]) -> Policy:
    """The baseline: a classifier of the same features trained to keep the spans of the gold trees."""
    features, labels = [], []
    for tree in trees:
        sentence = words(tree)
        gold = {(i, k) for _, i, k in constituents(tree)[0]}
        for i, k in prunable(len(sentence)):
            features.append(span_features(sentence, i, k))
            labels.append(int((i, k) in gold))
    return Policy().fit(features, labels, [1.0] * len(labels))


@dataclass(frozen=True)
class Point:
    """A policy on held-out sentences: labelled recall (%) and runtime (edges per sentence)."""

    recall: float
    edges: float


def evaluate(grammar: Grammar, policy: Policy, trees: Sequence[Tree]) -> Point:
    correct = total = edges = 0
    for tree in trees:
        sentence = words(tree)
        gold, _ = constituents(tree)
        result = parse(grammar, sentence, policy.keep_mask(sentence))
        correct += len(gold & result.spans)
        total += len(gold)
        edges += result.edges
    return Point(100.0 * correct / total, edges / len(trees))


def best_at_runtime(points: Sequence[Point], edges: float) -> float:
    """The highest recall among ``points`` that run in at most ``edges`` (0 if none does)."""
    return max((p.recall for p in points if p.edges <= edges), default=0.0)


@dataclass(frozen=True)
class Frontier:
    """Both policies' points on the held-out sentences, and the unpruned parser's."""

    unpruned: Point
    lols: dict[float, Point]
    """The LOLS policy trained at each λ."""
    baseline: dict[float, Point]
    """The gold-span classifier at each decision threshold."""

    def rows(self) -> list[str]:
        full = self.unpruned
        out = [f"unpruned: recall {full.recall:.1f} %, {full.edges:,.0f} edges per sentence"]
        for lam, p in self.lols.items():
            beside = best_at_runtime(list(self.baseline.values()), p.edges)
            out.append(
                f"LOLS λ={lam:g}: recall {p.recall:.1f} %, runtime {p.edges / full.edges:.3f} of unpruned; "
                f"baseline at no more runtime {beside:.1f} %"
            )
        out += [
            f"gold-span baseline, threshold {t:g}: recall {p.recall:.1f} %, "
            f"runtime {p.edges / full.edges:.3f} of unpruned"
            for t, p in self.baseline.items()
        ]
        return out

    def svg(self) -> str:
        """The frontier as the paper draws it: runtime (log) against accuracy, one series a policy."""
        from papers.charts import Point as ChartPoint
        from papers.charts import scatter

        full = self.unpruned.edges
        points = [ChartPoint("LOLS", f"λ={lam:g}", p.edges / full, p.recall) for lam, p in self.lols.items()]
        points += [
            ChartPoint("gold-span baseline", f"t={t:g}", p.edges / full, p.recall)
            for t, p in self.baseline.items()
            if p.edges > 0
        ]
        return scatter(
            points,
            "Learning to Prune: speed/accuracy frontier (synthetic treebank)",
            "runtime (edges, fraction of the unpruned parser's)",
            "labelled recall (%)",
        )


SETTINGS = {
    "smoothing": 0.01,
    "train_sentences": 400,
    "test_sentences": 200,
    "lengths": (5, 12),
    "iterations": 3,
    "lambdas": (3e-6, 1e-5, 3e-5),
    "thresholds": (0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9),
}
"""The proxy's settings (the registry's: the paper's grammar, treebank and λ are of another scale)."""


def frontier(settings: dict[str, Any] = SETTINGS, progress: Callable[[str], None] | None = None) -> Frontier:
    """Train LOLS at each λ and the gold-span baseline on a sampled treebank (seed 0), and measure
    every policy on held-out sentences (seed 1)."""
    grammar = Grammar.from_rules(GRAMMAR, smoothing=settings["smoothing"])
    train = treebank(grammar, settings["train_sentences"], 0, settings["lengths"])
    test = treebank(grammar, settings["test_sentences"], 1, settings["lengths"])
    lols_points = {
        lam: evaluate(grammar, lols(grammar, train, lam, settings["iterations"], progress), test)
        for lam in settings["lambdas"]
    }
    baseline = gold_span_policy(train)
    baseline_points = {}
    for threshold in settings["thresholds"]:
        baseline.threshold = threshold
        baseline_points[threshold] = evaluate(grammar, baseline, test)
    return Frontier(evaluate(grammar, Policy(), test), lols_points, baseline_points)


CHECKED_LAMBDA = 1e-5


def proxy_runner(progress: bool) -> tuple[float, float]:
    """The proxy check: LOLS's recall at λ = 1e-5, passing when no threshold of the gold-span
    baseline is more accurate at no more runtime (the paper's claim of a better frontier)."""
    made = frontier(progress=print if progress else None)
    if progress:
        print("\n".join(made.rows()))
    point = made.lols[CHECKED_LAMBDA]
    return round(point.recall, 2), round(best_at_runtime(list(made.baseline.values()), point.edges), 2)


def proxy_checks() -> list:
    from papers.checks import TrainingCheck

    return [
        TrainingCheck(
            name="learning_to_prune-frontier",
            variant="learning_to_prune",
            data=f"a treebank of {SETTINGS['train_sentences']} training and "
            f"{SETTINGS['test_sentences']} test sentences sampled from a fixed PCFG",
            min_accuracy=0.0,
            max_seconds=300.0,
            metric="labelled_recall",
            runner=proxy_runner,
            proxy="a 14-symbol PCFG (smoothed so every span can be built) and sentences of 5-12 words, not "
            "the Penn Treebank with a latent-annotation grammar; runtime counted as rule applications; "
            "passes when the LOLS policy at λ = 1e-5 is at least as accurate as every threshold of the "
            "gold-span baseline that runs in no more time",
        )
    ]
