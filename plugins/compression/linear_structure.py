"""Denton, Zaremba, Bruna, LeCun and Fergus, "Exploiting Linear Structure Within Convolutional Networks
for Efficient Evaluation" (NIPS 2014, arXiv 1404.0736): the monochromatic approximation of a first
layer and the biclustered SVD approximation of higher ones.

``monochromatic``. Each first-layer filter W_f (C colours × d × d) is nearly rank one in colour: W_f ≈
c_f w_fᵀ, one colour vector c_f (its top left singular vector) and one spatial filter. The colour
vectors are clustered into C′ groups; each group gets one colour transform (its centroid,
normalised), the input is projected onto those C′ colour channels by a 1×1 convolution, and each
filter of a group becomes a single-channel d×d filter over its group's channel only (the projection
of W_f on the centroid, its least-squares spatial filter): a grouped convolution with C′ groups. The
registry's groups are of equal size (a grouped convolution needs them so: k-means centroids, then each
filter assigned under that constraint by a linear assignment); the paper's need not be.

``bicluster_svd``. A higher layer W (F outputs × C inputs × d × d) has its inputs clustered into G
groups and its outputs into H; each of the G·H blocks W_S (F/H × C/G × d × d), matricised as
(C/G) × (d·d·F/H), is replaced by its rank-K truncated SVD: a 1×1 projection of the group's C/G
input maps onto K, then a d×d convolution from those K maps (over every input group) to the block's
outputs. As layers: the inputs gathered into their groups, a 1×1 convolution with G groups
(C → G·H·K), its maps reordered by output group, a d×d convolution with H groups (G·H·K → F), and the
outputs put back in their order. This is the paper's SVD approximation of the biclusters; its other
one, a sum of rank-one tensors per bicluster, is not implemented here. Input channels are clustered
on their slices W[:, c], outputs on their filters W[f].

Both are static rewrites with the cluster counts and ranks in the settings; the orders the clustering
chooses are weights of ``channel_permute`` layers (a gather of the channels, no multiply-adds) that
``apply`` sets. Hand-written: the balanced assignment and the factor layout (scikit-learn's k-means,
scipy's linear assignment and torch's SVD do the numerical work).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, NamedTuple

from pydantic import Field

from papers.errors import SpecError
from papers.graph import FlatGraph
from papers.methods import Method, MethodContext, Settings
from papers_plugins.compression import low_rank

if TYPE_CHECKING:
    import torch

Count = Annotated[int, Field(ge=1)]


class FineTune(Settings):
    """Fine-tuning after the approximation, where data is given."""

    fine_tune_epochs: int = Field(
        0, ge=0, le=1000, description="Epochs of fine-tuning the whole network after, where data is given."
    )
    fine_tune_lr: float = Field(1.0e-3, gt=0, description="SGD rate while fine-tuning.")
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5.0e-4, ge=0)
    batch_size: int = Field(64, ge=1, le=65536)


class MonochromaticSettings(FineTune):
    """The settings of ``monochromatic``."""

    layer: str = Field(description="The first layer's node name.")
    clusters: Count = Field(description="C′, the number of colour transforms (equal groups of filters).")


class Bicluster(NamedTuple):
    """One layer's biclustering: the settings' ``[G, H, K]``."""

    input_clusters: int
    output_clusters: int
    rank: int


class BiclusterSettings(FineTune):
    """The settings of ``bicluster_svd``."""

    layers: dict[str, Annotated[list[Count], Field(min_length=3, max_length=3)]] = Field(
        description="Each approximated convolution's [G, H, K] by node name: G groups of input channels "
        "(C/G each), H groups of output channels (F/H each), K the rank of each bicluster's SVD."
    )

    def cuts(self) -> dict[str, Bicluster]:
        """Each layer's G, H and K, by name."""
        return {name: Bicluster(*values) for name, values in self.layers.items()}


def _conv_args(layer: low_rank.LayerShape, field: str) -> dict[str, Any]:
    if isinstance(layer.padding, str):
        raise SpecError(
            f"{layer.name!r} pads {layer.padding!r}; the rewrite needs numeric padding", field=field
        )
    return {
        "kernel_size": list(layer.kernel),
        "stride": list(layer.stride),
        "padding": list(layer.padding),
        "dilation": list(layer.dilation),
    }


def _divides(count: int, total: int, what: str, field: str) -> None:
    if count > total or total % count:
        raise SpecError(f"{count} {what} do not divide the layer's {total} into equal groups", field=field)


# -- the monochromatic approximation ---------------------------------------------------------------


def monochromatic_rewrite(flat: FlatGraph, settings: MonochromaticSettings) -> FlatGraph:
    """The first layer as ``.colour`` (1×1, C → C′), ``.mono`` (d×d, C′ groups, → F), ``.order``."""
    field = "settings"
    layer = low_rank.named_layer(low_rank.layer_shapes(flat), settings.layer, f"{field}.layer", ("conv2d",))
    _divides(settings.clusters, layer.out_channels, "clusters", f"{field}.clusters")
    args = _conv_args(layer, f"{field}.layer")
    return low_rank.split_node(
        flat,
        settings.layer,
        [
            ("colour", "conv2d", {"out_channels": settings.clusters, "kernel_size": 1, "bias": False}),
            ("mono", "conv2d", {**args, "out_channels": layer.out_channels, "groups": settings.clusters,
                                "bias": layer.bias}),
            ("order", "channel_permute", {}),
        ],
    )  # fmt: skip


def monochromatic_measure(flat: FlatGraph, settings: MonochromaticSettings) -> dict[str, float]:
    """The compression ratio and theoretical speed-up of the whole model, from C′ alone."""
    chain = tuple(f"{settings.layer}.{part}" for part in ("colour", "mono", "order"))
    return low_rank.reductions(flat, low_rank.replaced(flat, {settings.layer: chain}))


def colour_vectors(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each filter's top colour singular vector (F × C, unit, signed so its sum is not negative) and its
    relative rank-one error ‖W_f − c_f c_fᵀ W_f‖ / ‖W_f‖ (F)."""
    import torch

    filters = weight.detach().double().reshape(weight.shape[0], weight.shape[1], -1)  # F × C × dd
    u, s, _ = torch.linalg.svd(filters, full_matrices=False)
    colours = u[:, :, 0]
    colours = colours * torch.where(colours.sum(1, keepdim=True) < 0, -1.0, 1.0)
    tail = (s[:, 1:] ** 2).sum(1).sqrt() / (s**2).sum(1).sqrt().clamp_min(1e-300)
    return colours, tail


def balanced_clusters(points: Any, clusters: int, *, seed: int = 0) -> Any:
    """Each point's cluster, every cluster of len(points) / clusters points: k-means centroids
    (scikit-learn), then the assignment of points to equal-sized slots of them nearest in total
    (scipy's linear assignment), a few rounds of recentring."""
    import numpy as np
    from scipy.optimize import linear_sum_assignment
    from sklearn.cluster import KMeans

    points = np.asarray(points, dtype=np.float64)
    size = len(points) // clusters
    if clusters == 1:
        return np.zeros(len(points), dtype=np.int64)
    if clusters == len(points):
        return np.arange(len(points))
    centroids = KMeans(n_clusters=clusters, n_init=10, random_state=seed).fit(points).cluster_centers_
    labels = np.zeros(len(points), dtype=np.int64)
    for _ in range(5):
        distances = ((points[:, None, :] - centroids[None, :, :]) ** 2).sum(-1)
        rows, columns = linear_sum_assignment(np.repeat(distances, size, axis=1))
        labels[rows] = columns // size
        centroids = np.stack([points[labels == j].mean(0) for j in range(clusters)])
    return labels


def _grouped_order(labels: Any, groups: int) -> tuple[Any, Any]:
    """(``slots``: for each position of the grouped layout, the original index it holds, group-major;
    ``order``: for each original index, its position), both lists of ints."""
    slots = [i for group in range(groups) for i in range(len(labels)) if labels[i] == group]
    order = [0] * len(slots)
    for position, original in enumerate(slots):
        order[original] = position
    return slots, order


def monochromatic_apply(model: Any, settings: MonochromaticSettings, context: MethodContext) -> Any:
    """The colour transforms, single-channel filters and output order from the layer's weights."""
    import torch

    weight, bias = low_rank.original_weight(context, settings.layer)
    colours, _ = colour_vectors(weight)
    labels = balanced_clusters(colours.numpy(), settings.clusters)
    transforms = torch.stack(
        [colours[torch.as_tensor(labels == j)].mean(0) for j in range(settings.clusters)]
    )
    transforms = transforms / transforms.norm(dim=1, keepdim=True).clamp_min(1e-300)
    slots, order = _grouped_order(labels, settings.clusters)
    filters = torch.stack(
        [torch.einsum("c,cij->ij", transforms[labels[f]], weight[f]) for f in slots]
    ).unsqueeze(1)  # F × 1 × d × d, in the grouped layout
    name = settings.layer
    low_rank.set_weights(model, f"{name}.colour", transforms[:, :, None, None])
    low_rank.set_weights(model, f"{name}.mono", filters, None if bias is None else bias[slots])
    _set_order(model, f"{name}.order", order)
    low_rank.fine_tune(model, settings, context)
    return model


def _set_order(model: Any, name: str, order: list[int]) -> None:
    import torch

    with torch.no_grad():
        model.get_submodule(name).order.copy_(torch.as_tensor(order))


# -- biclustering with SVD -------------------------------------------------------------------------


def bicluster_rewrite(flat: FlatGraph, settings: BiclusterSettings) -> FlatGraph:
    """Each named layer as ``.gather``, ``.project`` (1×1, G groups, C → G·H·K), ``.shuffle``,
    ``.spatial`` (d×d, H groups, → F), ``.order``; G, H that do not divide the channels and K above
    min(C/G, d·d·F/H) are refused naming the setting."""
    if not settings.layers:
        raise SpecError("settings give no `layers`; nothing would be approximated", field="settings.layers")
    shapes = low_rank.layer_shapes(flat)
    for name, cut in settings.cuts().items():
        field = f"settings.layers.{name}"
        layer = low_rank.named_layer(shapes, name, field, ("conv2d",))
        _divides(cut.input_clusters, layer.in_channels, "input clusters (G)", f"{field}[0]")
        _divides(cut.output_clusters, layer.out_channels, "output clusters (H)", f"{field}[1]")
        area = layer.kernel[0] * layer.kernel[1]
        inputs, outputs = layer.in_channels // cut.input_clusters, layer.out_channels // cut.output_clusters
        limit = min(inputs, area * outputs)
        what = f"{name}: min(C/G, d·d·F/H) = min({inputs}, {area}·{outputs})"
        low_rank.check_rank(cut.rank, limit, what, f"{field}[2]")
        middle = cut.input_clusters * cut.output_clusters * cut.rank
        flat = low_rank.split_node(
            flat,
            name,
            [
                ("gather", "channel_permute", {}),
                ("project", "conv2d", {"out_channels": middle, "kernel_size": 1, "groups": cut.input_clusters,
                                       "bias": False}),
                ("shuffle", "channel_permute", {}),
                ("spatial", "conv2d", {**_conv_args(layer, field), "out_channels": layer.out_channels,
                                       "groups": cut.output_clusters, "bias": layer.bias}),
                ("order", "channel_permute", {}),
            ],
        )  # fmt: skip
    return flat


BICLUSTER_PARTS = ("gather", "project", "shuffle", "spatial", "order")


def bicluster_measure(flat: FlatGraph, settings: BiclusterSettings) -> dict[str, float]:
    """The compression ratio and theoretical speed-up of the whole model, from G, H and K alone."""
    chains = {name: tuple(f"{name}.{part}" for part in BICLUSTER_PARTS) for name in settings.layers}
    return low_rank.reductions(flat, low_rank.replaced(flat, chains))


def bicluster_factors(weight: torch.Tensor, cut: Bicluster) -> dict[str, Any]:
    """The five layers' weights for ``weight`` (F × C × d × d): the input gather, the grouped projection,
    the shuffle (by input group, output group, k → by output group, input group, k), the grouped spatial
    filters and the output order; float64."""
    import torch

    weight = weight.detach().double().cpu()
    f_total, c_total, kh, kw = weight.shape
    g_count, h_count, rank = cut.input_clusters, cut.output_clusters, cut.rank
    c_size, f_size = c_total // g_count, f_total // h_count
    in_labels = balanced_clusters(weight.transpose(0, 1).reshape(c_total, -1).numpy(), g_count)
    out_labels = balanced_clusters(weight.reshape(f_total, -1).numpy(), h_count)
    in_slots, _ = _grouped_order(in_labels, g_count)
    out_slots, out_order = _grouped_order(out_labels, h_count)
    project = torch.zeros(g_count * h_count * rank, c_size, 1, 1, dtype=torch.float64)
    spatial = torch.zeros(f_total, g_count * rank, kh, kw, dtype=torch.float64)
    for g in range(g_count):
        inputs = in_slots[g * c_size : (g + 1) * c_size]
        for h in range(h_count):
            outputs = out_slots[h * f_size : (h + 1) * f_size]
            block = weight[outputs][:, inputs]  # F/H × C/G × d × d
            matrix = block.permute(1, 0, 2, 3).reshape(c_size, -1)  # (C/G) × (F/H · d · d)
            u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
            start = (g * h_count + h) * rank  # the projection's layout: by input group, output group, k
            project[start : start + rank, :, 0, 0] = u[:, :rank].T
            factor = (s[:rank, None] * vh[:rank]).reshape(rank, f_size, kh, kw).transpose(0, 1)
            spatial[h * f_size : (h + 1) * f_size, g * rank : (g + 1) * rank] = factor
    shuffle = [
        (g * h_count + h) * rank + k for h in range(h_count) for g in range(g_count) for k in range(rank)
    ]
    return {
        "gather": in_slots,
        "project": project,
        "shuffle": shuffle,
        "spatial": spatial,
        "out_slots": out_slots,
        "order": out_order,
    }


def bicluster_apply(model: Any, settings: BiclusterSettings, context: MethodContext) -> Any:
    """Each approximated layer's clusters, factors and orders from its weights before the rewrite."""
    for name, cut in settings.cuts().items():
        weight, bias = low_rank.original_weight(context, name)
        parts = bicluster_factors(weight, cut)
        _set_order(model, f"{name}.gather", parts["gather"])
        low_rank.set_weights(model, f"{name}.project", parts["project"])
        _set_order(model, f"{name}.shuffle", parts["shuffle"])
        spatial_bias = None if bias is None else bias[parts["out_slots"]]
        low_rank.set_weights(model, f"{name}.spatial", parts["spatial"], spatial_bias)
        _set_order(model, f"{name}.order", parts["order"])
    low_rank.fine_tune(model, settings, context)
    return model


MONOCHROMATIC = Method(
    name="monochromatic",
    settings=MonochromaticSettings,
    description="A first layer's filters made rank one in colour and grouped by colour: a 1×1 projection "
    "onto C′ colour transforms, then each filter over its group's one channel (Denton et al. 2014).",
    rewrite=monochromatic_rewrite,
    apply=monochromatic_apply,
    measure=monochromatic_measure,
)

BICLUSTER_SVD = Method(
    name="bicluster_svd",
    settings=BiclusterSettings,
    description="A layer's inputs and outputs clustered into G and H groups, each bicluster replaced by "
    "its rank-K SVD: a grouped 1×1 projection, then a grouped d×d convolution (Denton et al. 2014).",
    rewrite=bicluster_rewrite,
    apply=bicluster_apply,
    measure=bicluster_measure,
)


# -- the small-scale reproduction (`papers check denton2014 --run`) ----------------------------------

PROXY_VARIANT = "denton2014-lenet5_caffe"
PROXY_EPOCHS = 30
"""Passes over the 4,000 training digits before approximating: the registry's choice (as Han et al.'s)."""


def bicluster_proxy(
    variant_id: str = PROXY_VARIANT,
    *,
    epochs: int = PROXY_EPOCHS,
    fine_tune_epochs: int | None = None,
    limit: int | None = None,
) -> dict[str, Any]:
    """The variant's base trained on builtin:mnist5k, its layers approximated by biclustered SVDs at the
    variant's G, H and K, fine-tuned (:func:`low_rank.proxy_run`)."""
    return low_rank.proxy_run(
        variant_id, BICLUSTER_SVD, epochs=epochs, fine_tune_epochs=fine_tune_epochs, limit=limit
    )


def proxy_checks() -> list:
    """The paper's proxy check (its plugin's ``papers_checks``)."""
    return [
        low_rank.proxy_check(
            PROXY_VARIANT,
            bicluster_proxy,
            lambda settings: ", ".join(
                f"{name} G={cut.input_clusters} H={cut.output_clusters} K={cut.rank}"
                for name, cut in settings.cuts().items()
            ),
            f"Caffe's LeNet trained on 5,000 of MNIST's digits (4,000 training, 1,000 test images) for "
            f"{PROXY_EPOCHS} epochs with Caffe's SGD settings, not an ImageNet network (its one grey "
            "channel leaves the monochromatic approximation nothing to do); conv2's inputs and outputs "
            "biclustered and each bicluster replaced by its truncated SVD at the variant's settings, then "
            "the whole network fine-tuned for the variant's epochs at its rate; passes when the fine-tuned "
            "model's top-1 is within 1 point of the unapproximated model's",
        )
    ]
