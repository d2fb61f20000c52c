"""Zhang, Zou, He and Sun, "Accelerating Very Deep Convolutional Networks for Classification and
Detection" (TPAMI 2016, arXiv 1505.06798): the journal version of the CVPR 2015 channel decomposition
(:mod:`papers_plugins.compression.channel_decomposition`), combined with Jaderberg et al.'s spatial
decomposition into a "3D" one.

``channel_decompose_3d`` replaces a k×k convolution of d filters over c channels by three layers: d″
vertical k×1 filters over the c channels, d′ horizontal 1×k filters over those d″ maps, and the
channel decomposition's 1×1 layer from d′ back to d. The multiply-adds per position fall from
d·c·k² to about d″·c·k + d′·d″·k + d·d′. Both ranks are settings (``ranks`` d′ as for
``channel_decompose``, ``spatial_ranks`` d″), so the rewrite is static: it is the channel rewrite
followed by a vertical/horizontal split of each ``.reduce`` layer (``.reduce.v``, ``.reduce.h``).

The weights, layer by layer: the spatial pair first, as the exact optimum of the filter
reconstruction of Jaderberg et al.'s scheme 2 at rank d″ (the truncated SVD of the rearranged kernel,
:func:`papers_plugins.compression.vh_decomposition.vh_factors`); then the channel decomposition's
M = P Qᵀ fitted, as in the CVPR paper, from responses sampled on data, with ŷ the spatial pair's
responses (on the approximated model's input where asymmetric, after the ReLU where nonlinear), so the
fit also absorbs the spatial pair's error; the horizontal layer becomes Qᵀ H and the 1×1 layer P. That
order (spatial, then channel) is the registry's: the paper's own order and how it fits the spatial
part could not be read through the registry's search (only its abstract could), and either order gives
the same three layers.

Hand-written: the composition of the two existing rewrites and fits (no library knows the registry's
graph); the SVD and the regression are torch's, through the modules named above.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field

from papers.errors import SpecError
from papers.graph import FlatGraph, source
from papers.methods import Method, MethodContext
from papers_plugins.compression import low_rank
from papers_plugins.compression.channel_decomposition import (
    ChannelSettings,
    channel_rewrite,
    data_images,
    energy_ranks,
    response_fit,
    training_images,
    write_channel_factors,
)
from papers_plugins.compression.vh_decomposition import VHSettings, vh_factors, vh_rewrite

if TYPE_CHECKING:
    import torch

Rank = Annotated[int, Field(ge=1)]


class Channel3DSettings(ChannelSettings):
    """The settings of ``channel_decompose_3d``: ``channel_decompose``'s and each layer's d″."""

    spatial_ranks: dict[str, Rank] = Field(
        description="A decomposed convolution's d″ (vertical k×1 filters), by node name; at most "
        "min(c·k, d′·k). A layer in `ranks` without one gets the channel decomposition alone."
    )


def _spatial_limit(flat: FlatGraph, settings: Channel3DSettings) -> None:
    """Refuse a d″ for a layer without a d′, a 1×1 or string-padded layer, or above min(c·kh, d′·kw)."""
    shapes = low_rank.layer_shapes(flat)
    for name, rank in settings.spatial_ranks.items():
        field = f"settings.spatial_ranks.{name}"
        if name not in settings.ranks:
            raise SpecError(
                f"{name!r} has a d″ but no d′ in `ranks`; the spatial split is of its d′ filters", field=field
            )
        layer = low_rank.named_layer(shapes, name, field, ("conv2d",))
        (kh, kw), reduced = layer.kernel, settings.ranks[name]
        if kh == 1 and kw == 1:
            raise SpecError(f"{name!r} is a 1×1 convolution: there is no spatial part to split", field=field)
        if isinstance(layer.padding, str):
            raise SpecError(f"{name!r} pads {layer.padding!r}; the split needs numeric padding", field=field)
        limit = min(layer.in_channels * kh, reduced * kw)
        what = f"{name}: min(c·kh, d′·kw) = min({layer.in_channels}·{kh}, {reduced}·{kw})"
        low_rank.check_rank(rank, limit, what, field)


def channel_3d_rewrite(flat: FlatGraph, settings: Channel3DSettings) -> FlatGraph:
    """Each named convolution as ``.reduce.v`` (d″, k×1), ``.reduce.h`` (d′, 1×k), ``.expand`` (1×1, d);
    one without a d″ as ``.reduce`` and ``.expand``."""
    _spatial_limit(flat, settings)
    flat = channel_rewrite(flat, settings)
    split = {f"{name}.reduce": rank for name, rank in settings.spatial_ranks.items()}
    return vh_rewrite(flat, VHSettings(ranks=split)) if split else flat


def chains(settings: Channel3DSettings) -> dict[str, tuple[str, ...]]:
    """The nodes each decomposed layer became, in order."""
    return {
        name: (
            (f"{name}.reduce.v", f"{name}.reduce.h")
            if name in settings.spatial_ranks
            else (f"{name}.reduce",)
        )
        + (f"{name}.expand",)
        for name in settings.ranks
    }


def channel_3d_measure(flat: FlatGraph, settings: Channel3DSettings) -> dict[str, float]:
    """The whole model's compression ratio and theoretical speed-up, from d′ and d″ alone."""
    return low_rank.reductions(flat, low_rank.replaced(flat, chains(settings)))


def _spatial_pair(layer: Any, vertical: torch.Tensor, horizontal: torch.Tensor, bias: Any) -> Any:
    """The k×1 then 1×k convolutions (``layer``'s stride, padding and dilation split between them) as
    a function of the layer's input: the responses the channel fit reads as ŷ."""
    import torch.nn.functional as F

    (sh, sw), (ph, pw), (dh, dw) = layer.stride, layer.padding, layer.dilation

    def responses(x: torch.Tensor) -> torch.Tensor:
        v = F.conv2d(x, vertical.to(x), stride=(sh, 1), padding=(ph, 0), dilation=(dh, 1))
        return F.conv2d(
            v,
            horizontal.to(x),
            None if bias is None else bias.to(x),
            stride=(1, sw),
            padding=(0, pw),
            dilation=(1, dw),
        )

    return responses


def channel_3d_apply(model: Any, settings: Channel3DSettings, context: MethodContext) -> Any:
    """Each layer's spatial pair at d″ from its weights, then M fitted from the pair's responses (or,
    without data, from the pair's kernel); a layer without a d″ as ``channel_decompose`` does it."""
    import torch

    images = data_images(context, settings.images)
    before = context.before
    assert before is not None
    for index, name in enumerate(settings.ranks):
        weight, bias = low_rank.original_weight(context, name)
        original = before.get_submodule(name)
        if name not in settings.spatial_ranks:
            fit = response_fit(
                model, settings, context, images, index, name, original, f"{name}.reduce", weight, bias
            )
            write_channel_factors(model, name, weight, bias, *fit)
            continue
        vertical, horizontal = vh_factors(weight, settings.spatial_ranks[name])
        pair = _spatial_pair(original, vertical, horizontal, bias)
        kernel = torch.einsum("kci,nkj->ncij", vertical[..., 0], horizontal[:, :, 0, :])
        p, q_t, offset = response_fit(
            model, settings, context, images, index, name, pair, f"{name}.reduce.v", kernel, bias
        )
        d, spatial, _, kw = horizontal.shape
        low_rank.set_weights(model, f"{name}.reduce.v", vertical)
        reduced = (q_t @ horizontal.reshape(d, -1)).reshape(q_t.shape[0], spatial, 1, kw)
        low_rank.set_weights(model, f"{name}.reduce.h", reduced, None if bias is None else q_t @ bias)
        low_rank.set_weights(model, f"{name}.expand", p[:, :, None, None], offset)
    low_rank.fine_tune(model, settings, context)
    return model


CHANNEL_DECOMPOSE_3D = Method(
    name="channel_decompose_3d",
    settings=Channel3DSettings,
    description="A k×k convolution of d filters as d″ vertical k×1 filters, d′ horizontal 1×k filters and "
    "a 1×1 convolution back to d: Jaderberg et al.'s spatial decomposition combined with the channel "
    "decomposition, M fitted from the spatial pair's sampled responses (asymmetric, nonlinear) (Zhang et "
    "al. 2016).",
    rewrite=channel_3d_rewrite,
    apply=channel_3d_apply,
    measure=channel_3d_measure,
)


# -- the ranks for a speed-up -------------------------------------------------------------------------


def spatial_ranks(flat: FlatGraph, ranks: dict[str, int], speedup: float) -> dict[str, int]:
    """Each layer's largest d″ whose spatial pair costs at most 1/``speedup`` of the k×k layer of d′
    filters it replaces (multiply-adds over the layer's map sizes), between 1 and min(c·kh, d′·kw)."""
    from papers.measure import measure_graph
    from papers.registry import get_registry

    shapes = low_rank.layer_shapes(flat)
    sizes = measure_graph("spatial", flat, get_registry().catalogue).node_shapes
    out = {}
    for name, reduced in ranks.items():
        layer = shapes[name]
        (kh, kw), c = layer.kernel, layer.in_channels
        _, _, height, width = sizes[name]
        input_width = sizes[source(flat.node(name).inputs[0])][3]
        budget = reduced * c * kh * kw * height * width / speedup
        per_rank = c * kh * height * input_width + reduced * kw * height * width
        out[name] = max(1, min(int(budget // per_rank), c * kh, reduced * kw))
    return out


# -- the small-scale reproduction (`papers check zhang2016 --run`) -----------------------------------

PROXY_VARIANT = "zhang2016-lenet5_caffe"
PROXY_EPOCHS = 30
"""Passes over the 4,000 training digits before decomposing: the registry's choice (as zhang2015's)."""
PROXY_SPEEDUP = 4.0
"""The convolutions' speed-up the proxy's ranks are chosen for: the paper's whole-model 4× for VGG-16,
here for LeNet's two convolutions, half of it (√4) in d′ and half in d″ (the registry's split)."""


def _3d_settings(model: Any, flat: FlatGraph, settings: Channel3DSettings) -> Channel3DSettings:
    from papers_plugins.compression.pruning import PROXY_DATA

    images = training_images(PROXY_DATA, tuple(next(iter(flat.inputs.values()))))
    step = math.sqrt(PROXY_SPEEDUP)
    ranks = energy_ranks(model, flat, images[: settings.images], list(settings.ranks), step)
    return settings.model_copy(update={"ranks": ranks, "spatial_ranks": spatial_ranks(flat, ranks, step)})


def channel_3d_proxy(
    variant_id: str = PROXY_VARIANT,
    *,
    epochs: int = PROXY_EPOCHS,
    fine_tune_epochs: int | None = None,
    limit: int | None = None,
) -> dict[str, Any]:
    """The variant's base trained on builtin:mnist5k, d′ by the energy criterion for √4× and d″ for
    another √4× in both convolutions, decomposed from sampled responses (asymmetric), fine-tuned
    (:func:`low_rank.proxy_run`)."""
    return low_rank.proxy_run(
        variant_id,
        CHANNEL_DECOMPOSE_3D,
        epochs=epochs,
        fine_tune_epochs=fine_tune_epochs,
        limit=limit,
        choose=_3d_settings,
    )


def proxy_checks() -> list:
    """The paper's proxy check (its plugin's ``papers_checks``)."""
    return [
        low_rank.proxy_check(
            PROXY_VARIANT,
            channel_3d_proxy,
            lambda settings: (
                f"d′ {settings.ranks}, d″ {settings.spatial_ranks} for {PROXY_SPEEDUP:g}× fewer "
                "conv multiply-adds"
            ),
            f"Caffe's LeNet trained on 5,000 of MNIST's digits (4,000 training, 1,000 test images) for "
            f"{PROXY_EPOCHS} epochs with Caffe's SGD settings, not VGG-16 on ImageNet; both convolutions "
            f"decomposed in 3D for {PROXY_SPEEDUP:g}× fewer multiply-adds in them: d′ by the paper's energy "
            f"criterion for {math.sqrt(PROXY_SPEEDUP):g}×, d″ the largest whose vertical and horizontal "
            f"pair costs 1/{math.sqrt(PROXY_SPEEDUP):g} of the d′ filters it replaces (the registry's "
            "split), the pair by the SVD of the rearranged kernel, then M from responses sampled on the "
            "training digits with the asymmetric reconstruction (Caffe's LeNet has no ReLU after its "
            "convolutions, so the linear one); then the whole network fine-tuned for the variant's "
            "epochs at its rate; passes when the fine-tuned model's top-1 is within 1 point of the "
            "undecomposed model's",
        )
    ]
