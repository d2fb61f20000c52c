"""The learning-compression (LC) algorithm of Carreira-Perpiñán (2017, arXiv 1707.01209, "Model compression
as constrained optimization, with application to neural nets. Part I: general framework") and
Carreira-Perpiñán and Idelbayev (2017, arXiv 1707.04319, "Part II: quantization").

Compression is a constraint: the weights w must equal Δ(θ), the decompression of some low-dimensional
θ (a codebook and assignments, a few non-zeros, two thin factors). The LC algorithm optimises the
loss under that constraint by a penalty method with multipliers (augmented Lagrangian), alternating

- an L step: minimise L(w) + μ/2 ‖w − Δ(θ) − λ/μ‖² over w (SGD epochs on the training data; the
  compression is the target, the loss pulls away from it);
- a C step: θ = Π(w − λ/μ), the best compression of the current weights, which needs no data and
  depends on the compression only: k-means in one dimension for an adaptive codebook of K values
  (Part II), keeping the largest magnitudes for pruning (an ℓ0 constraint), a truncated SVD for a
  low-rank matrix;
- the multipliers' update λ ← λ − μ (w − Δ(θ));

while μ grows on a schedule μ_k = μ0 · a^k, so that w and Δ(θ) meet. It starts from the trained
reference weights, whose direct compression (the first C step alone, what "direct compression"
means in the papers) is the baseline the algorithm improves on. The C step is pluggable: each
method setting names one, and a new compression is a new projection.

Library code where there is some: scikit-learn's KMeans for the codebook, ``torch.linalg.svd`` for
low rank. The alternation itself is a short loop here: no maintained library implements it (the
authors' LC toolkit is a research codebase, not a dependency this registry can take).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator

from papers.errors import SpecError
from papers.graph import FlatGraph
from papers.methods import Method, MethodContext, Settings

if TYPE_CHECKING:
    import torch

COMPRESSED_OPS = ("linear", "conv2d")
FLOAT_BITS = 32


class LCSettings(Settings):
    """The settings of ``lc_compress``: the C step and its size, the layers, the μ schedule."""

    c_step: Literal["quantize", "prune", "low_rank"] = Field(
        description="The compression: an adaptive codebook (k-means), pruning to a kept fraction, or a "
        "low-rank matrix."
    )
    codebook: int | None = Field(
        None, ge=2, le=65536, description="quantize: K, the codebook's size per layer."
    )
    kept: float | None = Field(
        None, gt=0, le=1, description="prune: the fraction of each layer's weights kept."
    )
    rank: int | None = Field(None, ge=1, description="low_rank: each layer's rank (weights as out × rest).")
    layers: list[str] = Field([], description="The layers compressed; none: every linear and convolution.")
    mu0: float = Field(5.0e-3, gt=0, description="μ of the first L step.")
    mu_growth: float = Field(1.8, gt=1, description="a of μ_k = μ0 · a^k.")
    lc_steps: int = Field(12, ge=1, le=1000, description="L and C steps, alternated.")
    l_epochs: int = Field(1, ge=1, le=100, description="Passes over the data in each L step.")
    lr: float = Field(0.01, gt=0, description="SGD rate of the L steps.")
    momentum: float = Field(0.9, ge=0, lt=1)
    batch_size: int = Field(64, ge=1, le=65536)
    multipliers: bool = Field(True, description="Augmented Lagrangian (λ updated); false: quadratic penalty.")

    @model_validator(mode="after")
    def _size(self) -> LCSettings:
        needed = {"quantize": "codebook", "prune": "kept", "low_rank": "rank"}[self.c_step]
        given = [name for name in ("codebook", "kept", "rank") if getattr(self, name) is not None]
        if given != [needed]:
            raise ValueError(f"c_step {self.c_step} takes `{needed}` (and no other of codebook, kept, rank)")
        return self


# -- the layers and what the settings say of them ---------------------------------------------------


@dataclass(frozen=True)
class Layer:
    name: str
    shape: tuple[int, ...]

    @property
    def weights(self) -> int:
        return math.prod(self.shape)

    @property
    def matrix(self) -> tuple[int, int]:
        """The weights as a matrix: outputs × everything else (a convolution's in × kh × kw)."""
        return self.shape[0], self.weights // self.shape[0]


def compressed_layers(flat: FlatGraph, settings: LCSettings) -> list[Layer]:
    """The layers the settings compress, with their weight shapes (a meta build); refused when a named
    layer is no linear or convolution layer, or a rank exceeds a layer's."""
    from papers.build import build
    from papers.registry import get_registry

    candidates = [node.name for node in flat.nodes if node.op in COMPRESSED_OPS]
    for name in settings.layers:
        if name not in candidates:
            raise SpecError(
                f"settings.layers names {name!r}, which is no linear or convolution layer of the base model "
                f"(its layers: {', '.join(candidates[:12])})"
            )
    model = build(flat, get_registry().catalogue, device="meta")
    layers = [
        Layer(name, tuple(model.get_submodule(name).weight.shape)) for name in settings.layers or candidates
    ]
    if settings.rank is not None:
        for layer in layers:
            if settings.rank > min(layer.matrix):
                raise SpecError(
                    f"settings.rank {settings.rank} is above layer {layer.name!r}'s limit "
                    f"{min(layer.matrix)} "
                    f"(its weights are a {layer.matrix[0]}×{layer.matrix[1]} matrix)"
                )
    return layers


def check_settings(flat: FlatGraph, settings: LCSettings) -> FlatGraph:
    """The rewrite: the graph unchanged (Δ(θ) keeps every shape), once the settings fit it."""
    compressed_layers(flat, settings)
    return flat


def compressed_bits(layer: Layer, settings: LCSettings) -> float:
    """What one layer's θ takes: K codebook floats and ⌈log2 K⌉ bits per weight (Part II's count); the
    kept values and a bit per weight for where they are; the two factors' floats."""
    if settings.codebook is not None:
        return layer.weights * math.ceil(math.log2(settings.codebook)) + settings.codebook * FLOAT_BITS
    if settings.kept is not None:
        return round(layer.weights * settings.kept) * FLOAT_BITS + layer.weights
    assert settings.rank is not None
    return settings.rank * sum(layer.matrix) * FLOAT_BITS


def compression_ratio(layers: list[Layer], settings: LCSettings) -> float:
    """The compressed layers' weights in 32-bit floats over their θ."""
    return (
        sum(layer.weights for layer in layers)
        * FLOAT_BITS
        / sum(compressed_bits(layer, settings) for layer in layers)
    )


def static_measure(flat: FlatGraph, settings: LCSettings) -> dict[str, float]:
    return {"compression_ratio": compression_ratio(compressed_layers(flat, settings), settings)}


# -- the C steps: Π, the best compression of given weights -----------------------------------------


def project(weight: torch.Tensor, settings: LCSettings, state: dict[str, Any]) -> torch.Tensor:
    """Δ(Π(weight)): the weights the compression closest to ``weight`` gives. ``state`` carries a layer's
    codebook from one C step to the next (k-means starts from it)."""
    import torch

    if settings.c_step == "quantize":
        import numpy as np
        from sklearn.cluster import KMeans

        values = weight.detach().flatten().double().cpu().numpy().reshape(-1, 1)
        previous = state.get("codebook")
        if previous is None:  # spread over the weights' quantiles: deterministic, every code used
            previous = np.quantile(values, (np.arange(settings.codebook) + 0.5) / settings.codebook)
        kmeans = KMeans(
            settings.codebook, init=np.asarray(previous).reshape(-1, 1), n_init=1, max_iter=300, tol=0.0
        )
        codes = kmeans.fit_predict(values)
        state["codebook"] = kmeans.cluster_centers_.flatten()
        quantized = kmeans.cluster_centers_.flatten()[codes]
        return torch.from_numpy(quantized).to(weight.dtype).view_as(weight).to(weight.device)
    if settings.c_step == "prune":
        count = max(1, round(weight.numel() * settings.kept))
        mask = torch.zeros(weight.numel(), dtype=torch.bool, device=weight.device)
        mask[weight.detach().abs().flatten().topk(count).indices] = True
        return weight.detach() * mask.view_as(weight)
    matrix = weight.detach().reshape(weight.shape[0], -1)
    u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    r = settings.rank
    return ((u[:, :r] * s[:r]) @ vh[:r]).view_as(weight)


# -- the LC algorithm ----------------------------------------------------------------------------------


def direct_compression(model: Any, layers: list[Layer], settings: LCSettings) -> None:
    """The baseline: each layer's weights replaced by their compression, no training."""
    import torch

    with torch.no_grad():
        for layer in layers:
            weight = model.get_submodule(layer.name).weight
            weight.copy_(project(weight, settings, {}))


def lc(
    model: Any,
    layers: list[Layer],
    settings: LCSettings,
    batches: Callable[[], Any],
    device: Any = "cpu",
    on_step: Callable[[int, float], None] | None = None,
) -> None:
    """The LC algorithm on ``model`` in place, from its weights as the reference: ``lc_steps`` rounds of
    an L step (``l_epochs`` of SGD on the loss plus the penalty) and a C step, μ growing each round,
    the multipliers updated after each C step; the model ends with its compressed weights Δ(θ).
    ``on_step(k, μ)`` is called after each round."""
    import torch
    import torch.nn.functional as F

    weights = {layer.name: model.get_submodule(layer.name).weight for layer in layers}
    states: dict[str, dict[str, Any]] = {name: {} for name in weights}
    multipliers = {name: torch.zeros_like(w) for name, w in weights.items()}
    targets = {name: project(w, settings, states[name]) for name, w in weights.items()}  # direct compression
    optimizer = torch.optim.SGD(model.parameters(), lr=settings.lr, momentum=settings.momentum)
    for step in range(settings.lc_steps):
        mu = settings.mu0 * settings.mu_growth**step
        model.train()
        for _ in range(settings.l_epochs):  # L step
            for images, labels in batches():
                optimizer.zero_grad(set_to_none=True)
                loss = F.cross_entropy(model(images.to(device)), labels.to(device))
                penalty = sum((w - targets[n] - multipliers[n] / mu).pow(2).sum() for n, w in weights.items())
                (loss + mu / 2 * penalty).backward()
                optimizer.step()
        model.eval()
        with torch.no_grad():  # C step, then the multipliers
            for name, weight in weights.items():
                targets[name] = project(weight - multipliers[name] / mu, settings, states[name])
                if settings.multipliers:
                    multipliers[name] -= mu * (weight - targets[name])
        if on_step is not None:
            on_step(step, mu)
    with torch.no_grad():
        for name, weight in weights.items():
            weight.copy_(targets[name])


def apply_lc(model: Any, settings: LCSettings, context: MethodContext) -> Any:
    """``lc_compress``'s apply step: the LC algorithm on ``--data`` from the model's weights."""
    from papers_plugins.compression.distillation import training_batches

    batches = training_batches(context, settings.batch_size)
    lc(model, compressed_layers(context.flat, settings), settings, batches, context.device)
    return model.eval()


LC_COMPRESS = Method(
    name="lc_compress",
    settings=LCSettings,
    description="The learning-compression algorithm (Carreira-Perpiñán 2017): L steps (the loss plus "
    "μ/2 ‖w − Δ(θ) − λ/μ‖²) alternated with C steps (θ = Π(w − λ/μ): an adaptive k-means codebook, "
    "pruning to a kept fraction or a truncated SVD), the multipliers λ updated, μ growing geometrically.",
    rewrite=check_settings,
    apply=apply_lc,
    measure=static_measure,
)


# -- the proxy and the trade-off on builtin:mnist5k --------------------------------------------------

REFERENCE_EPOCHS = 30
"""Passes of the reference LeNet-300-100 over builtin:mnist5k's 4,000 training digits (as han2015's)."""


@dataclass(frozen=True)
class Row:
    variant: str
    setting: str
    ratio: float
    reference: float
    direct: float
    lc: float
    """Test error (percent) of the reference, of its direct compression and of the LC algorithm's."""


def lc_against_direct(
    variant_id: str,
    settings_changes: Mapping[str, Any] | None = None,
    *,
    reference_epochs: int = REFERENCE_EPOCHS,
    limit: int | None = None,
    reference: Any = None,
) -> Row:
    """On one thread: the base of method variant ``variant_id`` trained as the reference (seed 0; or
    ``reference``, a trained model, copied), then compressed directly and by the LC algorithm with the
    variant's settings (``settings_changes`` replacing some); the test error of each."""
    import copy

    import torch

    from papers.train import intra_op_threads
    from papers_plugins.compression.pruning import pretrained, proxy_setup, shuffled_batches, top1

    setup = proxy_setup(variant_id, "lc_compress", limit=limit)
    settings = setup.settings.model_copy(update=dict(settings_changes or {}))
    layers = compressed_layers(setup.flat, settings)
    with intra_op_threads(1), torch.random.fork_rng(devices=[]):
        if reference is None:
            with pretrained(setup, reference_epochs) as (model, _, _):
                reference = copy.deepcopy(model)
        before = top1(reference, setup.test_images, setup.test_labels)
        direct = copy.deepcopy(reference)
        direct_compression(direct, layers, settings)
        compressed = copy.deepcopy(reference)
        torch.manual_seed(0)
        batches = shuffled_batches(setup.train_images, setup.train_labels, settings.batch_size, seed=1)
        lc(compressed, layers, settings, batches)
        return Row(
            variant_id,
            _setting(settings),
            round(compression_ratio(layers, settings), 2),
            round(100 - before, 2),
            round(100 - top1(direct, setup.test_images, setup.test_labels), 2),
            round(100 - top1(compressed.eval(), setup.test_images, setup.test_labels), 2),
        )


def _setting(settings: LCSettings) -> str:
    if settings.c_step == "quantize":
        return f"K = {settings.codebook}"
    if settings.c_step == "prune":
        return f"kept {settings.kept:g}"
    return f"rank {settings.rank}"


def proxy_check(variant_id: str, proxy: str) -> Any:
    """LC against direct compression on builtin:mnist5k: passes when the LC algorithm's test top-1
    reaches the direct compression's (the papers' claim that LC improves on it)."""
    from papers.checks import TrainingCheck

    def run(progress: bool) -> tuple[float, float]:
        row = lc_against_direct(variant_id)
        if progress:
            print(row)
        return 100 - row.lc, 100 - row.direct

    return TrainingCheck(
        name=f"{variant_id}-mnist5k",
        variant=variant_id,
        data="builtin:mnist5k",
        min_accuracy=0.0,
        max_seconds=300.0,
        compares_with={"metric": "error"},
        runner=run,
        proxy=proxy,
    )


@dataclass(frozen=True)
class Tradeoff:
    rows: list[Row]

    def lines(self) -> list[str]:
        out = [f"{'variant':40} {'setting':10} {'ratio':>7} {'ref %':>6} {'direct %':>9} {'LC %':>6}"]
        for r in self.rows:
            out.append(
                f"{r.variant:40} {r.setting:10} {r.ratio:7.2f} {r.reference:6.2f} {r.direct:9.2f} {r.lc:6.2f}"
            )
        return out

    def svg(self) -> str:
        from papers.charts import Point, scatter

        points = [Point("direct compression", r.setting, r.ratio, r.direct) for r in self.rows]
        points += [Point("LC algorithm", r.setting, r.ratio, r.lc) for r in self.rows]
        return scatter(
            points,
            "LeNet-300-100 on builtin:mnist5k: test error against compression ratio",
            "compression ratio (32-bit weights over θ)",
            "test error (%)",
        )


def tradeoff(
    variants: list[tuple[str, Mapping[str, Any]]],
    *,
    reference_epochs: int = REFERENCE_EPOCHS,
    limit: int | None = None,
) -> Tradeoff:
    """Error against compression ratio: each (method variant, settings changes) compressed directly and by
    LC from one reference network (the first variant's base, trained once); ``limit``: the first images."""
    import copy

    from papers_plugins.compression.pruning import pretrained, proxy_setup

    setup = proxy_setup(variants[0][0], "lc_compress", limit=limit)
    with pretrained(setup, reference_epochs) as (model, _, _):  # on one thread, torch's random state kept
        reference = copy.deepcopy(model)
    return Tradeoff(
        [lc_against_direct(v, changes, reference=reference, limit=limit) for v, changes in variants]
    )
