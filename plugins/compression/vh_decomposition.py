"""Tai, Xiao, Zhang, Wang and E, "Convolutional Neural Networks with Low-rank Regularization" (ICLR
2016, arXiv 1511.06067): a d×d convolution as K vertical d×1 filters followed by horizontal 1×d ones,
with the exact global optimum in closed form, and low-rank networks trained from scratch.

``vh_decompose`` replaces a convolution W (N output × C input channels × d × d) by a vertical layer
V (K filters of C × d × 1) and a horizontal layer H (N filters of K × 1 × d), so that
W[n, c, i, j] ≈ Σ_k V[k, c, i] H[n, k, j]. Arranging W as the (C·d) × (N·d) matrix
W̃[(c, i), (n, j)] = W[n, c, i, j] makes the approximation a rank-K factorisation of W̃, so its
Frobenius optimum is W̃'s truncated SVD (Eckart-Young): V[k] = √σ_k u_k, H[k] = √σ_k v_k. This is the
paper's closed form (its Theorem 1): exact and global, where iterative schemes for the same
decomposition are neither. The vertical layer takes the convolution's vertical stride, padding and
dilation, the horizontal one the horizontal ones and its bias; at K = min(C·d, N·d) the pair
reproduces the layer exactly. The ranks are settings, so the rewrite is static; ``apply`` computes
the factors with ``torch.linalg.svd`` from the trained layer and fine-tunes where data is given.

With ``batch_norm`` a batch normalisation sits between the two layers, the paper's way of training
the low-rank structure from scratch (``papers train`` on such a variant trains the two-layer form
directly). When a trained layer is decomposed into it, the normalisation starts as the identity
(zero mean, unit scale, running variance 1 − eps), so the decomposition stays exact; fine-tuning then
trains it. Where the paper puts the normalisation inside the pair beyond that was not confirmed here.

Hand-written: the rearrangement of the kernel into W̃ and back (a few reshapes); the SVD is torch's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field

from papers.errors import SpecError
from papers.graph import FlatGraph
from papers.methods import Method, MethodContext, Settings
from papers_plugins.compression import low_rank

if TYPE_CHECKING:
    import torch

Rank = Annotated[int, Field(ge=1)]


class VHSettings(Settings):
    """The settings of ``vh_decompose``."""

    ranks: dict[str, Rank] = Field(
        description="A convolution's K, the number of vertical filters (the rank of the decomposition), "
        "by node name; at most min(C·d, N·d)."
    )
    batch_norm: bool = Field(
        False,
        description="A batch normalisation between the vertical and the horizontal layer (Section 3.2).",
    )
    fine_tune_epochs: int = Field(
        0, ge=0, le=1000, description="Epochs of fine-tuning the whole network after, where data is given."
    )
    fine_tune_lr: float = Field(1.0e-3, gt=0, description="SGD rate while fine-tuning.")
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5.0e-4, ge=0)
    batch_size: int = Field(64, ge=1, le=65536)


def vh_rewrite(flat: FlatGraph, settings: VHSettings) -> FlatGraph:
    """Each named convolution split into ``name.v`` (K filters, kh × 1), [``name.bn``], ``name.h``
    (N filters, 1 × kw); a rank above min(C·kh, N·kw) or a layer without a spatial kernel is refused
    naming the setting."""
    if not settings.ranks:
        raise SpecError("settings give no `ranks`; nothing would be decomposed", field="settings.ranks")
    shapes = low_rank.layer_shapes(flat)
    for name, rank in settings.ranks.items():
        field = f"settings.ranks.{name}"
        layer = low_rank.named_layer(shapes, name, field, ("conv2d",))
        (kh, kw), (sh, sw), (dh, dw) = layer.kernel, layer.stride, layer.dilation
        if isinstance(layer.padding, str):
            raise SpecError(f"{name!r} pads {layer.padding!r}; the split needs numeric padding", field=field)
        if kh == 1 and kw == 1:
            raise SpecError(
                f"{name!r} is a 1×1 convolution: there are no vertical and horizontal parts", field=field
            )
        limit = min(layer.in_channels * kh, layer.out_channels * kw)
        what = f"{name}: min(C·kh, N·kw) = min({layer.in_channels}·{kh}, {layer.out_channels}·{kw})"
        low_rank.check_rank(rank, limit, what, field)
        ph, pw = layer.padding
        chain: list[tuple[str, str, dict[str, Any]]] = [
            ("v", "conv2d", {"out_channels": rank, "kernel_size": [kh, 1], "stride": [sh, 1],
                             "padding": [ph, 0], "dilation": [dh, 1], "bias": False}),
        ]  # fmt: skip
        if settings.batch_norm:
            chain.append(("bn", "batchnorm2d", {}))
        chain.append(
            ("h", "conv2d", {"out_channels": layer.out_channels, "kernel_size": [1, kw], "stride": [1, sw],
                             "padding": [0, pw], "dilation": [1, dw], "bias": layer.bias}),
        )  # fmt: skip
        flat = low_rank.split_node(flat, name, chain)
    return flat


def chains(settings: VHSettings) -> dict[str, tuple[str, ...]]:
    """The nodes each decomposed layer became, in order."""
    middle = ("bn",) if settings.batch_norm else ()
    return {name: tuple(f"{name}.{part}" for part in ("v", *middle, "h")) for name in settings.ranks}


def vh_measure(flat: FlatGraph, settings: VHSettings) -> dict[str, float]:
    """The whole model's compression ratio (parameters) and theoretical speed-up (multiply-adds)
    against the undecomposed model, from the ranks alone."""
    return low_rank.reductions(flat, low_rank.replaced(flat, chains(settings)))


def vh_factors(weight: torch.Tensor, rank: int) -> tuple[Any, Any]:
    """(V as K × C × kh × 1, H as N × K × 1 × kw): the rank-``rank`` optimum of the kernel
    (N × C × kh × kw), from the truncated SVD of W̃[(c, i), (n, j)] = W[n, c, i, j], in float64."""
    import torch

    n, c, kh, kw = weight.shape
    matrix = weight.detach().double().cpu().permute(1, 2, 0, 3).reshape(c * kh, n * kw)
    u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    root = s[:rank].sqrt()
    vertical = (u[:, :rank] * root).T.reshape(rank, c, kh, 1)
    horizontal = (vh[:rank].T * root).reshape(n, kw, rank).permute(0, 2, 1).reshape(n, rank, 1, kw)
    return vertical, horizontal


def vh_apply(model: Any, settings: VHSettings, context: MethodContext) -> Any:
    """Write each decomposed layer's factors, from its weights before the rewrite (a normalisation
    between them set to the identity); then fine-tune where data is given."""
    import torch

    for name, rank in settings.ranks.items():
        weight, bias = low_rank.original_weight(context, name)
        vertical, horizontal = vh_factors(weight, rank)
        low_rank.set_weights(model, f"{name}.v", vertical)
        low_rank.set_weights(model, f"{name}.h", horizontal, bias)
        if settings.batch_norm:
            norm = model.get_submodule(f"{name}.bn")
            with torch.no_grad():
                norm.running_mean.zero_()
                norm.running_var.fill_(1.0 - norm.eps)
                norm.weight.fill_(1.0)
                norm.bias.zero_()
    low_rank.fine_tune(model, settings, context)
    return model


VH_DECOMPOSE = Method(
    name="vh_decompose",
    settings=VHSettings,
    description="Each named d×d convolution replaced by K vertical d×1 filters and horizontal 1×d ones "
    "(optionally with batch normalisation between), the exact global optimum by the SVD of the "
    "rearranged kernel (Tai et al. 2016, Theorem 1); trainable from scratch in that form.",
    rewrite=vh_rewrite,
    apply=vh_apply,
    measure=vh_measure,
)


# -- the small-scale reproduction (`papers check tai2016 --run`) ------------------------------------

PROXY_VARIANT = "tai2016-lenet5_caffe"
PROXY_EPOCHS = 30
"""Passes over the 4,000 training digits before decomposing: the registry's choice (as Han et al.'s)."""


def decompose(model: Any, flat: FlatGraph, settings: VHSettings) -> tuple[Any, FlatGraph]:
    """``model`` (built from ``flat``, with weights) split as ``settings`` say, and its graph."""
    return low_rank.decompose(model, flat, settings, vh_rewrite, vh_apply)


def vh_proxy(
    variant_id: str = PROXY_VARIANT,
    *,
    epochs: int = PROXY_EPOCHS,
    fine_tune_epochs: int | None = None,
    limit: int | None = None,
) -> dict[str, Any]:
    """The variant's base trained on builtin:mnist5k, its convolutions split at the variant's K,
    fine-tuned (:func:`low_rank.proxy_run`)."""
    return low_rank.proxy_run(
        variant_id, VH_DECOMPOSE, epochs=epochs, fine_tune_epochs=fine_tune_epochs, limit=limit
    )


def proxy_checks() -> list:
    """The paper's proxy check (its plugin's ``papers_checks``)."""
    return [
        low_rank.proxy_check(
            PROXY_VARIANT,
            vh_proxy,
            lambda settings: f"K {settings.ranks}",
            f"Caffe's LeNet trained on 5,000 of MNIST's digits (4,000 training, 1,000 test images) for "
            f"{PROXY_EPOCHS} epochs with Caffe's SGD settings, not a CIFAR-10 or ImageNet network; both "
            "5×5 convolutions split into vertical and horizontal filters at the variant's K by the closed "
            "form, then the whole network fine-tuned for the variant's epochs at its rate; passes when "
            "the fine-tuned model's top-1 is within 1 point of the undecomposed model's",
        )
    ]
