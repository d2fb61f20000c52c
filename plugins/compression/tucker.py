"""Kim, Park, Yoo, Choi, Yang and Shin, "Compression of Deep Convolutional Neural Networks for Fast
and Low Power Mobile Applications" (ICLR 2016, arXiv 1511.06530): one-shot whole-network compression
by Tucker decomposition, with ranks from variational Bayesian matrix factorisation, then fine-tuning.

``tucker2`` replaces a convolution's kernel K (T output × S input channels × d × d) by its Tucker-2
decomposition along the two channel modes: a core C (R4 × R3 × d × d) and factors U3 (S × R3) and
U4 (T × R4), so the layer becomes three convolutions with no non-linearity between them: a 1×1 one
from S to R3 channels (U3ᵀ), the d×d core from R3 to R4 with the layer's stride and padding, and a
1×1 one from R4 to T (U4, with the layer's bias). A layer given no input rank (``[null, R4]``) gets
Tucker-1 along the output mode only, as the paper does for the first layer, whose three input
channels leave nothing to compress; a linear layer gets the truncated SVD (Tucker-2 of a matrix).
The ranks are settings, so the rewrite is static and ``papers check`` measures the parameters,
multiply-adds, compression ratio and theoretical speed-up without weights; ``apply`` computes the
factors from the trained layer with tensorly's ``partial_tucker`` (higher-order orthogonal
iteration from the HOSVD), and fine-tunes the whole network where data is given.

The paper chooses the ranks by VBMF on the mode-3 and mode-4 unfoldings of each kernel (the
S × Tdd and T × Sdd matrices): :func:`vbmf_rank` is the empirical VBMF rank (noise variance
estimated) of Nakajima, Sugiyama, Babacan and Tomioka, "Global analytic solution of fully-observed
variational Bayesian matrix factorization" (JMLR 14, 2013): a singular value γ is kept when
γ² / (M σ²) exceeds (1 + τ)(1 + α/τ), α = L/M, τ the zero of Φ(τ) + Φ(τ/α), Φ(z) = log(1 + z)/z − ½,
σ² the minimiser of the free energy. :func:`vbmf_ranks` gives every layer's ranks as ``tucker2``
settings. Hand-written: tensorly has no VBMF, and no maintained library ships one (the common
script is an unpackaged single file); the free energy is minimised with scipy.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field

from papers.errors import SpecError
from papers.graph import FlatGraph
from papers.methods import Method, MethodContext, Settings
from papers_plugins.compression import low_rank

if TYPE_CHECKING:
    import numpy as np
    import torch

Rank = Annotated[int, Field(ge=1)]


class TuckerSettings(Settings):
    """The settings of ``tucker2``."""

    ranks: dict[str, Annotated[list[Rank | None], Field(min_length=2, max_length=2)]] = Field(
        {},
        description="A convolution's ranks [R3, R4] (input mode, output mode), by node name; "
        "[null, R4]: Tucker-1 along the output mode only (the paper's first layer).",
    )
    linear_ranks: dict[str, Rank] = Field(
        {}, description="A linear layer's rank (truncated SVD, the Tucker decomposition of a matrix)."
    )
    fine_tune_epochs: int = Field(
        0, ge=0, le=1000, description="Epochs of fine-tuning the whole network after, where data is given."
    )
    fine_tune_lr: float = Field(1.0e-3, gt=0, description="SGD rate while fine-tuning.")
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5.0e-4, ge=0)
    batch_size: int = Field(64, ge=1, le=65536)


# -- the static rewrite ----------------------------------------------------------------------------


def tucker_rewrite(flat: FlatGraph, settings: TuckerSettings) -> FlatGraph:
    """Each named convolution split into [1×1 to R3], d×d core to R4, 1×1 to T; each named linear
    layer into two (rank R). Ranks above the layer's channels are refused naming the setting."""
    if not settings.ranks and not settings.linear_ranks:
        raise SpecError("settings give no `ranks` and no `linear_ranks`; nothing would be decomposed")
    shapes = low_rank.layer_shapes(flat)
    for name, (r3, r4) in settings.ranks.items():
        field = f"settings.ranks.{name}"
        layer = low_rank.named_layer(shapes, name, field, ("conv2d",))
        if r4 is None:
            raise SpecError("the output rank R4 (second) is needed; only R3 may be null", field=field)
        low_rank.check_rank(r4, layer.out_channels, f"{name} has {layer.out_channels} output channels", field)
        if r3 is not None:
            low_rank.check_rank(
                r3, layer.in_channels, f"{name} has {layer.in_channels} input channels", field
            )
        args = low_rank.layer_args(flat, name)
        chain: list[tuple[str, str, dict[str, Any]]] = []
        if r3 is not None:
            chain.append(("u", "conv2d", {"out_channels": r3, "kernel_size": 1, "bias": False}))
        chain.append(("core", "conv2d", {**args, "out_channels": r4, "bias": False}))
        chain.append(
            ("v", "conv2d", {"out_channels": layer.out_channels, "kernel_size": 1, "bias": layer.bias})
        )
        flat = low_rank.split_node(flat, name, chain)
    for name, rank in settings.linear_ranks.items():
        field = f"settings.linear_ranks.{name}"
        layer = low_rank.named_layer(shapes, name, field, ("linear",))
        limit = min(layer.in_channels, layer.out_channels)
        low_rank.check_rank(
            rank, limit, f"{name} maps {layer.in_channels} features to {layer.out_channels}", field
        )
        flat = low_rank.split_node(
            flat,
            name,
            [
                ("u", "linear", {"out_features": rank, "bias": False}),
                ("v", "linear", {"out_features": layer.out_channels, "bias": layer.bias}),
            ],
        )
    return flat


def chains(settings: TuckerSettings) -> dict[str, tuple[str, ...]]:
    """The nodes each decomposed layer became, in order."""
    out = {
        name: ((f"{name}.u",) if r3 is not None else ()) + (f"{name}.core", f"{name}.v")
        for name, (r3, _) in settings.ranks.items()
    }
    out.update({name: (f"{name}.u", f"{name}.v") for name in settings.linear_ranks})
    return out


def tucker_measure(flat: FlatGraph, settings: TuckerSettings) -> dict[str, float]:
    """The whole model's compression ratio (parameters) and theoretical speed-up (multiply-adds)
    against the undecomposed model, from the ranks alone."""
    return low_rank.reductions(flat, low_rank.replaced(flat, chains(settings)))


# -- the factors -----------------------------------------------------------------------------------


def tucker2_factors(weight: torch.Tensor, r3: int | None, r4: int) -> tuple[Any, Any, Any]:
    """(U3ᵀ as an R3 × S × 1 × 1 kernel or ``None``, the core R4 × R3 × d × d, U4 as T × R4 × 1 × 1) of
    a T × S × d × d kernel, by tensorly's partial Tucker (HOOI, SVD initialisation), in float64."""
    import tensorly as tl
    import torch
    from tensorly.decomposition import partial_tucker

    array = weight.detach().double().cpu().numpy()
    modes, ranks = ([0, 1], [r4, r3]) if r3 is not None else ([0], [r4])
    with tl.backend_context("numpy"):
        (core, factors), _ = partial_tucker(
            array, rank=ranks, modes=modes, init="svd", n_iter_max=100, tol=1e-10
        )
    core_t = torch.from_numpy(core.copy())
    u4 = torch.from_numpy(factors[0].copy())
    first = None if r3 is None else torch.from_numpy(factors[1].T.copy())[:, :, None, None]
    return first, core_t, u4[:, :, None, None]


def svd_factors(weight: torch.Tensor, rank: int) -> tuple[Any, Any]:
    """(S_r V_rᵀ, U_r) of a T × S matrix: the rank-``rank`` truncated SVD as two linear layers."""
    import torch

    u, s, vh = torch.linalg.svd(weight.detach().double().cpu(), full_matrices=False)
    return s[:rank, None] * vh[:rank], u[:, :rank]


def tucker_apply(model: Any, settings: TuckerSettings, context: MethodContext) -> Any:
    """Write each decomposed layer's factors, computed from its weights before the rewrite; then
    fine-tune where data is given (Section 3.3)."""
    for name, (r3, r4) in settings.ranks.items():
        assert r4 is not None  # the rewrite refused it
        weight, bias = low_rank.original_weight(context, name)
        first, core, last = tucker2_factors(weight, r3, r4)
        if first is not None:
            low_rank.set_weights(model, f"{name}.u", first)
        low_rank.set_weights(model, f"{name}.core", core)
        low_rank.set_weights(model, f"{name}.v", last, bias)
    for name, rank in settings.linear_ranks.items():
        weight, bias = low_rank.original_weight(context, name)
        first, last = svd_factors(weight, rank)
        low_rank.set_weights(model, f"{name}.u", first)
        low_rank.set_weights(model, f"{name}.v", last, bias)
    low_rank.fine_tune(model, settings, context)
    return model


TUCKER2 = Method(
    name="tucker2",
    settings=TuckerSettings,
    description="Each named convolution replaced by its Tucker-2 decomposition along the channel modes "
    "(1×1 to R3, the d×d core to R4, 1×1 to T; Tucker-1 where R3 is null) and each named linear layer by "
    "its truncated SVD, factors by tensorly from the trained weights, then fine-tuning (Kim et al. 2016).",
    rewrite=tucker_rewrite,
    apply=tucker_apply,
    measure=tucker_measure,
)


# -- VBMF rank selection ---------------------------------------------------------------------------


def vbmf_rank(matrix: Any) -> int:
    """The empirical VBMF rank of ``matrix`` (noise variance estimated): how many singular values
    the global analytic EVB solution keeps (Nakajima et al. 2013, with the free energy of a fully
    observed matrix); 0 for pure noise."""
    import numpy as np
    from scipy.optimize import brentq, minimize_scalar

    values = np.asarray(matrix, dtype=np.float64)
    if values.ndim != 2 or min(values.shape) == 0:
        raise ValueError(f"VBMF needs a non-empty matrix, not shape {values.shape}")
    short, long = sorted(values.shape)
    gammas = np.linalg.svd(values, compute_uv=False)
    if not np.any(gammas > 0):
        return 0
    alpha = short / long

    def phi(z: float) -> float:
        return math.log1p(z) / z - 0.5

    tau_threshold = brentq(lambda t: phi(t) + phi(t / alpha), 1e-9, 1e9)
    x_threshold = (1 + tau_threshold) * (1 + alpha / tau_threshold)

    def free_energy(log_variance: float) -> float:
        x = gammas[gammas > 0] ** 2 / (long * math.exp(log_variance))
        energy = x - np.log(x)
        kept = x > x_threshold
        tau = _tau(x[kept], alpha)
        energy[kept] += np.log1p(tau) + alpha * np.log1p(tau / alpha) - tau
        return float(energy.sum())

    # a coarse grid over log σ² finds the free energy's basin; a bounded search refines it
    upper = float((gammas**2).sum() / (short * long))
    lower = float(gammas[gammas > 0].min() ** 2 / (long * x_threshold)) / 10
    grid = np.linspace(math.log(lower), math.log(upper), 400)
    best = int(np.argmin([free_energy(g) for g in grid]))
    low, high = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
    log_variance = minimize_scalar(free_energy, bounds=(low, high), method="bounded").x
    return int(np.sum(gammas**2 / (long * math.exp(log_variance)) > x_threshold))


def _tau(x: np.ndarray, alpha: float) -> np.ndarray:
    import numpy as np

    shifted = x - (1 + alpha)
    return 0.5 * (shifted + np.sqrt(np.maximum(shifted**2 - 4 * alpha, 0.0)))


def vbmf_ranks(model: Any, flat: FlatGraph, *, linear: bool = True) -> dict[str, Any]:
    """``tucker2`` settings (``ranks``, ``linear_ranks``) for every ungrouped convolution and (with
    ``linear``) every linear layer of ``model``: each rank VBMF's on the layer's unfolding (the
    mode-4 one T × Sdd for R4, the mode-3 one S × Tdd for R3), at least 1; a layer with a single input
    channel gets Tucker-1 (R3 null). A layer whose ranks would not make it smaller is left out."""
    ranks: dict[str, list[int | None]] = {}
    linear_ranks: dict[str, int] = {}
    for name, layer in low_rank.layer_shapes(flat).items():
        if layer.groups != 1:
            continue
        weight = model.get_submodule(name).weight.detach().double().cpu()
        out_channels, in_channels = weight.shape[:2]
        r4 = max(1, vbmf_rank(weight.reshape(out_channels, -1).numpy()))
        if layer.op == "linear":
            if linear and r4 * (in_channels + out_channels) < in_channels * out_channels:
                linear_ranks[name] = r4
            continue
        area = layer.kernel[0] * layer.kernel[1]
        r3 = (
            None
            if in_channels == 1
            else max(1, vbmf_rank(weight.transpose(0, 1).reshape(in_channels, -1).numpy()))
        )
        size = (in_channels * r3 if r3 else 0) + (r3 or in_channels) * r4 * area + r4 * out_channels
        if size < in_channels * out_channels * area:
            ranks[name] = [r3, r4]
    return {"ranks": ranks, "linear_ranks": linear_ranks}


# -- the small-scale reproduction (`papers check kim2016 --run`) ------------------------------------

PROXY_VARIANT = "kim2016-lenet5_caffe"
PROXY_EPOCHS = 30
"""Passes over the 4,000 training digits before decomposing: the registry's choice (as Han et al.'s)."""


def decompose(model: Any, flat: FlatGraph, settings: TuckerSettings) -> tuple[Any, FlatGraph]:
    """``model`` (built from ``flat``, with weights) decomposed as ``settings`` say, and its graph."""
    return low_rank.decompose(model, flat, settings, tucker_rewrite, tucker_apply)


def _vbmf_settings(model: Any, flat: FlatGraph, settings: TuckerSettings) -> TuckerSettings:
    return TuckerSettings(**{**settings.model_dump(), **vbmf_ranks(model, flat)})


def tucker_proxy(
    variant_id: str = PROXY_VARIANT,
    *,
    epochs: int = PROXY_EPOCHS,
    fine_tune_epochs: int | None = None,
    limit: int | None = None,
) -> dict[str, Any]:
    """The variant's base trained on builtin:mnist5k, every layer decomposed at the ranks VBMF finds in
    its trained weights, fine-tuned (:func:`low_rank.proxy_run`)."""
    return low_rank.proxy_run(
        variant_id,
        TUCKER2,
        epochs=epochs,
        fine_tune_epochs=fine_tune_epochs,
        limit=limit,
        choose=_vbmf_settings,
    )


def proxy_checks() -> list:
    """The paper's proxy check (its plugin's ``papers_checks``)."""
    return [
        low_rank.proxy_check(
            PROXY_VARIANT,
            tucker_proxy,
            lambda settings: (
                f"VBMF's ranks {settings.ranks}, {settings.linear_ranks}, fine-tuned "
                f"{settings.fine_tune_epochs} epochs at {settings.fine_tune_lr:g}"
            ),
            f"Caffe's LeNet trained on 5,000 of MNIST's digits (4,000 training, 1,000 test images) for "
            f"{PROXY_EPOCHS} epochs with Caffe's SGD settings, not an ImageNet network; every layer "
            "decomposed at the ranks VBMF finds in its trained weights (Tucker-1 for conv1, Tucker-2 for "
            "conv2, truncated SVD for fc1 and fc2), then the whole network fine-tuned as it was trained "
            "(the variant's epochs, as many as the base's, at its rate, Caffe's LeNet rate, with the "
            "variant's momentum and weight decay); passes when the fine-tuned model's top-1 is within 1 "
            "point of the undecomposed model's",
        )
    ]
