"""Tung, Muralidharan and Mori, "Fine-Pruning: Joint Fine-Tuning and Compression of a Convolutional
Network with Bayesian Optimization" (BMVC 2017): per-layer pruning rates chosen by Bayesian
optimisation, alternating with fine-tuning.

A state-of-the-art pruning method has a parameter per layer, too many to set by hand, and set once
they cannot follow the network as fine-tuning changes it. Fine-Pruning searches them by Bayesian
optimisation against an objective of accuracy and compression, and alternates the search with
fine-tuning: each round searches the rates from the network as it now is, prunes it at the best
rates found, and fine-tunes it with the pruned weights held at zero; the next round starts from that.

Here a candidate's rates are per-layer pruning rates in [0, 1) within the settings' bounds; a
candidate is scored on a copy of the network: pruned by magnitude at its rates (Han et al.'s rule: the
smallest ``rate`` of the layer's weights removed; a rate below what is already pruned prunes nothing
more), fine-tuned ``candidate_epochs`` on the training images, its top-1 measured on held-out
training images (never the test split). The objective is

    f(rates) = γ · accuracy + (1 − γ) · sparsity,

accuracy the held-out top-1 as a fraction, sparsity the fraction of the searched layers' weights that
are zero: the registry's form of the paper's trade-off of the two (γ in the settings). What is pruned
stays pruned: a round searches each layer's rate from its present one (or its lower bound) up to its
upper bound, and starts by scoring the network as it is, so the rates it keeps score at least that
(after the same candidate fine-tuning). The Gaussian process and its acquisition are the
bayesian-optimization package's (its defaults); the pruning and fine-tuning are
:mod:`papers_plugins.compression.pruning`'s. Hand-written: the rounds, the objective and the scoring.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field, model_validator

from papers.errors import PapersError, SpecError
from papers.graph import FlatGraph
from papers.methods import Method, MethodContext, Settings

if TYPE_CHECKING:
    import torch

PRUNABLE = frozenset({"conv2d", "sparse_conv2d", "linear"})
Rate = Annotated[float, Field(ge=0, lt=1)]


class FinePruneSettings(Settings):
    """The settings of ``fine_prune``."""

    bounds: dict[str, list[Rate]] = Field(
        description="Each searched layer's pruning rate range [low, high], rates in [0, 1), by node name."
    )
    gamma: float = Field(
        0.9, ge=0, le=1, description="The objective's weight on accuracy; 1 − gamma weighs sparsity."
    )
    rounds: int = Field(3, ge=1, le=100, description="Search-then-fine-tune rounds.")
    init_points: int = Field(4, ge=0, le=1000, description="Random candidates per round before the GP's.")
    iterations: int = Field(8, ge=0, le=1000, description="Candidates per round chosen by the GP.")
    candidate_epochs: int = Field(
        1, ge=0, le=100, description="Fine-tuning of each candidate before scoring."
    )
    finetune_epochs: int = Field(2, ge=0, le=1000, description="Fine-tuning after each round's pruning.")
    held_out: float = Field(
        0.2, gt=0, lt=1, description="The fraction of the training images the candidates are scored on."
    )
    retrain_lr: float = Field(1.0e-3, gt=0, description="SGD rate while fine-tuning.")
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5.0e-4, ge=0)
    batch_size: int = Field(64, ge=1, le=65536)
    seed: int = Field(0, ge=0, description="The search's and the held-out split's seed.")

    @model_validator(mode="after")
    def _ranges(self) -> FinePruneSettings:
        for name, pair in self.bounds.items():
            if len(pair) != 2 or not pair[0] < pair[1]:
                raise ValueError(f"bounds of {name!r} are [low, high] with low < high, not {pair}")
        return self


def check_settings(flat: FlatGraph, settings: FinePruneSettings) -> FlatGraph:
    """The graph unchanged, once every layer the bounds name is a convolution or linear layer of it."""
    prunable = sorted(node.name for node in flat.nodes if node.op in PRUNABLE)
    for name in settings.bounds:
        if name not in prunable:
            known = ", ".join(prunable[:12]) or "none"
            raise SpecError(
                f"settings.bounds names {name!r}, which is no convolution or linear layer of the base "
                f"model (its layers: {known}{', ...' if len(prunable) > 12 else ''})"
            )
    if not settings.bounds:
        raise SpecError("settings.bounds names no layer; nothing would be searched")
    return flat


# -- the search ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Search:
    """One round's search: the rates it chose, their score, and every candidate it scored."""

    rates: dict[str, float]
    objective: float
    initial: float
    """The objective of the network as the round found it."""
    candidates: list[tuple[dict[str, float], float]] = field(default_factory=list)


def objective(accuracy: float, sparsity: float, gamma: float) -> float:
    """γ · accuracy + (1 − γ) · sparsity, both fractions."""
    return gamma * accuracy + (1.0 - gamma) * sparsity


def search_rates(
    score: Callable[[dict[str, float]], float],
    bounds: Mapping[str, tuple[float, float] | list[float]],
    *,
    start: Mapping[str, float],
    init_points: int,
    iterations: int,
    seed: int = 0,
) -> Search:
    """Maximise ``score`` (rates by layer in, objective out) over ``bounds`` by Bayesian optimisation:
    ``start`` first (clipped into the bounds), then ``init_points`` random candidates and
    ``iterations`` chosen by the Gaussian process. Rates outside [0, 1) are refused."""
    from bayes_opt import BayesianOptimization

    for name, (low, high) in bounds.items():
        if not (0 <= low < high < 1):
            raise ValueError(f"rates of {name!r} lie in [0, 1) with low < high, not [{low}, {high}]")
    names = list(bounds)
    keys = {name: f"x{i}" for i, name in enumerate(names)}  # the package wants identifiers
    candidates: list[tuple[dict[str, float], float]] = []

    def scored(**values: float) -> float:
        rates = {name: float(values[keys[name]]) for name in names}
        value = float(score(rates))
        if not math.isfinite(value):
            raise ValueError(f"the objective of {rates} is {value}, not a finite number")
        candidates.append((rates, value))
        return value

    optimizer = BayesianOptimization(
        f=scored,
        pbounds={keys[name]: (float(low), float(high)) for name, (low, high) in bounds.items()},
        random_state=seed,
        verbose=0,
        allow_duplicate_points=True,
    )
    first = {keys[n]: min(max(float(start.get(n, bounds[n][0])), bounds[n][0]), bounds[n][1]) for n in names}
    optimizer.probe(params=first, lazy=False)
    optimizer.maximize(init_points=init_points, n_iter=iterations)
    best = max(candidates, key=lambda pair: pair[1])
    return Search(dict(best[0]), best[1], candidates[0][1], candidates)


# -- pruning by rates, and the rounds --------------------------------------------------------------


def magnitude_masks(model: Any, rates: Mapping[str, float]) -> dict[str, torch.Tensor]:
    """For each named layer, the mask that removes the smallest ``rate`` of its weights (by magnitude;
    ties by position), those already zero first."""
    import torch

    masks = {}
    for name, rate in rates.items():
        if not 0 <= rate < 1:
            raise ValueError(f"the pruning rate of {name!r} is in [0, 1), not {rate}")
        weight = model.get_submodule(name).weight.detach()
        keep = max(1, round(weight.numel() * (1.0 - rate)))
        mask = torch.zeros(weight.numel(), dtype=weight.dtype, device=weight.device)
        mask[weight.abs().flatten().topk(keep).indices] = 1
        masks[name] = mask.view_as(weight) * (weight != 0)  # what is pruned stays pruned
    return masks


def apply_masks(model: Any, masks: Mapping[str, torch.Tensor]) -> None:
    import torch

    with torch.no_grad():
        for name, mask in masks.items():
            model.get_submodule(name).weight.mul_(mask)


def current_rates(model: Any, names: list[str]) -> dict[str, float]:
    """Each named layer's fraction of zero weights."""
    import torch

    out = {}
    for name in names:
        weight = model.get_submodule(name).weight
        out[name] = 1.0 - int(torch.count_nonzero(weight)) / weight.numel()
    return out


def sparsity(model: Any, names: list[str]) -> float:
    """The fraction of the named layers' weights that are zero, together."""
    import torch

    weights = [model.get_submodule(name).weight for name in names]
    total = sum(w.numel() for w in weights)
    return 1.0 - sum(int(torch.count_nonzero(w)) for w in weights) / total


@dataclass
class Round:
    """What one round did: its search, then the network's rates and sparsity after pruning and
    fine-tuning."""

    search: Search
    rates: dict[str, float]
    """Each layer's fraction of zero weights after the round."""
    sparsity: float
    accuracy: float
    """Held-out top-1 (a fraction) after the round's fine-tuning."""
    seconds: float


def fine_prune(
    model: Any,
    settings: FinePruneSettings,
    batches: Callable[[], Iterator[tuple[torch.Tensor, torch.Tensor]]],
    held_out: tuple[torch.Tensor, torch.Tensor],
    device: str = "cpu",
) -> list[Round]:
    """Fine-Pruning of ``model`` in place: ``settings.rounds`` rounds of searching the bounded layers'
    rates (each candidate pruned, fine-tuned on ``batches`` and scored on ``held_out`` on a copy), then
    pruning the model at the best and fine-tuning it with its masks. Returns what each round did."""
    from papers_plugins.compression.pruning import retrain

    names = list(settings.bounds)
    images, labels = held_out
    rounds = []
    for index in range(settings.rounds):
        began = time.perf_counter()

        def score(rates: dict[str, float]) -> float:
            candidate = copy.deepcopy(model)
            masks = magnitude_masks(candidate, rates)
            apply_masks(candidate, masks)
            if settings.candidate_epochs:
                trainable = [p for n in names for p in candidate.get_submodule(n).parameters()]
                retrain(
                    candidate, batches, trainable, masks, settings, device, epochs=settings.candidate_epochs
                )
            accuracy = _top1(candidate, images, labels, device)
            return objective(accuracy, sparsity(candidate, names), settings.gamma)

        now = current_rates(model, names)
        # What is pruned stays pruned: a round searches each layer from its present rate up.
        bounds = {n: (max(low, now[n]), high) for n, (low, high) in settings.bounds.items()}
        open_ = {n: pair for n, pair in bounds.items() if pair[0] < pair[1]}
        if not open_:
            break
        fixed = {n: now[n] for n in names if n not in open_}

        def score_open(rates: dict[str, float], fixed: dict[str, float] = fixed) -> float:
            return score({**fixed, **rates})

        search = search_rates(
            score_open,
            open_,
            start=now,
            init_points=settings.init_points,
            iterations=settings.iterations,
            seed=settings.seed + index,
        )
        masks = magnitude_masks(model, {**fixed, **search.rates})
        apply_masks(model, masks)
        if settings.finetune_epochs:
            trainable = [p for n in names for p in model.get_submodule(n).parameters()]
            retrain(model, batches, trainable, masks, settings, device, epochs=settings.finetune_epochs)
        accuracy = _top1(model, images, labels, device)
        seconds = time.perf_counter() - began
        rounds.append(Round(search, current_rates(model, names), sparsity(model, names), accuracy, seconds))
    return rounds


def _top1(model: Any, images: torch.Tensor, labels: torch.Tensor, device: str) -> float:
    import torch

    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(labels), 500):
            logits = model(images[start : start + 500].to(device))
            correct += int((logits.argmax(-1).cpu() == labels[start : start + 500]).sum())
    return correct / max(1, len(labels))


def split_held_out(
    images: torch.Tensor, labels: torch.Tensor, fraction: float, seed: int
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """The training images split into those trained on and ``fraction`` held out (a fixed seed)."""
    import torch

    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    cut = len(labels) - max(1, round(len(labels) * fraction))
    train, held = order[:cut], order[cut:]
    return (images[train], labels[train]), (images[held], labels[held])


# -- the method ------------------------------------------------------------------------------------


def fine_prune_method(model: Any, settings: FinePruneSettings, context: MethodContext) -> Any:
    """``papers compress --data``: Fine-Pruning on the training split of ``--data``."""
    from papers_plugins.compression.pruning import shuffled_batches, training_split

    if context.data is None:
        raise PapersError(
            "fine_prune searches its rates against held-out accuracy: give --data", field="--data"
        )
    shape = tuple(next(iter(context.flat.inputs.values())))
    images, labels = training_split(str(context.data), shape)
    (train_images, train_labels), held_out = split_held_out(images, labels, settings.held_out, settings.seed)
    batches = shuffled_batches(train_images, train_labels, settings.batch_size, seed=settings.seed)
    fine_prune(model, settings, batches, held_out, context.device)
    return model.eval()


FINE_PRUNE = Method(
    name="fine_prune",
    settings=FinePruneSettings,
    description="Per-layer pruning rates searched by Bayesian optimisation against γ·accuracy + "
    "(1 − γ)·sparsity on held-out images, alternating with fine-tuning (Tung, Muralidharan and Mori "
    "2017).",
    rewrite=check_settings,
    apply=fine_prune_method,
)


# -- the small-scale reproduction (`papers check fine_pruning --run`) ---------------------------------

PROXY_VARIANT = "fine_pruning-lenet5_caffe"


def fine_pruning_proxy(
    variant_id: str = PROXY_VARIANT,
    data: str = "builtin:mnist5k",
    *,
    epochs: int | None = None,
    overrides: Mapping[str, Any] | None = None,
    limit: int | None = None,
) -> dict[str, Any]:
    """Train ``variant_id``'s base on ``data``'s training split less the images held out for scoring
    candidates (its recipe's SGD settings, from a fixed seed), run Fine-Pruning (``overrides`` replace
    settings), and give top-1 (percent) on the test split before and after, the rates reached and each
    round's record."""
    from papers_plugins.compression.pruning import (
        PROXY_EPOCHS,
        pretrained,
        proxy_setup,
        shuffled_batches,
        top1,
    )

    setup = proxy_setup(variant_id, "fine_prune", data, limit)
    settings = setup.settings.model_copy(update=dict(overrides or {}))
    assert isinstance(settings, FinePruneSettings)
    (kept_images, kept_labels), held_out = split_held_out(
        setup.train_images, setup.train_labels, settings.held_out, settings.seed
    )
    began = time.perf_counter()
    passes = PROXY_EPOCHS if epochs is None else epochs
    with pretrained(setup, passes, build=variant_id, images=kept_images, labels=kept_labels) as (
        model,
        _,
        before,
    ):
        tuning = shuffled_batches(kept_images, kept_labels, settings.batch_size, seed=settings.seed)
        rounds = fine_prune(model, settings, tuning, held_out, "cpu")
        after = top1(model, setup.test_images, setup.test_labels)
    names = list(settings.bounds)
    return {
        "before": before,
        "after": after,
        "rates": current_rates(model, names),
        "sparsity": sparsity(model, names),
        "rounds": rounds,
        "seconds": round(time.perf_counter() - began, 1),
    }


def _proxy_runner(variant_id: str) -> Any:
    def run(progress: bool) -> tuple[float, float]:
        measured = fine_pruning_proxy(variant_id)
        if progress:
            for index, record in enumerate(measured["rounds"], 1):
                rates = ", ".join(f"{name} {rate:.2f}" for name, rate in record.rates.items())
                print(
                    f"  round {index}: f {record.search.initial:.4f} -> {record.search.objective:.4f} "
                    f"({rates}); sparsity {record.sparsity:.3f}, held-out top-1 "
                    f"{100 * record.accuracy:.1f}% ({record.seconds:.0f} s)"
                )
        return measured["after"], measured["before"] - 1.0

    return run


def proxy_checks() -> list:
    """The paper's proxy check (its plugin's ``papers_checks``)."""
    from papers_plugins.compression.pruning import PROXY_EPOCHS, mnist5k_check

    return [
        mnist5k_check(
            PROXY_VARIANT,
            _proxy_runner(PROXY_VARIANT),
            f"LeNet-5 (Caffe's) trained on 3,200 of MNIST's digits (builtin:mnist5k's 4,000 training "
            f"images less the 800 held out to score candidates) for {PROXY_EPOCHS} epochs with Caffe's "
            "SGD settings, not an ImageNet network fine-tuned to remote sensing or texture images; "
            "tested on its 1,000 test digits; Fine-Pruning's rounds of Bayesian optimisation over the "
            "four layers' pruning rates (the variant's bounds, γ, rounds and candidates), each "
            "candidate fine-tuned and scored on "
            "held-out training digits; passes when the pruned model's top-1 on the test digits is "
            "within 1 point of the unpruned model's",
        )
    ]
