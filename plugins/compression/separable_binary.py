"""Lin, Xing, Zhao, Zhang, Srivastava, Tu and Gupta, "Binarized Convolutional Neural Networks with
Separable Filters for Efficient Hardware Acceleration" (CVPR 2017 workshops, arXiv 1707.04693): binary
filters approximated by rank-one separable binary filters.

:class:`~papers_plugins.compression.separable_binary_layers.SeparableBinaryConv2d` (the layer, apart so
that discovering the method imports no torch) is an ``nn.Conv2d`` (its latent float weights, arguments and
``state_dict``) whose forward pass uses, for each k × k filter, the binarized filter's best rank-one
approximation with both factors binarized: B = sign(W), B ≈ σ u vᵀ by SVD, and the filter used is
sign(u) sign(v)ᵀ, which a k-entry column and a k-entry row of ±1 store in 2k bits instead of k². Each
output channel's filters are scaled by the mean magnitude of its latent weights (XNOR-Net's α: the
registry's choice, so that a network without batch normalisation trains). Gradients pass to the latent
weights straight through the binarization and the SVD, clipped where |w| > 1 (the paper derives the
exact gradient through the SVD instead: a departure).

``separable_binarize`` rewrites the square convolutions it names (default: every one) into
``sf_binary_conv2d``; the network is then trained from scratch. Without weights, :func:`static_measure`
gives the bits per weight of the replaced filters, 2k / k², against 1 for plain binary filters and 32
for float ones. Hand-written: no library has separable binary filters.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from pydantic import Field

from papers.errors import SpecError
from papers.graph import FlatGraph
from papers.methods import Method, Settings

SF_OP = "sf_binary_conv2d"


class SFSettings(Settings):
    """The settings of ``separable_binarize``."""

    layers: list[str] = Field([], description="Square convolutions replaced, by node name (default: all).")


def rewrite(flat: FlatGraph, settings: SFSettings) -> FlatGraph:
    """Each chosen convolution becomes ``sf_binary_conv2d``, once each is a convolution with a square
    kernel."""
    convs = [node.name for node in flat.nodes if node.op == "conv2d" and node.module is None]
    for position, name in enumerate(settings.layers):
        if name not in convs:
            raise SpecError(
                f"settings.layers[{position}] names {name!r}, which is no convolution of the base model "
                f"(its convolutions: {', '.join(convs[:12]) or 'none'})"
            )
    chosen = list(settings.layers) or convs
    if not chosen:
        raise SpecError("the base model has no convolution to replace")
    nodes = []
    for node in flat.nodes:
        if node.name in chosen:
            kernel = node.args.get("kernel_size")
            if not isinstance(kernel, int) and (
                not isinstance(kernel, list | tuple) or len(set(kernel)) != 1
            ):
                raise SpecError(f"{node.name} has kernel {kernel!r}: separable filters need a square one")
            node = replace(node, op=SF_OP)
        nodes.append(node)
    return replace(flat, nodes=tuple(nodes))


def static_measure(flat: FlatGraph, settings: SFSettings) -> dict[str, float]:
    """Bits per weight of the replaced filters: 2k bits for each k × k filter."""
    from papers.build import build
    from papers.registry import get_registry
    from papers_plugins.compression.separable_binary_layers import SeparableBinaryConv2d

    model = build(flat, get_registry().catalogue, device="meta")
    weights = bits = 0
    for module in model.modules():
        if isinstance(module, SeparableBinaryConv2d):
            filters = module.out_channels * module.in_channels // module.groups
            side = module.kernel_size[0]
            weights += filters * side * side
            bits += filters * 2 * side
    return {"bits_per_weight": bits / weights} if weights else {}


SEPARABLE_BINARIZE = Method(
    name="separable_binarize",
    settings=SFSettings,
    description="Binarized convolutions with separable filters (Lin et al. 2017): each k × k binary filter "
    "replaced by the sign of its rank-one SVD factors, 2k bits instead of k², trained from scratch with "
    "straight-through gradients.",
    rewrite=rewrite,
    measure=static_measure,
)


# -- the small-scale reproduction (`papers check separable_filters --run`) ---------------------------

PROXY_VARIANT = "separable_filters-lenet5_caffe"
PROXY_DATA = "builtin:mnist5k"
PROXY_EPOCHS = 15
PROXY_MARGIN = 1.0


def sf_proxy(
    variant_id: str = PROXY_VARIANT,
    data: str = PROXY_DATA,
    *,
    epochs: int = PROXY_EPOCHS,
    limit: int | None = None,
) -> dict[str, Any]:
    """Train the float base and the separable-binary network alike (the base's recipe, ``epochs``
    passes, a fixed seed, one thread) and give both top-1 accuracies (percent, held-out split)."""
    import torch

    from papers_plugins.compression.pruning import pretrained, proxy_setup
    from papers_plugins.compression.separable_binary_layers import separable_binary

    setup = proxy_setup(variant_id, "separable_binarize", data, limit)
    with pretrained(setup, epochs) as (_, _, base):
        pass
    with pretrained(setup, epochs, build=variant_id) as (model, _, separable):
        check = model.get_submodule("conv2")
        rank = int(torch.linalg.matrix_rank(separable_binary(check.weight.detach())[0, 0]))
    return {"base": base, "separable": separable, "rank": rank}


def _proxy_runner(progress: bool) -> tuple[float, float]:
    measured = sf_proxy()
    if progress:
        import click

        click.echo(
            f"{PROXY_VARIANT}: top-1 {measured['base']:g}% with float convolutions, "
            f"{measured['separable']:g}% with separable binary filters",
            err=True,
        )
    return measured["separable"], measured["base"] - PROXY_MARGIN


def proxy_checks() -> list:
    """The paper's proxy check."""
    from papers_plugins.compression.pruning import mnist5k_check

    return [
        mnist5k_check(
            PROXY_VARIANT,
            _proxy_runner,
            "Caffe's LeNet-5 with both convolutions' filters binary and separable (the fully connected "
            f"layers and the activations float), trained from scratch on 5,000 of MNIST's digits for "
            f"{PROXY_EPOCHS} epochs with Caffe's SGD settings beside the float network trained alike; not "
            "the paper's binarized networks on MNIST, CIFAR-10 or SVHN nor its FPGA; passes within "
            f"{PROXY_MARGIN:g} point of the float network's top-1",
        )
    ]
