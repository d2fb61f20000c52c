"""Han, Mao and Dally, "Deep Compression: Compressing Deep Neural Networks with Pruning, Trained
Quantization and Huffman Coding" (ICLR 2016, arXiv 1510.00149).

The pipeline is three composable pieces. Pruning is Han et al. (2015)'s ``magnitude_prune``, named in
the spec (:mod:`papers_plugins.compression.pruning`). Trained quantization is ``kmeans_quantize``,
here: per layer, the kept (non-zero) weights are clustered into at most ``2**bits`` shared values by
scikit-learn's k-means from centroids spaced linearly between the layer's smallest and largest weight
(Section 3.2: linear initialisation works best); with data, the centroids are then fine-tuned, each
moved by the sum of the gradients of the weights that share it (Section 3.3, eq. 3), pruned weights
staying zero. Huffman coding (Section 4) is the container's ``huffman`` encoding
(:mod:`papers.compression`): the quantized indices and the relative sparse indices Huffman-coded
with dahuffman, chosen for a tensor wherever it takes fewer bytes, so the file ``papers compress``
writes is the encoded model itself and decodes back to the same weights.

Hand-written: the centroid fine-tuning loop (eq. 3 is one ``index_add_`` of the weights' gradients
per layer; no maintained library trains shared weights that way).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field

from papers.errors import SpecError
from papers.graph import FlatGraph
from papers.methods import Method, MethodContext, Settings
from papers_plugins.compression.pruning import (
    PRUNED_OPS,
    PruneSettings,
    mnist5k_check,
    prunable_layers,
    retrain,
    shuffled_batches,
    training_split,
)

if TYPE_CHECKING:
    import numpy as np
    import torch

Bits = Annotated[int, Field(ge=1, le=8)]
"""Bits of a layer's weight indices: 2**bits shared weights (at most 256, what a codebook holds)."""


class QuantizeSettings(Settings):
    """The settings of ``kmeans_quantize``."""

    bits: dict[str, Bits] = Field(
        {}, description="Bits of each layer's weight indices (2**bits shared weights), by node name."
    )
    conv_bits: Bits | None = Field(None, description="Bits of every convolution not named in `bits`.")
    fc_bits: Bits | None = Field(None, description="Bits of every linear layer not named in `bits`.")
    finetune_epochs: int = Field(
        0, ge=0, le=1000, description="Epochs of centroid fine-tuning, where data is given (Section 3.3)."
    )
    lr: float = Field(
        1.0e-3, gt=0, description="SGD rate of the centroids (and the biases) while fine-tuning."
    )
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(64, ge=1, le=65536)


def layer_bits(flat: FlatGraph, settings: QuantizeSettings) -> dict[str, int]:
    """The bits of each convolution and linear layer of ``flat`` that the settings quantize."""
    chosen = {}
    for node in flat.nodes:
        kind = PRUNED_OPS.get(node.op)
        if kind is None:
            continue
        bits = settings.bits.get(node.name, settings.conv_bits if kind == "conv" else settings.fc_bits)
        if bits is not None:
            chosen[node.name] = bits
    return chosen


def check_settings(flat: FlatGraph, settings: QuantizeSettings) -> FlatGraph:
    """The rewrite: the graph unchanged, once every layer ``bits`` names is one of its convolution or
    linear layers and some layer is quantized (refused at ``papers build`` and ``check``)."""
    layers = {node.name for node in flat.nodes if node.op in PRUNED_OPS}
    for name in settings.bits:
        if name not in layers:
            known = ", ".join(sorted(layers)[:12]) or "none"
            raise SpecError(
                f"settings.bits names {name!r}, which is no convolution or linear layer of the base model "
                f"(its layers: {known}{', ...' if len(layers) > 12 else ''})"
            )
    if not layer_bits(flat, settings):
        raise SpecError("settings give no layer bits (`bits`, `conv_bits` or `fc_bits`); nothing to quantize")
    return flat


def kept_weight_bits(flat: FlatGraph, prune: PruneSettings, quantize: QuantizeSettings) -> float:
    """Tables 2-5's "Weight bits (P+Q)" of the whole network, from the settings alone: each layer's
    bits (32 where it is not quantized) weighted by the weights its kept fraction leaves it."""
    layers = prunable_layers(flat)
    bits = layer_bits(flat, quantize)
    kept = {name: layer.weights * prune.kept.get(name, 1.0) for name, layer in layers.items()}
    return sum(count * bits.get(name, 32) for name, count in kept.items()) / sum(kept.values())


# -- weight sharing --------------------------------------------------------------------------------


@dataclass(frozen=True)
class SharedWeights:
    """A layer's weights as shared values: ``centroids[labels]``, where ``labels`` is -1 (pruned: 0)."""

    centroids: torch.Tensor
    labels: torch.Tensor
    """The index of each weight's centroid (the weight's shape), -1 where the weight is pruned."""

    def weights(self, centroids: torch.Tensor | None = None) -> torch.Tensor:
        """The weights these centroids (default: the layer's own) give, zeros where pruned."""
        import torch

        values = self.centroids if centroids is None else centroids
        if values.numel() == 0:  # a layer pruned whole: nothing to share
            return torch.zeros(self.labels.shape, dtype=values.dtype, device=values.device)
        kept = self.labels >= 0
        return torch.where(kept, values[self.labels.clamp(min=0)], torch.zeros((), dtype=values.dtype))


def linear_init(values: np.ndarray, clusters: int) -> np.ndarray:
    """``clusters`` centroids spaced evenly from the smallest to the largest of ``values`` (Section 3.2)."""
    import numpy as np

    return np.linspace(float(values.min()), float(values.max()), clusters)


def share_weights(weight: torch.Tensor, bits: int) -> SharedWeights:
    """Cluster ``weight``'s non-zero entries into at most ``2**bits`` shared values (k-means from a
    linear initialisation, minimising the within-cluster sum of squares, eq. 2); zeros stay zero."""
    import numpy as np
    import torch
    from sklearn.cluster import KMeans

    flat = weight.detach().cpu().reshape(-1)
    kept = flat != 0
    labels = torch.full(flat.shape, -1, dtype=torch.long)
    values = flat[kept].double().numpy()
    clusters = 1 << bits
    distinct = np.unique(values)
    if distinct.size <= clusters:  # already as few values as the codebook holds: each is a centroid
        centroids, assigned = distinct, np.searchsorted(distinct, values)
    else:
        init = linear_init(values, clusters).reshape(-1, 1)
        kmeans = KMeans(n_clusters=clusters, init=init, n_init=1, random_state=0).fit(values.reshape(-1, 1))
        centroids, assigned = kmeans.cluster_centers_.reshape(-1), kmeans.labels_
    labels[kept] = torch.from_numpy(np.asarray(assigned, dtype=np.int64))
    book = torch.from_numpy(np.asarray(centroids)).to(weight.dtype)
    return SharedWeights(book.to(weight.device), labels.view_as(weight).to(weight.device))


def centroid_gradients(weight_grad: torch.Tensor, labels: torch.Tensor, clusters: int) -> torch.Tensor:
    """Eq. 3: each centroid's gradient is the sum of the gradients of the weights that share it
    (pruned weights, label -1, share none)."""
    import torch

    kept = labels >= 0
    out = torch.zeros(clusters, dtype=weight_grad.dtype, device=weight_grad.device)
    return out.index_add_(0, labels[kept], weight_grad[kept])


def quantize(model: Any, bits: dict[str, int]) -> dict[str, SharedWeights]:
    """Replace each named layer's weights by their shared values, in place; returns the sharing."""
    import torch

    shared = {}
    with torch.no_grad():
        for name, width in bits.items():
            weight = model.get_submodule(name).weight
            shared[name] = share_weights(weight, width)
            weight.copy_(shared[name].weights())
    return shared


def finetune_centroids(
    model: Any,
    shared: dict[str, SharedWeights],
    batches: Any,
    settings: QuantizeSettings,
    device: str,
    epochs: int | None = None,
) -> dict[str, SharedWeights]:
    """SGD on the centroids (each moved by its summed gradient, eq. 3) and on the parameters that are
    not convolution or linear weights (the biases); other layers' weights stay as they are, so what
    was pruned stays zero. Cross-entropy on the model's logits. Returns the fine-tuned sharing."""
    import torch

    centroids = {name: s.centroids.clone().requires_grad_(False) for name, s in shared.items()}
    weights = {name: model.get_submodule(name).weight for name in shared}
    layer_weights = {
        id(module.weight)
        for module in model.modules()
        if isinstance(getattr(module, "weight", None), torch.nn.Parameter) and module.weight.dim() > 1
    }
    others = [p for p in model.parameters() if id(p) not in layer_weights and p.requires_grad]
    optimizer = torch.optim.SGD(
        [*centroids.values(), *others],
        lr=settings.lr,
        momentum=settings.momentum,
        weight_decay=settings.weight_decay,
    )
    model.train()
    try:
        for _ in range(settings.finetune_epochs if epochs is None else epochs):
            for images, labels in batches():
                optimizer.zero_grad(set_to_none=True)
                for weight in weights.values():
                    weight.grad = None
                loss = torch.nn.functional.cross_entropy(model(images.to(device)), labels.to(device))
                loss.backward()
                for name, weight in weights.items():
                    grad = weight.grad if weight.grad is not None else torch.zeros_like(weight)
                    centroids[name].grad = centroid_gradients(
                        grad, shared[name].labels, centroids[name].numel()
                    )
                optimizer.step()
                with torch.no_grad():
                    for name, weight in weights.items():
                        weight.copy_(shared[name].weights(centroids[name]))
    finally:
        model.eval()
        for weight in weights.values():
            weight.grad = None
    return {name: SharedWeights(centroids[name].detach(), s.labels) for name, s in shared.items()}


def kmeans_quantize(model: Any, settings: QuantizeSettings, context: MethodContext) -> Any:
    """Share each layer's weights (k-means, linear initialisation), then, where data is given and
    ``finetune_epochs`` asks for it, fine-tune the shared values on its training split."""
    shared = quantize(model, layer_bits(context.flat, settings))
    if settings.finetune_epochs and context.data is not None:
        shape = next(iter(context.flat.inputs.values()))
        images, labels = training_split(str(context.data), tuple(shape))
        batches = shuffled_batches(images, labels, settings.batch_size)
        finetune_centroids(model, shared, batches, settings, context.device)
    return model


def static_measure(flat: FlatGraph, settings: QuantizeSettings) -> dict[str, float | None]:
    """What the settings no longer fix: the compression ratio. Quantization leaves the kept weights as
    pruning left them (their count is still the settings'), but the bytes now depend on the weights,
    through the filler entries of the relative indices and the Huffman codes."""
    return {"compression_ratio": None}


KMEANS_QUANTIZE = Method(
    name="kmeans_quantize",
    settings=QuantizeSettings,
    description="Trained quantization (Han, Mao and Dally 2016): each layer's kept weights share at most "
    "2**bits values, k-means from a linear initialisation; with data, each shared value is fine-tuned by "
    "the summed gradient of its weights. The container Huffman-codes the indices where that is smaller.",
    rewrite=check_settings,
    apply=kmeans_quantize,
    measure=static_measure,
)


# -- the small-scale reproduction (`papers check deep_compression --run`) ----------------------------

PROXY_DATA = "builtin:mnist5k"
PROXY_EPOCHS = 30
"""Passes over the 4,000 training digits before compressing: the registry's choice, not the paper's."""


def compression_proxy(
    variant_id: str, data: str = PROXY_DATA, *, epochs: int = PROXY_EPOCHS
) -> dict[str, Any]:
    """Train method variant ``variant_id``'s base on ``data`` (its recipe's SGD settings, ``epochs``
    passes, a fixed seed), then run ``papers compress`` on it with ``data``: pruned and retrained,
    quantized and fine-tuned as the variant's settings say, written Huffman-coded. Returns top-1
    (percent, held-out split) before and after, from the model decoded from the file, and the
    report's bytes and compression ratio (the files' sizes)."""
    import torch
    from safetensors.torch import save_file

    from papers.api import build_model, expand_variant, get_spec
    from papers.compression import compress
    from papers.methods import variant_steps
    from papers.registry import get_registry
    from papers.train import intra_op_threads

    base = get_registry().variant(variant_id)[1].base
    assert base is not None
    (step,) = [s for s in variant_steps(variant_id) if s.method.name == "magnitude_prune"]
    recipe = get_spec(base).hyperparameters_of(base)
    assert recipe is not None and recipe.optimizer.lr is not None
    shape = tuple(next(iter(expand_variant(base).inputs.values())))
    training = step.settings.model_copy(
        update={
            "retrain_lr": recipe.optimizer.lr,
            "momentum": recipe.optimizer.momentum or 0.0,
            "weight_decay": recipe.weight_decay or 0.0,
        }
    )
    with intra_op_threads(1), torch.random.fork_rng(devices=[]), tempfile.TemporaryDirectory() as scratch:
        torch.manual_seed(0)
        model = build_model(base).eval()
        images, labels = training_split(data, shape)
        batches = shuffled_batches(images, labels, recipe.batch_size or 64)
        retrain(model, batches, list(model.parameters()), {}, training, "cpu", epochs=epochs)
        weights = Path(scratch) / "trained.safetensors"
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
        report = compress(variant_id, out=Path(scratch) / "out", weights=weights, data=data, latency_runs=3)
    keys = ("metric_before", "metric_after", "bytes_before", "bytes_after", "compression_ratio")
    return {key: report[key] for key in (*keys, "bits_per_weight_after", "sparsity_after")}


def _proxy_runner(variant_id: str) -> Any:
    def run(progress: bool) -> tuple[float, float]:
        measured = compression_proxy(variant_id)
        if progress:
            import click

            click.echo(
                f"{variant_id}: {measured['bytes_before']:,} → {measured['bytes_after']:,} bytes on disk, "
                f"{measured['compression_ratio']:g}× (top-1 {measured['metric_before']:g}% → "
                f"{measured['metric_after']:g}%)",
                err=True,
            )
        return measured["metric_after"], measured["metric_before"] - 1.0

    return run


def proxy_checks() -> list:
    """The paper's proxy checks (its plugin's ``papers_checks``)."""
    return [
        mnist5k_check(
            variant_id,
            _proxy_runner(variant_id),
            f"{network} trained on 5,000 of MNIST's digits (4,000 training, 1,000 test images) for "
            f"{PROXY_EPOCHS} epochs with Caffe's SGD settings, not on MNIST's 60,000; then "
            "`papers compress` with the data: pruned at the paper's per-layer rates and retrained, "
            "quantized at its per-layer bits (k-means, linear initialisation) and the centroids "
            "fine-tuned, written Huffman-coded; passes when the top-1 of the model decoded from "
            f"the file is within 1 point of the unpruned model's. The paper's {ratio} is for "
            "weights trained on all of MNIST; the ratio of the written file's bytes is printed "
            "with --run",
        )
        for variant_id, network, ratio in (
            ("deep_compression-lenet300_100", "LeNet-300-100", "40×"),
            ("deep_compression-lenet5_caffe", "LeNet-5", "39×"),
        )
    ]
