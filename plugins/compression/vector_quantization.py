"""Gong, Liu, Yang and Bourdev, "Compressing Deep Convolutional Networks using Vector Quantization"
(arXiv 1412.6115): k-means scalar quantization, product quantization and residual quantization of the
fully connected layers of a trained network.

``vector_quantize`` has a rewrite and an apply step. The rewrite turns each fully connected layer it
quantizes into the plugin's ``vq_linear`` (:class:`~papers_plugins.compression.vq_linear.VQLinear`),
which stores the layer as codebooks and indices, with the shapes the settings fix; the apply step
fills them from the layer's trained weights (``context.before``) with scikit-learn's ``KMeans``:

- ``kmeans``: every weight of the layer is one point, ``clusters`` centres (scalar quantization);
- ``product``: each output unit's row is cut into segments of ``segment`` consecutive inputs, and the
  rows' pieces in each segment are clustered on their own (one codebook per segment);
- ``residual``: the whole rows are clustered, then what the centres leave of each row, ``stages``
  times, each stage with its own codebook; the weight is the sum of the stages' centres.

Where a layer has fewer distinct points than ``clusters``, each distinct point is its own centre.
Rows are a layer's output units, as torch stores a linear layer's weight (``out × in``). Without
weights, :func:`static_measure` gives the network's compression ratio the settings imply: each
quantized layer's codebooks at 32 bits per value and its indices at ceil(log2 clusters) bits, every
other parameter (biases, convolutions) at 32 bits.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from papers.errors import SpecError
from papers.graph import FlatGraph
from papers.methods import Method, MethodContext, Settings

if TYPE_CHECKING:
    import numpy as np
    import torch

VQ_OP = "vq_linear"


class VQSettings(Settings):
    """The settings of ``vector_quantize``."""

    kind: Literal["kmeans", "product", "residual"] = Field(
        description="Scalar k-means of all the weights, product quantization of row segments, or residual "
        "quantization of whole rows in stages."
    )
    clusters: int = Field(
        ge=2, le=65536, description="Centres per codebook (k); each index takes ceil(log2 k) bits (1 to 16)."
    )
    segment: int = Field(1, ge=1, description="Product quantization: inputs per segment of a row.")
    stages: int = Field(1, ge=1, le=64, description="Residual quantization: stages.")
    layers: list[str] = Field(
        [], description="The fully connected layers quantized, by node name (default: every one)."
    )
    max_iter: int = Field(100, ge=1, le=10000, description="k-means iterations per codebook.")


def _chosen(flat: FlatGraph, settings: VQSettings) -> list[str]:
    linear = [node.name for node in flat.nodes if node.op == "linear" and node.module is None]
    return list(settings.layers) or linear


def _in_features(flat: FlatGraph, names: list[str]) -> dict[str, int]:
    """Each named linear layer's inputs (a build on the meta device)."""
    from papers.build import build
    from papers.registry import get_registry

    model = build(flat, get_registry().catalogue, device="meta")
    return {name: model.get_submodule(name).in_features for name in names}


def layout(kind: str, in_features: int, segment: int, stages: int) -> dict[str, int]:
    """``VQLinear``'s ``dim``, ``groups`` and ``stages`` for a layer of ``in_features`` inputs."""
    if kind == "kmeans":
        return {"dim": 1, "groups": 1, "stages": 1}
    if kind == "product":
        return {"dim": segment, "groups": in_features // segment, "stages": 1}
    return {"dim": in_features, "groups": 1, "stages": stages}


def rewrite(flat: FlatGraph, settings: VQSettings) -> FlatGraph:
    """Each quantized fully connected layer becomes ``vq_linear`` with its codebook shapes, once the
    settings agree with the kind and every named layer is a fully connected layer of the graph."""
    if settings.kind != "product" and settings.segment != 1:
        raise SpecError(f"settings.segment is {settings.segment}: segments are for kind: product")
    if settings.kind != "residual" and settings.stages != 1:
        raise SpecError(f"settings.stages is {settings.stages}: stages are for kind: residual")
    linear = {node.name for node in flat.nodes if node.op == "linear"}
    for position, name in enumerate(settings.layers):
        if name not in linear:
            known = ", ".join(sorted(linear)[:12]) or "none"
            raise SpecError(
                f"settings.layers[{position}] names {name!r}, which is no fully connected layer of the "
                f"base model (its layers: {known})"
            )
    chosen = _chosen(flat, settings)
    if not chosen:
        raise SpecError("the base model has no fully connected layer to quantize")
    inputs = _in_features(flat, chosen)
    for name in chosen:
        if settings.kind == "product" and inputs[name] % settings.segment:
            raise SpecError(
                f"settings.segment {settings.segment} does not divide {name}'s {inputs[name]} inputs"
            )
    nodes = []
    for node in flat.nodes:
        if node.name in chosen:
            shape = layout(settings.kind, inputs[node.name], settings.segment, settings.stages)
            args = {**node.args, "clusters": settings.clusters, **shape}
            node = replace(node, op=VQ_OP, args=args)
        nodes.append(node)
    return replace(flat, nodes=tuple(nodes))


# -- apply: k-means -------------------------------------------------------------------------------


def _kmeans(points: np.ndarray, clusters: int, max_iter: int) -> tuple[np.ndarray, np.ndarray]:
    """Centres (``clusters`` rows, zero beyond the distinct points) and each point's centre."""
    import numpy as np
    from sklearn.cluster import KMeans

    distinct, inverse = np.unique(points, axis=0, return_inverse=True)
    centres = np.zeros((clusters, points.shape[1]), dtype=np.float64)
    if len(distinct) <= clusters:
        centres[: len(distinct)] = distinct
        return centres, inverse.reshape(-1)
    kmeans = KMeans(n_clusters=clusters, n_init=1, max_iter=max_iter, random_state=0).fit(points)
    centres[:] = kmeans.cluster_centers_
    return centres, kmeans.labels_


def quantize_matrix(weight: torch.Tensor, settings: VQSettings) -> tuple[torch.Tensor, torch.Tensor]:
    """``weight`` (out × in) as codebooks (stages × groups × clusters × dim) and indices (stages × out ×
    segments), as :class:`VQLinear` holds them."""
    import numpy as np
    import torch

    matrix = weight.detach().cpu().double().numpy()
    out, inputs = matrix.shape
    shape = layout(settings.kind, inputs, settings.segment, settings.stages)
    dim, groups, stages = shape["dim"], shape["groups"], shape["stages"]
    segments = inputs // dim
    books = np.zeros((stages, groups, settings.clusters, dim))
    codes = np.zeros((stages, out, segments), dtype=np.int64)
    k = settings.clusters
    if settings.kind == "kmeans":
        books[0, 0], labels = _kmeans(matrix.reshape(-1, 1), k, settings.max_iter)
        codes[0] = labels.reshape(out, segments)
    elif settings.kind == "product":
        for j in range(segments):
            piece = matrix[:, j * dim : (j + 1) * dim]
            books[0, j], codes[0, :, j] = _kmeans(piece, k, settings.max_iter)
    else:
        residual = matrix.copy()
        for stage in range(stages):
            books[stage, 0], labels = _kmeans(residual, k, settings.max_iter)
            codes[stage, :, 0] = labels
            residual = residual - books[stage, 0][labels]
    return torch.from_numpy(books), torch.from_numpy(codes)


def vector_quantize(model: Any, settings: VQSettings, context: MethodContext) -> Any:
    """Fill each ``vq_linear`` layer's codebooks and indices from the trained layer it replaced."""
    import torch

    assert context.before is not None, "the rewrite gives the model before it"
    with torch.no_grad():
        for node in context.flat.nodes:
            if node.op != VQ_OP:
                continue
            layer, trained = model.get_submodule(node.name), context.before.get_submodule(node.name)
            books, codes = quantize_matrix(trained.weight, settings)
            layer.codebook.copy_(books.to(layer.codebook.dtype))
            layer.set_indices(codes)
            if layer.bias is not None and trained.bias is not None:
                layer.bias.copy_(trained.bias)
    return model


# -- static: what the settings store ----------------------------------------------------------------


def layer_bits(out: int, inputs: int, settings: VQSettings) -> int:
    """Bits of one quantized weight matrix (out × in): codebooks at 32 bits per value, indices at
    ceil(log2 clusters) bits (as ``vq_linear`` packs them)."""
    shape = layout(settings.kind, inputs, settings.segment, settings.stages)
    book = shape["stages"] * shape["groups"] * settings.clusters * shape["dim"]
    indices = shape["stages"] * out * (inputs // shape["dim"])
    return 32 * book + math.ceil(math.log2(settings.clusters)) * indices


def compression_ratio(flat: FlatGraph, weight_bits: Any) -> dict[str, float]:
    """The graph's compression ratio, built on the meta device: for each layer ``weight_bits`` gives
    (bits of its 32-bit weight, bits as stored), its bias at 32 bits; or None: all its parameters at 32."""
    from papers.build import build
    from papers.registry import get_registry

    model = build(flat, get_registry().catalogue, device="meta")
    before = after = 0
    for module in model.modules():
        bits = weight_bits(module)
        if bits is not None:
            before += bits[0]
            after += bits[1]
            own = [module.bias] if module.bias is not None else []
        else:
            own = list(module.parameters(recurse=False))
        for parameter in own:
            before += 32 * parameter.numel()
            after += 32 * parameter.numel()
    return {"compression_ratio": before / after} if after else {}


def static_measure(flat: FlatGraph, settings: VQSettings) -> dict[str, float]:
    """The network's compression ratio from the settings: 32-bit parameters before, after each quantized
    layer's weight stored as :func:`layer_bits` and everything else at 32 bits."""

    def weight_bits(module: Any) -> tuple[int, int] | None:
        if type(module).__name__ != "VQLinear":
            return None
        out, inputs = module.out_features, module.in_features
        return 32 * out * inputs, layer_bits(out, inputs, settings)

    return compression_ratio(flat, weight_bits)


VECTOR_QUANTIZE = Method(
    name="vector_quantize",
    settings=VQSettings,
    description="Vector quantization of the fully connected layers (Gong et al. 2014): k-means of the "
    "weights, product quantization of row segments or residual quantization of rows, with "
    "scikit-learn's k-means; each layer stored as its codebooks and indices.",
    rewrite=rewrite,
    apply=vector_quantize,
    measure=static_measure,
)


# -- the small-scale reproduction (`papers check gong2014 --run`) ------------------------------------

PROXY_DATA = "builtin:mnist5k"
PROXY_EPOCHS = 20
"""Passes over the 4,000 training digits before quantizing: the registry's choice, not the paper's."""
PROXY_MARGIN = 1.0
"""The abstract's "about 1% loss", as a bar on top-1."""
PROXY_VARIANTS = ("gong2014-lenet300_100-kmeans", "gong2014-lenet300_100-pq", "gong2014-lenet300_100-rq")


def vq_proxy(
    variant_id: str,
    data: str = PROXY_DATA,
    *,
    epochs: int = PROXY_EPOCHS,
    limit: int | None = None,
    latency_runs: int = 3,
) -> dict[str, Any]:
    """Train method variant ``variant_id``'s base on ``data`` (its recipe's SGD settings, ``epochs``
    passes, a fixed seed, one thread), then run ``papers compress`` on it: quantized, written as
    codebooks and indices, read back. Returns the report's top-1 before and after (the model decoded
    from the file), its bytes and compression ratio."""
    from papers_plugins.compression.proxy_compress import compress_pretrained

    report = compress_pretrained(
        variant_id, "vector_quantize", data, epochs=epochs, limit=limit, latency_runs=latency_runs
    )
    keys = ("metric_before", "metric_after", "bytes_before", "bytes_after", "compression_ratio")
    return {key: report[key] for key in keys}


def _proxy_runner(variant_id: str) -> Any:
    def run(progress: bool) -> tuple[float, float]:
        measured = vq_proxy(variant_id)
        if progress:
            import click

            click.echo(
                f"{variant_id}: top-1 {measured['metric_before']:g}% → {measured['metric_after']:g}%; "
                f"{measured['bytes_before']:,} → {measured['bytes_after']:,} bytes on disk "
                f"({measured['compression_ratio']:g}×)",
                err=True,
            )
        return measured["metric_after"], measured["metric_before"] - PROXY_MARGIN

    return run


def proxy_checks() -> list:
    """The paper's proxy checks (its plugin's ``papers_checks``)."""
    from papers_plugins.compression.pruning import mnist5k_check

    return [
        mnist5k_check(
            variant_id,
            _proxy_runner(variant_id),
            "LeNet-300-100 trained on 5,000 of MNIST's digits (4,000 training, 1,000 test images) for "
            f"{PROXY_EPOCHS} epochs with Caffe's SGD settings, not the paper's ImageNet network; then "
            "`papers compress`: its fully connected layers quantized as the variant's settings say "
            "(scikit-learn's k-means), written as codebooks and indices, no retraining; passes when "
            f"the top-1 of the model decoded from the file is within {PROXY_MARGIN:g} point of the "
            "float model's (the abstract's 'about 1% loss')",
        )
        for variant_id in PROXY_VARIANTS
    ]
