"""What the low-rank papers share: splitting a layer of the expanded graph into a chain of smaller
layers, measuring what that saves, and carrying a model's weights across the split.

A decomposition replaces one ``conv2d`` or ``linear`` node by a chain of new nodes named under it
(``conv2`` becomes ``conv2.u``, ``conv2.core``, ``conv2.v``); every node, output or feature stage that
read the old node reads the chain's last node. The chain has no non-linearity inside, so it computes
a linear map of the same shape as the layer it replaces, and the rewrite is static: the ranks are in
the settings, so parameters and multiply-adds after decomposition are measured on the meta device.
The factors are computed by each method's ``apply`` step from the original layer's weights
(``MethodContext.before``).

Hand-written: this is surgery on the registry's own graph (:class:`papers.graph.FlatGraph`); no
library knows it. The factorisations themselves come from libraries (tensorly, ``torch.linalg``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from papers.errors import SpecError
from papers.graph import FlatGraph, FlatNode, source
from papers.methods import MethodContext

if TYPE_CHECKING:
    from torch import nn

DECOMPOSABLE = ("conv2d", "linear")


@dataclass(frozen=True)
class LayerShape:
    """A convolution's or linear layer's weight shape, read from a meta build of the graph."""

    name: str
    op: str
    in_channels: int
    out_channels: int
    kernel: tuple[int, int]
    """(1, 1) for a linear layer."""
    groups: int
    bias: bool
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] | str = (0, 0)
    """A convolution's padding on each side, or torch's ``"same"``/``"valid"``."""
    dilation: tuple[int, int] = (1, 1)


def layer_shapes(flat: FlatGraph) -> dict[str, LayerShape]:
    """Every convolution and linear layer of ``flat`` (its own module, not a shared one), by name."""
    from papers.build import build
    from papers.registry import get_registry

    model = build(flat, get_registry().catalogue, device="meta")
    shapes = {}
    for node in flat.nodes:
        if node.op not in DECOMPOSABLE or node.module is not None:
            continue
        layer = model.get_submodule(node.name)
        if node.op == "conv2d":
            kernel = tuple(layer.kernel_size)
            shapes[node.name] = LayerShape(
                node.name, "conv2d", layer.in_channels, layer.out_channels, kernel,  # type: ignore[arg-type]
                layer.groups, layer.bias is not None, tuple(layer.stride),  # type: ignore[arg-type]
                layer.padding if isinstance(layer.padding, str) else tuple(layer.padding),  # type: ignore[arg-type]
                tuple(layer.dilation),  # type: ignore[arg-type]
            )  # fmt: skip
        else:
            shapes[node.name] = LayerShape(
                node.name, "linear", layer.in_features, layer.out_features, (1, 1), 1, layer.bias is not None
            )
    return shapes


def named_layer(shapes: Mapping[str, LayerShape], name: str, field: str, ops: Sequence[str]) -> LayerShape:
    """The layer a setting names, or a :class:`SpecError` at ``field`` saying which layers there are."""
    layer = shapes.get(name)
    if layer is None or layer.op not in ops:
        known = sorted(n for n, s in shapes.items() if s.op in ops)
        shown = ", ".join(known[:12]) + (", ..." if len(known) > 12 else "")
        kind = " or ".join({"conv2d": "convolution", "linear": "linear layer"}[op] for op in ops)
        raise SpecError(
            f"{name!r} is no {kind} of the base model (its layers: {shown or 'none'})", field=field
        )
    if layer.groups != 1:
        raise SpecError(
            f"{name!r} is a grouped convolution (groups = {layer.groups}); a decomposition here needs "
            "an ungrouped one (AlexNet's one-tower base is alexnet.torchvision)",
            field=field,
        )
    return layer


def check_rank(rank: int, limit: int, what: str, field: str) -> None:
    """A rank above what the layer allows (``limit``: its channels) is refused at ``field``."""
    if rank > limit:
        raise SpecError(f"rank {rank} is above the layer's limit of {limit} ({what})", field=field)


def split_node(flat: FlatGraph, name: str, chain: Sequence[tuple[str, str, Mapping[str, Any]]]) -> FlatGraph:
    """``flat`` with node ``name`` replaced by ``chain`` (suffix, op, args), each reading the one
    before and the first reading the old node's inputs; readers of the old node read the last."""
    old = flat.node(name)
    new_nodes = []
    inputs = old.inputs
    for suffix, op, args in chain:
        node = FlatNode(f"{name}.{suffix}", op, dict(args), inputs, old.where, old.block)
        new_nodes.append(node)
        inputs = (node.name,)
    last = new_nodes[-1].name

    def redirect(reference: str) -> str:
        if source(reference) != name:
            return reference
        return last + reference[len(name) :]

    nodes: list[FlatNode] = []
    for node in flat.nodes:
        if node.name == name:
            nodes.extend(new_nodes)
        else:
            nodes.append(replace(node, inputs=tuple(redirect(r) for r in node.inputs)))
    return replace(
        flat,
        nodes=tuple(nodes),
        outputs={k: redirect(v) for k, v in flat.outputs.items()},
        features={k: redirect(v) for k, v in flat.features.items()},
        aliases={k: redirect(v) for k, v in flat.aliases.items()},
    )


def layer_args(flat: FlatGraph, name: str) -> dict[str, Any]:
    """The node's arguments without those the chain sets itself (widths, bias)."""
    return {
        k: v for k, v in flat.node(name).args.items() if k not in ("out_channels", "out_features", "bias")
    }


# -- static measurements -------------------------------------------------------------------------


@dataclass(frozen=True)
class Replaced:
    """A layer a decomposition replaced: its chain's node names and the original's weight shape."""

    chain: tuple[str, ...]
    in_channels: int
    out_channels: int
    kernel: tuple[int, int]
    bias: bool


def replaced(flat: FlatGraph, chains: Mapping[str, Sequence[str]]) -> dict[str, Replaced]:
    """What each decomposed layer was, read back from its chain in the rewritten graph: the first
    layer's input channels, the last's output channels and bias, the kernel the chain spans (a
    normalisation inside the chain counts among its nodes, not its layers)."""
    shapes = layer_shapes(flat)
    out = {}
    for name, chain in chains.items():
        layers = [shapes[n] for n in chain if n in shapes]  # the convolutions or linear layers (not a norm)
        first, last = layers[0], layers[-1]
        height = 1 + sum(layer.kernel[0] - 1 for layer in layers)
        width = 1 + sum(layer.kernel[1] - 1 for layer in layers)
        out[name] = Replaced(tuple(chain), first.in_channels, last.out_channels, (height, width), last.bias)
    return out


def reductions(flat: FlatGraph, layers: Mapping[str, Replaced]) -> dict[str, float]:
    """The whole model's compression ratio (parameters before over after) and theoretical speed-up
    (multiply-adds before over after), the model before being ``flat`` with each chain put back to
    the single layer it replaced (same output size: the chain's last node's)."""
    from papers.measure import measure_graph
    from papers.registry import get_registry

    m = measure_graph("decomposed", flat, get_registry().catalogue)
    macs_of = {layer.name: layer.macs for layer in m.layers}
    params_before, macs_before = m.params, m.macs
    for layer in layers.values():
        height, width = layer.kernel
        weights = layer.in_channels * layer.out_channels * height * width
        positions = 1
        for size in m.node_shapes[layer.chain[-1]][2:]:
            positions *= size
        params_before += weights + (layer.out_channels if layer.bias else 0)
        params_before -= sum(m.node_params[n] for n in layer.chain)
        macs_before += weights * positions - sum(macs_of[n] for n in layer.chain)
    return {"compression_ratio": params_before / m.params, "speedup": macs_before / m.macs}


# -- weights ---------------------------------------------------------------------------------------


def original_weight(context: MethodContext, name: str) -> tuple[Any, Any]:
    """The weight and bias (or ``None``) of layer ``name`` before the rewrite, as float64 tensors."""
    if context.before is None:
        raise SpecError(f"no weights of {name!r} before the decomposition (apply runs after its rewrite)")
    layer = context.before.get_submodule(name)
    bias = None if layer.bias is None else layer.bias.detach().double().cpu()
    return layer.weight.detach().double().cpu(), bias


def set_weights(model: nn.Module, name: str, weight: Any, bias: Any = None) -> None:
    """Write a factor (and bias) into node ``name`` of ``model``, cast to its dtype and device."""
    import torch

    layer = model.get_submodule(name)
    with torch.no_grad():
        layer.weight.copy_(weight.reshape(layer.weight.shape).to(layer.weight))
        if bias is not None:
            layer.bias.copy_(bias.to(layer.bias))


def copy_unchanged(source_model: nn.Module, target: nn.Module) -> None:
    """Copy every tensor of ``source_model`` into ``target``'s of the same name and shape."""
    import torch

    old = source_model.state_dict()
    with torch.no_grad():
        for key, tensor in target.state_dict().items():
            if key in old and old[key].shape == tensor.shape:
                tensor.copy_(old[key])


def fine_tune(model: Any, settings: Any, context: MethodContext) -> None:
    """Every parameter trained ``settings.fine_tune_epochs`` passes over ``context.data``'s training
    split (SGD at ``fine_tune_lr``, cross-entropy), where data is given."""
    from types import SimpleNamespace

    from papers_plugins.compression.pruning import retrain, shuffled_batches, training_split

    if not settings.fine_tune_epochs or context.data is None:
        return
    images, labels = training_split(str(context.data), tuple(next(iter(context.flat.inputs.values()))))
    batches = shuffled_batches(images, labels, settings.batch_size)
    training = SimpleNamespace(
        retrain_lr=settings.fine_tune_lr, momentum=settings.momentum, weight_decay=settings.weight_decay
    )
    retrain(model, batches, list(model.parameters()), {}, training, context.device, settings.fine_tune_epochs)


# -- the small-scale reproductions (`papers check PAPER --run`) --------------------------------------


def decompose(
    model: Any, flat: FlatGraph, settings: Any, rewrite: Any, apply: Any, data: str | None = None
) -> tuple[Any, FlatGraph]:
    """``model`` (built from ``flat``, with weights) rewritten by ``rewrite`` and given its factors by
    ``apply`` at ``settings`` (no fine-tuning; ``data`` for a method that samples responses): a new
    model holding every other layer's weights, and its graph."""
    from papers.build import build
    from papers.registry import get_registry

    rewritten = rewrite(flat, settings)
    decomposed = build(rewritten, get_registry().catalogue).eval()
    copy_unchanged(model, decomposed)
    quiet = settings.model_copy(update={"fine_tune_epochs": 0})
    apply(decomposed, quiet, MethodContext(rewritten, data=data, before=model))
    return decomposed, rewritten


def proxy_run(
    variant_id: str,
    method: Any,
    *,
    epochs: int,
    fine_tune_epochs: int | None = None,
    limit: int | None = None,
    choose: Any = None,
) -> dict[str, Any]:
    """Train method variant ``variant_id``'s base on builtin:mnist5k (its recipe's SGD, ``epochs``
    passes, a fixed seed), decompose it with ``method`` at the variant's settings (or those
    ``choose(model, flat, settings)`` gives from the trained weights), fine-tune every parameter (the
    settings' epochs and rate, or ``fine_tune_epochs``), and give top-1 (percent) before, right after
    decomposing and after fine-tuning, the settings used, and parameters and multiply-adds before
    and after."""
    from types import SimpleNamespace

    from papers.measure import measure_graph
    from papers.registry import get_registry
    from papers_plugins.compression.pruning import PROXY_DATA, pretrained, proxy_setup, retrain, top1

    setup = proxy_setup(variant_id, method.name, limit=limit)
    with pretrained(setup, epochs) as (model, batches, before):
        settings = setup.settings if choose is None else choose(model, setup.flat, setup.settings)
        decomposed, rewritten = decompose(
            model, setup.flat, settings, method.rewrite, method.apply, PROXY_DATA
        )
        right_after = top1(decomposed, setup.test_images, setup.test_labels)
        training = SimpleNamespace(
            retrain_lr=settings.fine_tune_lr, momentum=settings.momentum, weight_decay=settings.weight_decay
        )
        passes = settings.fine_tune_epochs if fine_tune_epochs is None else fine_tune_epochs
        retrain(decomposed, batches, list(decomposed.parameters()), {}, training, "cpu", epochs=passes)
        after = top1(decomposed, setup.test_images, setup.test_labels)
    catalogue = get_registry().catalogue
    base, low = (
        measure_graph(setup.base, setup.flat, catalogue),
        measure_graph(variant_id, rewritten, catalogue),
    )
    return {
        "settings": settings,
        "params_before": base.params,
        "params_after": low.params,
        "macs_before": base.macs,
        "macs_after": low.macs,
        "before": before,
        "decomposed": right_after,
        "after": after,
    }


def proxy_check(variant_id: str, run: Any, describe: Any, proxy: str) -> Any:
    """A low-rank paper's proxy check on builtin:mnist5k: ``run()`` gives :func:`proxy_run`'s result,
    ``describe`` says what was decomposed; it passes within a point of the undecomposed model's top-1."""
    from papers_plugins.compression.pruning import mnist5k_check

    def runner(progress: bool) -> tuple[float, float]:
        measured = run()
        if progress:
            m = measured
            print(
                f"{variant_id}: {describe(m['settings'])}; parameters {m['params_before']:,} -> "
                f"{m['params_after']:,}, multiply-adds {m['macs_before']:,} -> {m['macs_after']:,}; top-1 "
                f"{m['before']}% before, {m['decomposed']}% decomposed, {m['after']}% fine-tuned"
            )
        return measured["after"], measured["before"] - 1.0

    return mnist5k_check(variant_id, runner, proxy)
