"""Vanhoucke, Senior and Mao, "Improving the speed of neural networks on CPUs" (NIPS 2011 Deep Learning
workshop): 8-bit linear quantization of a trained network's weights and activations, run by int8
kernels, as post-training quantization of any registry model.

``int8_quantize`` has a rewrite and an apply step. The rewrite turns each fully connected layer (and,
where the settings ask, each convolution) into the plugin's ``int8_linear`` (``int8_conv2d``): the same
arguments and weights, run by torch's int8 kernel (:mod:`papers_plugins.compression.int8_kernels`),
with the settings' bit width and scale granularity as arguments; the layers the settings keep in float
(the paper keeps its input layer in float, Section 4.1) are left as they are. The apply step rounds
each such layer's weights to its grid: ``bits``-bit signed codes times one scale per layer (the layer's
largest magnitude over the largest code: the paper's [-127, 127] at 8 bits) or per output channel.
The model ``papers compress`` writes is therefore the quantized model itself: its container stores
those weights as 8-bit codes (at most 255 distinct values per layer) and the model it builds back runs
the int8 kernel, so the report's latency is the kernel's, against the float base, on this machine.
Activations are quantized by the kernel on each call, to unsigned 8 bits over their observed range,
where the paper fixes the range of its sigmoid outputs at [0, 1]; biases stay float, where the paper
scales them to 32-bit integers.

Without weights, :func:`static_measure` gives the bits the settings store: each quantized layer's
weights at ``bits`` bits and its scales at 32, every other parameter at 32.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Literal

from pydantic import Field

from papers.errors import SpecError
from papers.graph import FlatGraph
from papers.methods import Method, MethodContext, Settings

INT8_OPS = {"linear": "int8_linear", "conv2d": "int8_conv2d"}
"""The float op each int8 op replaces."""


class Int8Settings(Settings):
    """The settings of ``int8_quantize``."""

    bits: int = Field(
        8,
        ge=2,
        le=8,
        description="Bits of each weight code (signed, symmetric: [-127, 127] at 8); the kernels are "
        "int8, so 2 to 8.",
    )
    granularity: Literal["layer", "channel"] = Field(
        "layer",
        description="One scale per layer, its largest magnitude (the paper's, Section 4.1), or one per "
        "output channel.",
    )
    ops: list[Literal["linear", "conv2d"]] = Field(
        ["linear"],
        min_length=1,
        description="The kinds of layer quantized: fully connected layers (the paper's), and convolutions.",
    )
    keep_float: list[str] = Field(
        [], description="Layers left in float, by node name (the paper keeps its input layer in float)."
    )
    reduce_range: bool = Field(
        False,
        description="Quantize activations to 7 bits (torch's guard against the 16-bit saturation of x86's "
        "u8 × s8 multiply-add, which the paper accepts, Section 4.2).",
    )


def quantized_layers(flat: FlatGraph, settings: Int8Settings) -> list[str]:
    """The nodes the settings quantize: the layers of the chosen kinds, less those kept in float."""
    kept = set(settings.keep_float)
    return [
        node.name
        for node in flat.nodes
        if node.op in settings.ops and node.module is None and node.name not in kept
    ]


def rewrite(flat: FlatGraph, settings: Int8Settings) -> FlatGraph:
    """Each quantized layer becomes its int8 op, with the bit width and granularity as arguments, once
    every layer ``keep_float`` names is one of the chosen kinds and some layer is left to quantize."""
    candidates = {node.name for node in flat.nodes if node.op in settings.ops}
    for position, name in enumerate(settings.keep_float):
        if name not in candidates:
            known = ", ".join(sorted(candidates)[:12]) or "none"
            raise SpecError(
                f"settings.keep_float[{position}] names {name!r}, which is no {' or '.join(settings.ops)} "
                f"layer of the base model (its layers: {known}{', ...' if len(candidates) > 12 else ''})"
            )
    chosen = set(quantized_layers(flat, settings))
    if not chosen:
        raise SpecError(f"the base model has no {' or '.join(settings.ops)} layer left to quantize")
    extra = {
        "granularity": settings.granularity,
        "bits": settings.bits,
        "reduce_range": settings.reduce_range,
    }
    nodes = tuple(
        replace(node, op=INT8_OPS[node.op], args={**node.args, **extra}) if node.name in chosen else node
        for node in flat.nodes
    )
    return replace(flat, nodes=nodes)


def int8_quantize(model: Any, settings: Int8Settings, context: MethodContext) -> Any:
    """Round each quantized layer's weights to its int8 grid, in place (no data needed)."""
    import torch

    from papers_plugins.compression.int8_kernels import on_grid

    with torch.no_grad():
        for name in quantized_layers(_as_float(context.flat), settings):
            weight = model.get_submodule(name).weight
            weight.copy_(on_grid(weight, settings.granularity, settings.bits))
    return model


def _as_float(flat: FlatGraph) -> FlatGraph:
    """``flat`` with its int8 ops read as the float ops they replaced (the graph after the rewrite)."""
    back = {int8: op for op, int8 in INT8_OPS.items()}
    return replace(flat, nodes=tuple(replace(node, op=back.get(node.op, node.op)) for node in flat.nodes))


def stored_bits(flat: FlatGraph, settings: Int8Settings) -> tuple[int, int]:
    """All the parameters of ``flat`` (after the rewrite), and the bits the settings store them in: a
    quantized layer's weights at ``bits`` bits with a 32-bit scale per layer or per output channel,
    every other parameter (biases, layers kept in float) at 32 bits."""
    from papers.build import build
    from papers.registry import get_registry

    model = build(flat, get_registry().catalogue, device="meta")
    total = sum(p.numel() for p in model.parameters())
    bits = 32 * total
    for name in quantized_layers(_as_float(flat), settings):
        weight = model.get_submodule(name).weight
        scales = 1 if settings.granularity == "layer" else weight.shape[0]
        bits -= (32 - settings.bits) * weight.numel() - 32 * scales
    return total, bits


def static_measure(flat: FlatGraph, settings: Int8Settings) -> dict[str, float]:
    """Bits per parameter and the compression ratio of the parameters (32-bit floats before) that the
    settings give, without weights."""
    total, bits = stored_bits(flat, settings)
    if not total:
        return {}
    return {"bits_per_weight": bits / total, "compression_ratio": 32 * total / bits}


INT8_QUANTIZE = Method(
    name="int8_quantize",
    settings=Int8Settings,
    description="8-bit linear quantization (Vanhoucke et al. 2011): each fully connected layer (and "
    "convolution, where asked) becomes an int8 layer, its weights rounded to signed codes with one scale "
    "per layer (or channel), its activations quantized to unsigned 8 bits on each call, run by torch's "
    "int8 kernel with 32-bit accumulation.",
    rewrite=rewrite,
    apply=int8_quantize,
    measure=static_measure,
)


# -- the small-scale reproduction (`papers check vanhoucke2011 --run`) ------------------------------

PROXY_VARIANT = "vanhoucke2011-lenet5_caffe"
PROXY_DATA = "builtin:mnist5k"
PROXY_EPOCHS = 20
"""Passes over the 4,000 training digits before quantizing: the registry's choice, not the paper's."""
PROXY_MARGIN = 0.5
"""The issue's bar: int8 top-1 within half a point of float."""


def int8_proxy(
    variant_id: str = PROXY_VARIANT,
    data: str = PROXY_DATA,
    *,
    epochs: int = PROXY_EPOCHS,
    limit: int | None = None,
    latency_runs: int = 5,
) -> dict[str, Any]:
    """Train method variant ``variant_id``'s base on ``data`` (its recipe's SGD settings, ``epochs``
    passes, a fixed seed, one thread), then run ``papers compress`` on it: quantized to int8, written,
    read back into the int8 model. Returns the report's top-1 before and after (the held-out split,
    the model decoded from the file running the int8 kernel), bytes and latencies."""
    import torch

    from papers.train import intra_op_threads
    from papers_plugins.compression.proxy_compress import compress_pretrained

    report = compress_pretrained(
        variant_id, "int8_quantize", data, epochs=epochs, limit=limit, latency_runs=latency_runs
    )
    with intra_op_threads(1):  # the threads the proxy's compress ran with
        threads = torch.get_num_threads()
    keys = ("metric_before", "metric_after", "bytes_before", "bytes_after", "compression_ratio")
    timing = ("latency_ms_before", "latency_ms_after", "speedup", "latency")
    return {**{key: report[key] for key in (*keys, *timing)}, "threads": threads}


def _proxy_runner(progress: bool) -> tuple[float, float]:
    measured = int8_proxy()
    if progress:
        import click

        click.echo(
            f"{PROXY_VARIANT}: top-1 {measured['metric_before']:g}% float → {measured['metric_after']:g}% "
            f"int8; {measured['bytes_before']:,} → {measured['bytes_after']:,} bytes on disk "
            f"({measured['compression_ratio']:g}×); batch 1 {measured['latency_ms_before']:g} → "
            f"{measured['latency_ms_after']:g} ms ({measured['speedup']:g}×, {measured['threads']} thread)",
            err=True,
        )
    return measured["metric_after"], measured["metric_before"] - PROXY_MARGIN


def proxy_checks() -> list:
    """The paper's proxy check (its plugin's ``papers_checks``)."""
    from papers_plugins.compression.pruning import mnist5k_check

    check = mnist5k_check(
        PROXY_VARIANT,
        _proxy_runner,
        "Caffe's LeNet-5 (conv 20, 50; fc 500, 10) trained on 5,000 of MNIST's digits (4,000 training, "
        f"1,000 test images) for {PROXY_EPOCHS} epochs with Caffe's SGD settings, not the paper's "
        "speech network; then `papers compress`: every convolution and fully connected layer's weights "
        "rounded to 8-bit codes with one scale per layer, activations quantized to 8 bits on each call, "
        "run by torch's int8 kernel; passes when the top-1 of the int8 model decoded from the file is "
        f"within {PROXY_MARGIN} points of the float model's (the issue's bar; the paper reports no "
        "accuracy loss on its speech task, Table 5)",
    )
    return [check]
