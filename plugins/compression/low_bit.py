"""Low-bit networks as methods: XNOR-Net's ``binarize`` (Rastegari et al. 2016), the binarized and
quantized networks' ``quantize_qnn`` (Courbariaux, Hubara et al. 2016; Hubara et al. 2016) and
DoReFa-Net's ``dorefa_quantize`` (Zhou et al. 2016).

Each has a rewrite and an apply step. The rewrite turns the convolution and linear layers the
settings name (by default every one but the first and the last, which the three papers keep in full
precision) into the plugins' low-bit ops: ``binary_conv2d`` / ``binary_linear``
(:mod:`papers_plugins.compression.binary`: binary weights, and binary inputs run by the packed
XNOR-popcount kernel at inference) or ``quant_conv2d`` / ``quant_linear``
(:mod:`papers_plugins.compression.quantizers`: k-bit weights, inputs and gradients); XNOR-Net and
the binarized networks get a batch normalisation in front of each binary layer (XNOR-Net's block
order, Section 3.3: BN, binary activation, binary convolution, pooling; the binary activation is the
layer's own sign of its input). DoReFa's activation quantizer replaces the ReLU nodes it names.

The apply step trains the rewritten model, where data is given and the settings ask for epochs
(quantization-aware training: float latent weights, the quantizers' straight-through estimators),
then writes the quantized weights themselves into the layers: ``α · sign(W)`` per filter for
XNOR-Net, ``sign(W)`` for BNN, a scale times k-bit codes for DoReFa and QNN. ``papers compress``
stores those at their bit width (the container's ``grid`` encoding: one bit a weight and a float per
filter for XNOR-Net) and the model it builds back runs the binary kernel, whose latency its report
gives beside the float base's.

Hand-written: the rewrites and the short training loop (the registry's own graph and settings).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Annotated, Any, Literal

from pydantic import Field

from papers.errors import SpecError
from papers.graph import FlatGraph, FlatNode
from papers.methods import Estimate, Method, MethodContext, Settings

LAYER_OPS = ("conv2d", "linear")
ACTIVATION_OPS = ("relu",)
"""The activations DoReFa's quantizer replaces (clipped to [0, 1], a ReLU's range bounded)."""
Bits = Annotated[int, Field(ge=1, le=32)]
"""A bit width: 1 to 32 (32: not quantized)."""


class TrainingSettings(Settings):
    """Quantization-aware training, where ``papers compress`` is given data."""

    epochs: int = Field(
        0, ge=0, le=1000, description="Epochs of training with the quantizers, where data is given."
    )
    lr: float = Field(1.0e-3, gt=0, description="The optimizer's rate.")
    optimizer: Literal["adam", "adamax", "shift_adamax", "sgd"] = Field(
        "adam",
        description="adam (XNOR-Net, DoReFa), adamax or shift_adamax (BNN's shift-based AdaMax, "
        "Algorithm 4), or sgd with momentum 0.9.",
    )
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(64, ge=1, le=65536)
    layers: list[str] | None = Field(
        None,
        description="The convolution and linear layers to quantize, by node name; default: all but "
        "the first and the last (kept in full precision, as the papers do).",
    )


class BinarizeSettings(TrainingSettings):
    """The settings of ``binarize`` (XNOR-Net)."""

    mode: Literal["bwn", "xnor"] = Field(
        description="bwn: binary weights α·sign(W), real inputs (Binary-Weight-Networks); xnor: binary "
        "weights and inputs, sign(I) scaled by K (XNOR-Networks)."
    )


class QnnSettings(TrainingSettings):
    """The settings of ``quantize_qnn`` (binarized and quantized neural networks)."""

    weight_bits: Bits = Field(1, description="Bits of the weights (1: sign(W), BNN).")
    activation_bits: Bits = Field(1, description="Bits of each quantized layer's input (1: sign, BNN).")
    shift_batchnorm: bool = Field(False, description="Shift-based batch normalisation (Algorithm 3).")
    clip: bool = Field(True, description="Clip the latent weights to [-1, 1] after each step (Algorithm 1).")
    stochastic: bool = Field(
        False,
        description="Binarize each binary layer's inputs stochastically while training: +1 with "
        "probability clip((x + 1) / 2, 0, 1), else -1 (Section 1.1, eq. 2); the sign at inference.",
    )


class DorefaSettings(TrainingSettings):
    """The settings of ``dorefa_quantize`` (DoReFa-Net's W-A-G bit widths)."""

    weight_bits: Bits = Field(description="W: bits of the weights (1: E(|W|)·sign(W); 32: float).")
    activation_bits: Bits = Field(description="A: bits of the activations (32: clipped, not quantized).")
    gradient_bits: Bits = Field(
        32, description="G: bits of the gradients of the layers' outputs (32: float)."
    )
    activations: list[str] | None = Field(
        None, description="The activation (ReLU) nodes to quantize; default: every one."
    )


# -- rewrites ---------------------------------------------------------------------------------------


def chosen_layers(flat: FlatGraph, layers: Sequence[str] | None) -> list[FlatNode]:
    """The convolution and linear nodes ``layers`` names (default: all but the first and the last)."""
    candidates = [node for node in flat.nodes if node.op in LAYER_OPS]
    if layers is None:
        chosen = candidates[1:-1]
        if not chosen:
            raise SpecError(
                "the base model has fewer than three convolution or linear layers: with the first and "
                "the last kept in full precision nothing is quantized; name `layers`"
            )
        return chosen
    by_name = {node.name: node for node in candidates}
    for name in layers:
        if name not in by_name:
            known = ", ".join(sorted(by_name)[:12]) or "none"
            raise SpecError(
                f"settings.layers names {name!r}, which is no convolution or linear layer of the base "
                f"model (its layers: {known}{', ...' if len(by_name) > 12 else ''})"
            )
    if not layers:
        raise SpecError("settings.layers is empty; nothing would be quantized")
    return [by_name[name] for name in layers]


def _batchnorm_name(name: str) -> str:
    head, _, last = name.rpartition(".")
    return f"{head}.bn_{last}" if head else f"bn_{name}"


def _swap(
    flat: FlatGraph, chosen: list[FlatNode], ops: dict[str, str], extra: dict[str, Any], batchnorm: str | None
) -> FlatGraph:
    """``flat`` with each chosen node's op replaced (``ops``: conv2d/linear → the new op) and
    ``extra`` added to its arguments; with ``batchnorm`` (``batchnorm``, ``shift_batchnorm``), a
    normalisation inserted in front of it."""
    names = {node.name for node in chosen}
    taken = {node.name for node in flat.nodes}
    nodes: list[FlatNode] = []
    for node in flat.nodes:
        if node.name not in names:
            nodes.append(node)
            continue
        inputs = node.inputs
        if batchnorm is not None:
            norm = _batchnorm_name(node.name)
            if norm in taken:
                raise SpecError(f"cannot insert a batch normalisation before {node.name!r}: {norm!r} exists")
            kind = "2d" if node.op == "conv2d" else "1d"
            op = f"{batchnorm}{kind}" if batchnorm == "batchnorm" else batchnorm
            nodes.append(FlatNode(norm, op, {}, node.inputs, node.where, node.block))
            inputs = (norm,)
        nodes.append(replace(node, op=ops[node.op], args={**node.args, **extra}, inputs=inputs))
    return replace(flat, nodes=tuple(nodes))


def binarize_rewrite(flat: FlatGraph, settings: BinarizeSettings) -> FlatGraph:
    """XNOR-Net's rewrite: the chosen layers binary (``binary_conv2d`` / ``binary_linear``); for
    XNOR-Networks binary inputs scaled by K and a batch normalisation in front of each."""
    chosen = chosen_layers(flat, settings.layers)
    xnor = settings.mode == "xnor"
    extra = {"inputs": "binary" if xnor else "real", "weight_scale": True, "input_scale": xnor}
    ops = {"conv2d": "binary_conv2d", "linear": "binary_linear"}
    return _swap(flat, chosen, ops, extra, "batchnorm" if xnor else None)


def qnn_rewrite(flat: FlatGraph, settings: QnnSettings) -> FlatGraph:
    """The binarized (or k-bit) networks' rewrite: each chosen layer preceded by a (shift-based) batch
    normalisation and computing on quantized inputs and weights: ``binary_conv2d`` without scales at
    one bit each (the XNOR kernel at inference; with ``stochastic``, inputs binarized stochastically
    while training), ``quant_conv2d`` with QNN's linear quantizer else."""
    chosen = chosen_layers(flat, settings.layers)
    norm = "shift_batchnorm" if settings.shift_batchnorm else "batchnorm"
    if settings.stochastic and (settings.weight_bits, settings.activation_bits) != (1, 1):
        raise SpecError(
            f"stochastic binarization is of binary activations, with weight_bits and activation_bits 1 "
            f"(here {settings.weight_bits} and {settings.activation_bits})",
            field="settings.stochastic",
        )
    if settings.weight_bits == 1 and settings.activation_bits == 1:
        extra: dict[str, Any] = {"inputs": "binary", "weight_scale": False, "input_scale": False}
        if settings.stochastic:
            extra["stochastic"] = True
        return _swap(flat, chosen, {"conv2d": "binary_conv2d", "linear": "binary_linear"}, extra, norm)
    extra = {
        "weight_bits": settings.weight_bits,
        "input_bits": settings.activation_bits,
        "quantizer": "linear",
    }
    return _swap(flat, chosen, {"conv2d": "quant_conv2d", "linear": "quant_linear"}, extra, norm)


def chosen_activations(flat: FlatGraph, names: Sequence[str] | None) -> list[FlatNode]:
    """The activation nodes ``names`` names (default: every ReLU); a name that is no activation is
    refused, naming what it is."""
    activations = [node for node in flat.nodes if node.op in ACTIVATION_OPS]
    if names is None:
        return activations
    by_name = {node.name: node for node in flat.nodes}
    for name in names:
        node = by_name.get(name)
        if node is None or node.op not in ACTIVATION_OPS:
            what = (
                "no node of the base model" if node is None else f"a {node.op} layer, which has no activation"
            )
            known = ", ".join(n.name for n in activations[:12]) or "none"
            raise SpecError(
                f"settings.activations names {name!r}, {what}; an activation quantizer replaces a ReLU "
                f"(the base model's: {known})"
            )
    return [by_name[name] for name in names]


def dorefa_rewrite(flat: FlatGraph, settings: DorefaSettings) -> FlatGraph:
    """DoReFa's rewrite: the chosen layers ``quant_conv2d`` / ``quant_linear`` with W and G bits; the
    chosen ReLUs ``quant_activation`` with A bits (clipped to [0, 1], then quantized)."""
    chosen = chosen_layers(flat, settings.layers)
    activations = {node.name for node in chosen_activations(flat, settings.activations)}
    extra = {
        "weight_bits": settings.weight_bits,
        "gradient_bits": settings.gradient_bits,
        "quantizer": "dorefa",
    }
    flat = _swap(flat, chosen, {"conv2d": "quant_conv2d", "linear": "quant_linear"}, extra, None)
    nodes = tuple(
        replace(node, op="quant_activation", args={"bits": settings.activation_bits, "quantizer": "dorefa"})
        if node.name in activations
        else node
        for node in flat.nodes
    )
    return replace(flat, nodes=nodes)


# -- static measurements ----------------------------------------------------------------------------


def _weights_and_rows(flat: FlatGraph, names: set[str]) -> tuple[int, int]:
    """The weights and the output channels (filters) of the named layers (a meta build)."""
    from papers.build import build
    from papers.registry import get_registry

    model = build(flat, get_registry().catalogue, device="meta")
    weights = rows = 0
    for name in names:
        weight = model.get_submodule(name).weight
        weights, rows = weights + weight.numel(), rows + weight.shape[0]
    return weights, rows


def binarize_measure(flat: FlatGraph, settings: BinarizeSettings) -> dict[str, Estimate]:
    """The binarized layers' weight memory against float32: 32× counting the sign bits alone (the
    paper's), a little less counting one float α per filter (the interval's low end)."""
    names = {node.name for node in flat.nodes if node.op in ("binary_conv2d", "binary_linear")}
    weights, rows = _weights_and_rows(flat, names)
    with_scales = 32 * weights / (weights + 32 * rows)
    return {"compression_ratio": Estimate(with_scales, with_scales, 32.0)}


def dorefa_measure(flat: FlatGraph, settings: DorefaSettings) -> dict[str, Estimate]:
    """The bits of a quantized layer's weight (W), with the one float scale of a 1-bit layer spread
    over its weights as the interval's high end."""
    names = {node.name for node in flat.nodes if node.op in ("quant_conv2d", "quant_linear")}
    weights, _ = _weights_and_rows(flat, names)
    bits = float(settings.weight_bits)
    scale = 32 * len(names) / weights if settings.weight_bits == 1 else 0.0
    return {"bits_per_weight": Estimate(bits, bits, bits + scale)}


# -- apply: training with the quantizers, then the quantized weights written -------------------------


def train_quantized(model: Any, settings: TrainingSettings, context: MethodContext) -> None:
    """Train ``model`` (its quantizers' straight-through estimators) on ``context.data``'s training
    split for ``settings.epochs``: cross-entropy, the settings' optimizer; BNN's latent weights
    clipped to [-1, 1] after each step where the settings say."""
    import torch

    from papers_plugins.compression.pruning import shuffled_batches, training_split
    from papers_plugins.compression.quantizers import ShiftAdaMax, clip_weights

    shape = next(iter(context.flat.inputs.values()))
    images, labels = training_split(str(context.data), tuple(shape))
    batches = shuffled_batches(images, labels, settings.batch_size)
    parameters = list(model.parameters())
    if settings.optimizer == "adam":
        optimizer: Any = torch.optim.Adam(parameters, lr=settings.lr, weight_decay=settings.weight_decay)
    elif settings.optimizer == "adamax":
        optimizer = torch.optim.Adamax(parameters, lr=settings.lr, weight_decay=settings.weight_decay)
    elif settings.optimizer == "shift_adamax":
        optimizer = ShiftAdaMax(parameters, lr=settings.lr)
    else:
        optimizer = torch.optim.SGD(
            parameters, lr=settings.lr, momentum=0.9, weight_decay=settings.weight_decay
        )
    clip = getattr(settings, "clip", False)
    model.train()
    try:
        for _ in range(settings.epochs):
            for batch, answers in batches():
                optimizer.zero_grad(set_to_none=True)
                loss = torch.nn.functional.cross_entropy(
                    model(batch.to(context.device)), answers.to(context.device)
                )
                loss.backward()
                optimizer.step()
                if clip:
                    clip_weights(model)
    finally:
        model.eval()


def freeze(model: Any) -> None:
    """Write every low-bit layer's quantized weights into it: ``α · sign(W)`` (per filter) or
    ``sign(W)`` for a binary layer, a scale times codes for a k-bit one."""
    import torch

    from papers_plugins.compression.binary import BinaryConv2d, BinaryLinear, binarize
    from papers_plugins.compression.quantizers import QuantConv2d, QuantLinear

    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, BinaryConv2d | BinaryLinear):
                weight = layer.weight
                signs = binarize(weight)
                if layer.weight_scale:
                    alpha = weight.abs().mean(dim=tuple(range(1, weight.dim())), keepdim=True)
                    signs = alpha * signs
                weight.copy_(signs)
            elif isinstance(layer, QuantConv2d | QuantLinear):
                layer.freeze()


def quantize_apply(model: Any, settings: TrainingSettings, context: MethodContext) -> Any:
    """Train with the quantizers where data is given, then write the quantized weights."""
    if settings.epochs and context.data is not None:
        train_quantized(model, settings, context)
    freeze(model)
    return model


BINARIZE = Method(
    name="binarize",
    settings=BinarizeSettings,
    description="XNOR-Net (Rastegari et al. 2016): binary weights α·sign(W), α the mean |W| of each "
    "filter (BWN), and with mode xnor binary inputs scaled by K after a batch normalisation, run by a "
    "bit-packed XNOR-popcount kernel; trained with the straight-through estimator where data is given.",
    rewrite=binarize_rewrite,
    apply=quantize_apply,
    measure=binarize_measure,
)

QUANTIZE_QNN = Method(
    name="quantize_qnn",
    settings=QnnSettings,
    description="Binarized and quantized neural networks (Courbariaux, Hubara et al. 2016; Hubara et al. "
    "2016): weights and each layer's inputs at 1 (sign) or k bits (linear), straight-through estimator "
    "with the gradient cancelled where |x| > 1, latent weights clipped to [-1, 1]; shift-based batch "
    "normalisation and AdaMax as options.",
    rewrite=qnn_rewrite,
    apply=quantize_apply,
)

DOREFA_QUANTIZE = Method(
    name="dorefa_quantize",
    settings=DorefaSettings,
    description="DoReFa-Net (Zhou et al. 2016): W-bit weights (tanh-normalised; E(|W|)·sign(W) at one "
    "bit), A-bit activations (clipped to [0, 1]) and G-bit gradients with noise.",
    rewrite=dorefa_rewrite,
    apply=quantize_apply,
    measure=dorefa_measure,
)


# -- the small-scale reproductions (`papers check PAPER --run`) ---------------------------------------

PROXY_EPOCHS = 30
"""Passes over the 4,000 training digits before quantizing (the float model): the registry's choice."""


def quantization_proxy(variant_id: str, method: str, *, epochs: int = PROXY_EPOCHS) -> dict[str, Any]:
    """Train method variant ``variant_id``'s base on builtin:mnist5k (its recipe, ``epochs`` passes, a
    fixed seed, one thread), then ``papers compress`` it with the data: the variant's rewrite, its
    quantization-aware training and the quantized weights written. Gives the report's top-1 of the
    float model and of the model decoded from the file, its bytes and compression ratio."""
    from papers_plugins.compression.proxy_compress import compress_pretrained
    from papers_plugins.compression.pruning import PROXY_DATA

    report = compress_pretrained(variant_id, method, PROXY_DATA, epochs=epochs, latency_runs=3, threads=None)
    keys = ("metric_before", "metric_after", "bytes_before", "bytes_after", "compression_ratio")
    return {
        key: report[key] for key in (*keys, "bits_per_weight_after", "latency_ms_before", "latency_ms_after")
    }


def proxy_runner(variant_id: str, method: str, bar: float) -> Any:
    """A proxy check's runner: passes when the quantized model's top-1 is within ``bar`` points of the
    float model's."""

    def run(progress: bool) -> tuple[float, float]:
        measured = quantization_proxy(variant_id, method)
        if progress:
            import click

            click.echo(
                f"{variant_id}: top-1 {measured['metric_before']:g}% float → {measured['metric_after']:g}% "
                f"quantized; {measured['bytes_before']:,} → {measured['bytes_after']:,} bytes on disk "
                f"({measured['compression_ratio']:g}×, {measured['bits_per_weight_after']:g} bits a "
                f"weight); latency at batch 1 {measured['latency_ms_before']:g} → "
                f"{measured['latency_ms_after']:g} ms",
                err=True,
            )
        return measured["metric_after"], measured["metric_before"] - bar

    return run


def proxy_check(variant_id: str, method: str, network: str, what: str, bar: float) -> Any:
    from papers_plugins.compression.pruning import mnist5k_check

    return mnist5k_check(
        variant_id,
        proxy_runner(variant_id, method, bar),
        f"{network} trained in float on 5,000 of MNIST's digits (4,000 training, 1,000 test images) for "
        f"{PROXY_EPOCHS} epochs with Caffe's SGD settings, not on ImageNet; then `papers compress` with "
        f"the data: {what}, trained with the quantizers for the variant's epochs and written at its bit "
        f"width; passes when the top-1 of the model decoded from the file is within {bar:g} point"
        f"{'s' if bar != 1 else ''} of the float model's (the bar set before the run, not tuned)",
    )


__all__ = [
    "BINARIZE",
    "DOREFA_QUANTIZE",
    "QUANTIZE_QNN",
    "BinarizeSettings",
    "DorefaSettings",
    "QnnSettings",
    "chosen_activations",
    "chosen_layers",
    "freeze",
    "quantization_proxy",
]
