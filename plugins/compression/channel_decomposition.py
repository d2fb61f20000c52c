"""Zhang, Zou, Ming, He and Sun, "Efficient and Accurate Approximations of Nonlinear Convolutional
Networks" (CVPR 2015, arXiv 1411.4229), and Zhang, Zou, He and Sun, "Accelerating Very Deep
Convolutional Networks for Classification and Detection" (TPAMI 2016, arXiv 1505.06798): channel
decomposition with a nonlinear, asymmetric reconstruction of the responses, ranks chosen for the
whole model by their energy.

``channel_decompose`` replaces a convolution of d filters by d′ filters (k×k, the layer's stride and
padding) and a 1×1 convolution back to d, from a low-rank matrix M = P Qᵀ (d × d′ twice) that maps
the layer's responses y (d at each position) to approximations M y + b: the first layer's filters
are Qᵀ W, the 1×1 layer is P with bias b. M is chosen from responses sampled on data:

- linear: the top d′ principal directions of y (M = U Uᵀ, b = (I − M) ȳ);
- asymmetric: M ŷ + b fitted to y, where ŷ are the layer's responses to the input the already
  approximated layers below give, so errors do not accumulate: the reduced-rank regression of Y on
  Ŷ, whose closed form is the generalised SVD of the paper (P: top eigenvectors of
  Y Ŷᵀ (Ŷ Ŷᵀ)⁻¹ Ŷ Yᵀ, centred; Qᵀ = Pᵀ Y Ŷᵀ (Ŷ Ŷᵀ)⁻¹);
- nonlinear, where a ReLU reads the layer: min Σ ‖r(y) − r(M ŷ + b)‖², solved as the paper does by
  alternating, with auxiliary z and a penalty λ ‖z − (M ŷ + b)‖² rising from 0.01 to 1: the (M, b)
  step is the regression above with z for y, the z step is elementwise in closed form (z ≤ 0 or
  z ≥ 0, whichever costs less).

Without data the responses are taken to white input (covariance W Wᵀ): M projects onto W's top left
singular vectors. The ranks are settings, so the rewrite is static; :func:`energy_ranks` gives a
trained model's ranks for a target speed-up by the paper's criterion: maximise the product over layers
of the PCA energy kept (Σ of the kept eigenvalues of each layer's response covariance) under a budget of
multiply-adds, greedily dropping the eigenvalue that loses least energy per multiply-add saved.

Hand-written: the alternating solver and the greedy selection (the paper's, a few lines of torch each);
the eigendecompositions are torch's.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field

from papers.errors import SpecError
from papers.graph import FlatGraph
from papers.methods import Method, MethodContext, Settings
from papers_plugins.compression import low_rank

if TYPE_CHECKING:
    import torch

Rank = Annotated[int, Field(ge=1)]


class ChannelSettings(Settings):
    """The settings of ``channel_decompose``."""

    ranks: dict[str, Rank] = Field(description="A convolution's d′ (filters kept), by node name; at most d.")
    asymmetric: bool = Field(
        True, description="Fit to the original responses from the approximated layers' inputs (Section 3.3)."
    )
    nonlinear: bool = Field(
        True, description="Reconstruct after the ReLU where one reads the layer (Section 3.2)."
    )
    images: int = Field(1000, ge=1, le=1_000_000, description="Training images whose responses are sampled.")
    positions: int = Field(10, ge=1, le=10_000, description="Positions sampled per image and layer.")
    iterations: int = Field(25, ge=1, le=1000, description="Alternations of the nonlinear solver.")
    fine_tune_epochs: int = Field(
        0, ge=0, le=1000, description="Epochs of fine-tuning the whole network after, where data is given."
    )
    fine_tune_lr: float = Field(1.0e-3, gt=0, description="SGD rate while fine-tuning.")
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5.0e-4, ge=0)
    batch_size: int = Field(64, ge=1, le=65536)


def channel_rewrite(flat: FlatGraph, settings: ChannelSettings) -> FlatGraph:
    """Each named convolution as ``.reduce`` (d′ filters, k×k) and ``.expand`` (1×1, d′ → d)."""
    if not settings.ranks:
        raise SpecError("settings give no `ranks`; nothing would be decomposed", field="settings.ranks")
    shapes = low_rank.layer_shapes(flat)
    for name, rank in settings.ranks.items():
        field = f"settings.ranks.{name}"
        layer = low_rank.named_layer(shapes, name, field, ("conv2d",))
        low_rank.check_rank(rank, layer.out_channels, f"{name} has {layer.out_channels} filters", field)
        args = low_rank.layer_args(flat, name)
        flat = low_rank.split_node(
            flat,
            name,
            [
                ("reduce", "conv2d", {**args, "out_channels": rank, "bias": layer.bias}),
                ("expand", "conv2d", {"out_channels": layer.out_channels, "kernel_size": 1, "bias": True}),
            ],
        )
    return flat


def chains(settings: ChannelSettings) -> dict[str, tuple[str, ...]]:
    return {name: (f"{name}.reduce", f"{name}.expand") for name in settings.ranks}


def channel_measure(flat: FlatGraph, settings: ChannelSettings) -> dict[str, float]:
    """The whole model's compression ratio and theoretical speed-up, from the ranks alone."""
    return low_rank.reductions(flat, low_rank.replaced(flat, chains(settings)))


# -- the reconstruction ----------------------------------------------------------------------------


def reduced_rank_fit(targets: torch.Tensor, inputs: torch.Tensor, rank: int) -> tuple[Any, Any, Any]:
    """(P, Qᵀ, b) minimising Σ ‖t − P Qᵀ x − b‖² over samples (rows of ``targets`` and ``inputs``,
    n × d each) with P Qᵀ of rank ``rank``: the reduced-rank regression (the paper's GSVD), float64."""
    import torch

    t_mean, x_mean = targets.mean(0), inputs.mean(0)
    t, x = targets - t_mean, inputs - x_mean
    gram = x.T @ x
    ridge = 1e-10 * float(gram.diagonal().mean()) * torch.eye(gram.shape[0], dtype=gram.dtype)
    full = torch.linalg.solve(gram + ridge, x.T @ t).T  # d × d: the unconstrained regression
    fitted = x @ full.T
    _, vectors = torch.linalg.eigh(fitted.T @ fitted)
    p = vectors[:, -rank:].flip(1)  # the top directions of the fitted responses
    q_t = p.T @ full
    bias = t_mean - p @ (q_t @ x_mean)
    return p, q_t, bias


def _z_step(target: torch.Tensor, fitted: torch.Tensor, penalty: float) -> torch.Tensor:
    """argmin_z (r(y) − r(z))² + λ (z − fitted)², elementwise, r = ReLU, ``target`` = r(y)."""
    import torch

    below = torch.clamp(fitted, max=0.0)
    above = torch.clamp((penalty * fitted + target) / (penalty + 1.0), min=0.0)
    cost_below = target**2 + penalty * (below - fitted) ** 2
    cost_above = (target - above) ** 2 + penalty * (above - fitted) ** 2
    return torch.where(cost_below <= cost_above, below, above)


def nonlinear_fit(
    responses: torch.Tensor, approximated: torch.Tensor, rank: int, iterations: int
) -> tuple[Any, Any, Any]:
    """(P, Qᵀ, b) minimising Σ ‖r(y) − r(P Qᵀ ŷ + b)‖² (rows: samples), by alternating the regression
    with the z step while λ rises geometrically from 0.01 to 1 (Section 3.2)."""
    target = responses.clamp(min=0.0)
    p, q_t, bias = reduced_rank_fit(responses, approximated, rank)
    for step in range(iterations):
        penalty = 0.01 * 100.0 ** (step / max(iterations - 1, 1))
        z = _z_step(target, approximated @ q_t.T @ p.T + bias, penalty)
        p, q_t, bias = reduced_rank_fit(z, approximated, rank)
    return p, q_t, bias


def _readers_relu(flat: FlatGraph, name: str) -> bool:
    readers = [node for node in flat.nodes if any(ref.partition(":")[0] == name for ref in node.inputs)]
    return bool(readers) and all(node.op == "relu" for node in readers)


def _sampled(outputs: torch.Tensor, positions: int, generator: torch.Generator) -> torch.Tensor:
    """``positions`` random positions of each image's maps (n × d × h × w → n·positions × d)."""
    import torch

    n, d, h, w = outputs.shape
    index = torch.randint(0, h * w, (n, positions), generator=generator)
    flat = outputs.reshape(n, d, h * w)
    return torch.gather(flat, 2, index[:, None, :].expand(n, d, positions)).permute(0, 2, 1).reshape(-1, d)


def _sampled_maps(
    model: Any,
    name: str,
    images: torch.Tensor,
    seed: int,
    positions: int,
    *,
    read_input: bool = False,
    transform: Any = None,
) -> torch.Tensor:
    """Module ``name``'s outputs (or, with ``read_input``, its inputs passed through ``transform``) on
    ``images``, at ``positions`` random positions per image (the same for the same ``seed``, images and
    map size), as float64 rows."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    rows: list[torch.Tensor] = []

    def keep(_module: Any, inputs: Any, output: torch.Tensor) -> None:
        maps = transform(inputs[0]) if read_input else output
        rows.append(_sampled(maps.detach(), positions, generator).double())

    hook = model.get_submodule(name).register_forward_hook(keep)
    try:
        with torch.no_grad():
            for start in range(0, len(images), 250):
                model(images[start : start + 250])
    finally:
        hook.remove()
    return torch.cat(rows)


def data_images(context: MethodContext, count: int) -> torch.Tensor | None:
    """The first ``count`` training images of ``context.data``, or ``None`` without data."""
    if context.data is None:
        return None
    shape = tuple(next(iter(context.flat.inputs.values())))
    return training_images(str(context.data), shape)[:count].to(context.device)


@functools.lru_cache(maxsize=2)
def training_images(data: str, shape: tuple[int, ...]) -> torch.Tensor:
    """``data``'s training images at ``shape``, read once per process (reading MNIST's digits takes
    seconds, and a proxy or a test asks for them more than once)."""
    from papers_plugins.compression.pruning import training_split

    images, _ = training_split(data, shape)
    return images


def white_input_fit(matrix: torch.Tensor, bias: torch.Tensor | None, rank: int) -> tuple[Any, Any, Any]:
    """(P, Qᵀ, b) for responses to white input (covariance W Wᵀ): P = Q = W's top left singular
    vectors, and b keeps the bias exactly (b = (I − P Pᵀ) bias)."""
    import torch

    u, _, _ = torch.linalg.svd(matrix, full_matrices=False)
    p = u[:, :rank]
    offset = torch.zeros(matrix.shape[0], dtype=matrix.dtype) if bias is None else bias - p @ (p.T @ bias)
    return p, p.T, offset


def response_fit(
    model: Any,
    settings: ChannelSettings,
    context: MethodContext,
    images: torch.Tensor | None,
    index: int,
    name: str,
    approximant: Any,
    first: str,
    kernel: torch.Tensor,
    bias: torch.Tensor | None,
) -> tuple[Any, Any, Any]:
    """(P, Qᵀ, b) of layer ``name`` at its d′: M maps the responses of ``approximant`` (the layer
    before M, whose kernel is ``kernel``: the original convolution, or Zhang et al. 2016's spatial pair)
    to the original layer's. With ``images``: sampled responses, ŷ being ``approximant`` on the input
    the approximated model gives ``first`` (its chain's first node) where asymmetric, else on the
    original model's input; without: responses to white input."""
    rank = settings.ranks[name]
    if images is None:
        return white_input_fit(kernel.reshape(kernel.shape[0], -1), bias, rank)
    before = context.before
    assert before is not None
    y = _sampled_maps(before, name, images, index, settings.positions)
    if settings.asymmetric:
        y_hat = _sampled_maps(
            model, first, images, index, settings.positions, read_input=True, transform=approximant
        )
    elif approximant is before.get_submodule(name):
        y_hat = y  # the original layer on its original input (calling it from its own hook would recurse)
    else:
        y_hat = _sampled_maps(
            before, name, images, index, settings.positions, read_input=True, transform=approximant
        )
    if settings.nonlinear and _readers_relu(context.flat, f"{name}.expand"):
        return nonlinear_fit(y, y_hat, rank, settings.iterations)
    return reduced_rank_fit(y, y_hat, rank)


def channel_apply(model: Any, settings: ChannelSettings, context: MethodContext) -> Any:
    """Each decomposed layer's d′ filters and 1×1 layer, from responses on the training images where
    data is given (layers in order, each fitted from the input the layers below, already approximated,
    give it), else from the weights alone (responses to white input)."""
    images = data_images(context, settings.images)
    for index, name in enumerate(settings.ranks):
        weight, bias = low_rank.original_weight(context, name)
        original = context.before.get_submodule(name) if context.before is not None else None
        p, q_t, offset = response_fit(
            model, settings, context, images, index, name, original, f"{name}.reduce", weight, bias
        )
        write_channel_factors(model, name, weight, bias, p, q_t, offset)
    low_rank.fine_tune(model, settings, context)
    return model


def write_channel_factors(
    model: Any, name: str, weight: Any, bias: Any, p: Any, q_t: Any, offset: Any
) -> None:
    """``.reduce`` = Qᵀ W (bias Qᵀ b), ``.expand`` = P with bias ``offset``: P Qᵀ (W x + b) + offset."""
    reduced = (q_t @ weight.reshape(weight.shape[0], -1)).reshape(q_t.shape[0], *weight.shape[1:])
    low_rank.set_weights(model, f"{name}.reduce", reduced, None if bias is None else q_t @ bias)
    low_rank.set_weights(model, f"{name}.expand", p[:, :, None, None], offset)


CHANNEL_DECOMPOSE = Method(
    name="channel_decompose",
    settings=ChannelSettings,
    description="A convolution of d filters as d′ filters and a 1×1 convolution back to d, from the rank-d′ "
    "reconstruction of its sampled responses: asymmetric (from the approximated layers' inputs) and "
    "nonlinear (after the ReLU) by the paper's generalised SVD and alternating solver (Zhang et al. "
    "2015, 2016).",
    rewrite=channel_rewrite,
    apply=channel_apply,
    measure=channel_measure,
)


# -- whole-model rank selection ----------------------------------------------------------------------


def energy_ranks(
    model: Any, flat: FlatGraph, images: torch.Tensor, names: list[str], speedup: float, positions: int = 10
) -> dict[str, int]:
    """Each named layer's d′ for a ``speedup`` of their multiply-adds together, by the paper's criterion
    (Section 4.1): maximise Π_l Σ_{a ≤ d′_l} σ_{l,a} (the PCA energy of each layer's responses kept)
    with the layers' multiply-adds at most their original total / ``speedup``, greedily dropping the
    eigenvalue whose loss of log-energy per multiply-add saved is least."""
    import torch

    from papers.measure import measure_graph
    from papers.registry import get_registry

    shapes = low_rank.layer_shapes(flat)
    measured = measure_graph("energy", flat, get_registry().catalogue)
    spatial = {}
    for name in names:
        size = measured.node_shapes[name]
        spatial[name] = size[2] * size[3]
    eigen, cost, kept = {}, {}, {}
    for index, name in enumerate(names):
        y = _sampled_maps(model, name, images, index, positions)
        values = torch.linalg.eigvalsh(torch.cov(y.T)).flip(0).clamp(min=0.0)
        layer = shapes[name]
        eigen[name] = values
        # a kept eigenvalue costs d′'s share: its k×k filter over c inputs and its row of the 1×1 layer
        cost[name] = (layer.in_channels * layer.kernel[0] * layer.kernel[1] + layer.out_channels) * spatial[
            name
        ]
        kept[name] = layer.out_channels
    original = sum(
        shapes[n].in_channels
        * shapes[n].kernel[0]
        * shapes[n].kernel[1]
        * shapes[n].out_channels
        * spatial[n]
        for n in names
    )
    budget = original / speedup

    def total() -> float:
        return sum(kept[n] * cost[n] for n in names)

    while total() > budget:
        candidates = []
        for name in names:
            if kept[name] <= 1:
                continue
            energy = float(eigen[name][: kept[name]].sum())
            smaller = float(eigen[name][: kept[name] - 1].sum())
            loss = math.log(energy) - math.log(smaller) if smaller > 0 else math.inf
            candidates.append((loss / cost[name], name))
        if not candidates:
            break
        kept[min(candidates)[1]] -= 1
    return kept


# -- the small-scale reproduction (`papers check zhang2015 --run`) -----------------------------------

PROXY_VARIANT = "zhang2015-lenet5_caffe"
PROXY_EPOCHS = 30
"""Passes over the 4,000 training digits before decomposing: the registry's choice (as Han et al.'s)."""
PROXY_SPEEDUP = 2.0
"""The convolutions' speed-up the proxy's ranks are chosen for (the registry's choice)."""


def _energy_settings(model: Any, flat: FlatGraph, settings: ChannelSettings) -> ChannelSettings:
    from papers_plugins.compression.pruning import PROXY_DATA

    images = training_images(PROXY_DATA, tuple(next(iter(flat.inputs.values()))))
    ranks = energy_ranks(model, flat, images[: settings.images], list(settings.ranks), PROXY_SPEEDUP)
    return settings.model_copy(update={"ranks": ranks})


def channel_proxy(
    variant_id: str = PROXY_VARIANT,
    *,
    epochs: int = PROXY_EPOCHS,
    fine_tune_epochs: int | None = None,
    limit: int | None = None,
) -> dict[str, Any]:
    """The variant's base trained on builtin:mnist5k, its layers' ranks chosen by the energy criterion
    for a 2× speed-up of them, decomposed from sampled responses (asymmetric), fine-tuned
    (:func:`low_rank.proxy_run`)."""
    return low_rank.proxy_run(
        variant_id,
        CHANNEL_DECOMPOSE,
        epochs=epochs,
        fine_tune_epochs=fine_tune_epochs,
        limit=limit,
        choose=_energy_settings,
    )


def proxy_checks() -> list:
    """The paper's proxy check (its plugin's ``papers_checks``)."""
    return [
        low_rank.proxy_check(
            PROXY_VARIANT,
            channel_proxy,
            lambda settings: f"d′ {settings.ranks} by energy for {PROXY_SPEEDUP:g}× fewer conv multiply-adds",
            f"Caffe's LeNet trained on 5,000 of MNIST's digits (4,000 training, 1,000 test images) for "
            f"{PROXY_EPOCHS} epochs with Caffe's SGD settings, not VGG-16 on ImageNet; both convolutions' "
            f"d′ chosen by the paper's energy criterion for {PROXY_SPEEDUP:g}× fewer multiply-adds in them, "
            "each decomposed from responses sampled on the training digits with the asymmetric "
            "reconstruction (Caffe's LeNet has no ReLU after its convolutions, so the linear one), then the "
            "whole network fine-tuned for the variant's epochs at its rate; passes when the fine-tuned "
            "model's top-1 is within 1 point of the undecomposed model's",
        )
    ]
