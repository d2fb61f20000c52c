"""Structured channel removal on the graph language: what a filter- or channel-pruning method uses to
make a model smaller for real (a narrower dense model, not a mask).

Why the graph language and not Torch-Pruning's ``DependencyGraph``. A layer's width is a spec
parameter: a ``conv2d`` node gives ``out_channels`` only, a ``linear`` node ``out_features`` only,
and every input width (a convolution's ``in_channels``, a batch norm's ``num_features``, a linear
layer's ``in_features`` after a flatten) is inferred when the graph is built. Removing channels is
therefore a rewrite of a few node arguments (:func:`narrow`), and its result is an ordinary
expanded graph: ``papers build`` builds it, ``papers check`` measures its parameters and
multiply-adds on the meta device, ``papers compress`` writes it and ``load_compressed`` rebuilds it
from its widths, ``papers export`` exports it, like any variant. Torch-Pruning edits ``nn.Module``
objects in place; what it returns has no spec graph, so none of that would see it, and its
dependency analysis would have to be mapped back onto the graph's nodes anyway. What the graph
does not give is which nodes read a layer's channels; that dependency walk (:func:`channel_layers`)
and the copying of the kept slices (:func:`copy_kept`) are hand-written here, on shapes from the
builder's meta-device pass. ``benchmarks/structured_pruning.py`` removes the same channels of a
ResNet-50 with this module and with Torch-Pruning, and checks that both give the same shapes and
outputs.

How a layer's channels travel (:func:`channel_layers`):

- through ops that act on each channel alone and hold no per-channel parameter (``relu``,
  ``maxpool2d``, ``adaptive_avgpool2d``, ``dropout``, ``identity``, ...): *pass*;
- into a per-channel layer whose own width follows its input (``batchnorm2d``/``1d``,
  ``frozen_batchnorm2d``, and a depthwise ``conv2d`` with ``groups == in_channels ==
  out_channels``): *follow* (its parameters are cut with the channels; a depthwise convolution's
  ``out_channels`` and ``groups`` are rewritten too);
- into a layer that mixes channels (``conv2d`` with one group, ``conv_transpose2d`` with one group,
  ``linear``): *input*, where the walk ends (the layer's input dimension is cut);
- through a ``flatten`` of ``[N, C, H, W]``: each channel becomes a block of ``H×W`` features, so a
  ``linear`` layer after it loses each removed channel's block of columns;
- through a ``cat`` along the channels: the channels are shifted by the widths of the inputs before
  it (an Inception module's branches).

A layer is *not removable* (``ChannelLayer.reason`` says why) when its channels reach a residual
addition or another elementwise combination (``add``, ``add_``, ``mul``: the other operand's
channels would have to go too), a graph output (the logits), a grouped convolution that is not
depthwise, a layer that mixes neighbouring channels (``lrn``, ``group_norm``, ``softmax``), a
module shared by several nodes, or any op this walk does not know (a plugin's op such as ResNet's
option-A shortcut). A grouped convolution that is not depthwise is not a removable layer itself;
a depthwise convolution is not listed, since its channels are its input's. Feature stages are not
outputs: a narrowed network's stage widths change with it.

This module imports torch only inside the functions that need it (the plugin entry modules import
it lazily, as they do the methods).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

from papers.errors import SpecError
from papers.graph import FlatGraph

if TYPE_CHECKING:
    import torch
    from torch import nn

PASS_OPS = frozenset(
    {
        "relu",
        "relu6",
        "leaky_relu",
        "sigmoid",
        "tanh",
        "maxpool2d",
        "avgpool2d",
        "adaptive_avgpool2d",
        "adaptive_maxpool2d",
        "dropout",
        "dropout2d",
        "identity",
        "upsample",
        "scale",
    }
)
"""Ops that act on each channel alone and hold no per-channel parameters: channels pass through."""
NORM_OPS = frozenset({"batchnorm2d", "batchnorm1d", "frozen_batchnorm2d"})
"""Per-channel layers whose width follows their input: their parameters and statistics are cut."""
COMBINE_OPS = {"add": "residual addition", "add_": "residual addition", "mul": "elementwise product"}
MIXING_OPS = {
    "lrn": "mixes neighbouring channels",
    "group_norm": "normalises groups of channels together",
    "softmax": "normalises across channels",
}
SOURCE_OPS = {"conv2d": "out_channels", "linear": "out_features"}
"""The layers whose output channels can be removed, and the argument that gives their width."""

Role = Literal["pass", "follow", "input", "size"]


@dataclass(frozen=True)
class Consumer:
    """A node that reads a layer's channels (directly or through pass-through nodes).

    ``role``: ``"pass"`` (no parameters, the channels go on), ``"follow"`` (per-channel parameters cut
    with the channels, the channels go on: batch norm, depthwise convolution), ``"input"`` (the node's
    input dimension is cut and the walk ends: the next convolution, a linear layer), ``"size"`` (the
    node reads only the tensor's spatial size: the second input of ``crop_as``/``resize_as``).

    The layer's channel ``c`` is, in this node's input, the features ``offset + c * block + j`` for
    ``j < block``: ``offset`` counts the channels (features, after a flatten) of the inputs a ``cat``
    put before it, ``block`` is ``H×W`` after a flatten and 1 otherwise.
    """

    name: str
    op: str
    role: Role
    offset: int = 0
    block: int = 1


@dataclass(frozen=True)
class ChannelLayer:
    """A convolution or linear layer whose output channels are candidates for removal."""

    name: str
    op: str
    """``conv2d`` or ``linear``."""
    width: int
    """Its output channels (``out_channels``, ``out_features``) in the graph as it is."""
    consumers: tuple[Consumer, ...]
    """Every node its channels reach, in the graph's order, up to where the walk ends or was refused."""
    reason: str | None = None
    """Why its channels cannot be removed (``None``: they can), e.g. "its output reaches the residual
    addition 'layer1.0.add'"."""

    @property
    def removable(self) -> bool:
        return self.reason is None

    @property
    def followers(self) -> tuple[Consumer, ...]:
        """The per-channel layers cut with it (its batch norm; a depthwise convolution)."""
        return tuple(c for c in self.consumers if c.role == "follow")

    @property
    def next_layers(self) -> tuple[Consumer, ...]:
        """The layers whose input dimension is cut (the next convolutions, a linear layer)."""
        return tuple(c for c in self.consumers if c.role == "input")


# -- the analysis -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Graph:
    """What the walk needs of a graph: its nodes, who reads each tensor, shapes and modules (meta)."""

    flat: FlatGraph
    users: Mapping[str, tuple[tuple[str, int], ...]]
    shapes: Mapping[str, tuple[int, ...]]
    modules: Mapping[str, Any]
    shared: frozenset[str]
    nodes: Mapping[str, Any]


_ANALYSED: dict[str, tuple[_Graph, dict[str, ChannelLayer]]] = {}
_ANALYSED_LIMIT = 16


def channel_layers(flat: FlatGraph) -> dict[str, ChannelLayer]:
    """The convolutions and linear layers of ``flat`` whose output channels are candidates for
    removal, by node name, in the graph's order: each with its width, the nodes its channels reach
    (:class:`Consumer`) and, where they cannot be removed, why (``reason``).

    Listed: every ``conv2d`` with one group (a grouped one too, refused) and every ``linear`` layer
    on a 2-D input; not listed: depthwise convolutions (their channels are their input's, cut with
    it). The graph is traced once on the meta device (no weights); results are kept per graph."""
    return dict(_analyse(flat)[1])


def _analyse(flat: FlatGraph) -> tuple[_Graph, dict[str, ChannelLayer]]:
    from papers.build import trace
    from papers.measure import graph_key
    from papers.registry import get_registry

    catalogue = get_registry().catalogue
    key = graph_key(flat, catalogue)
    if key in _ANALYSED:
        return _ANALYSED[key]
    traced = trace(flat, catalogue)
    users: dict[str, list[tuple[str, int]]] = {}
    for node in flat.nodes:
        for index, name in enumerate(node.inputs):
            users.setdefault(name, []).append((node.name, index))
    shared = frozenset(node.module for node in flat.nodes if node.module is not None)
    graph = _Graph(
        flat,
        {name: tuple(found) for name, found in users.items()},
        traced.shapes,
        traced.modules,
        shared | frozenset(node.name for node in flat.nodes if node.module is not None),
        {node.name: node for node in flat.nodes},
    )
    layers: dict[str, ChannelLayer] = {}
    for node in flat.nodes:
        if node.op not in SOURCE_OPS:
            continue
        module = graph.modules.get(node.name)
        if node.op == "conv2d" and module is not None and _depthwise(module):
            continue  # its channels are its input's
        if node.op == "linear" and len(graph.shapes[node.name]) != 2:
            continue  # a linear layer on tokens: its channels are the last dimension, not followed here
        layers[node.name] = _walk(graph, node.name, node.op)
    if len(_ANALYSED) >= _ANALYSED_LIMIT:
        _ANALYSED.pop(next(iter(_ANALYSED)))
    _ANALYSED[key] = (graph, layers)
    return graph, layers


def _depthwise(module: Any) -> bool:
    return module.groups > 1 and module.groups == module.in_channels == module.out_channels


def _walk(graph: _Graph, name: str, op: str) -> ChannelLayer:
    """Follow ``name``'s output channels to every node that reads them."""
    module = graph.modules[name]
    width = module.out_channels if op == "conv2d" else module.out_features

    def refused(why: str, found: list[Consumer]) -> ChannelLayer:
        return ChannelLayer(name, op, width, tuple(found), why)

    if name in graph.shared:
        return refused("its module is shared by several nodes", [])
    if op == "conv2d" and module.groups > 1:
        return refused(f"a grouped convolution (groups={module.groups}): its channels are tied to groups", [])
    found: list[Consumer] = []
    pending: list[tuple[str, int, int]] = [(name, 0, 1)]  # tensor, offset, block
    while pending:
        tensor, offset, block = pending.pop(0)
        outputs = [key for key, target in graph.flat.outputs.items() if target == tensor]
        if outputs:
            return refused(f"its output reaches the graph output {outputs[0]!r} (node {tensor!r})", found)
        for user, index in graph.users.get(tensor, ()):
            node = graph.nodes[user]
            shape = graph.shapes[tensor]
            where = f"{node.op} {user!r}"
            if user in graph.shared:
                return refused(f"its output reaches {where}, whose module is shared", found)
            if node.op in COMBINE_OPS:
                return refused(f"its output reaches the {COMBINE_OPS[node.op]} {user!r}", found)
            if node.op in MIXING_OPS:
                return refused(f"its output reaches {where}, which {MIXING_OPS[node.op]}", found)
            step = _step(graph, node, index, shape, offset, block)
            if isinstance(step, str):
                return refused(f"its output reaches {where}, {step}", found)
            role, offset_after, block_after = step
            found.append(Consumer(user, node.op, role, offset, block))
            if role in ("pass", "follow"):
                pending.append((user, offset_after, block_after))
    order = {node.name: i for i, node in enumerate(graph.flat.nodes)}
    found.sort(key=lambda c: order[c.name])
    return ChannelLayer(name, op, width, tuple(found))


def _step(
    graph: _Graph, node: Any, index: int, shape: tuple[int, ...], offset: int, block: int
) -> tuple[Role, int, int] | str:
    """What ``node`` (reading the channels as its input ``index``, of ``shape``) does with them: its
    role and where the channels are in its output; or, as a string, why the walk stops there."""
    op, args = node.op, node.args
    if node.module is not None:
        return "which calls another node's module"
    if op in PASS_OPS:
        if op == "maxpool2d" and args.get("return_indices"):
            return "which returns pooling indices"
        return ("pass", offset, block)
    if op in NORM_OPS:
        return ("follow", offset, block)
    if op in ("crop_as", "resize_as"):
        return ("pass", offset, block) if index == 0 else ("size", offset, block)
    if op == "pad":
        spatial = len(args.get("pad", ())) <= 2 * (len(shape) - 2)
        return ("pass", offset, block) if spatial else "which pads the channels"
    if op == "mean":
        dims = args.get("dim", ())
        dims = (dims,) if isinstance(dims, int) else tuple(dims)
        if dims and all(d % len(shape) >= 2 for d in dims):
            return ("pass", offset, block)
        return "which averages over the channels"
    if op == "flatten":
        start, end = args.get("start_dim", 0), args.get("end_dim", -1)
        if start == 1 and end in (-1, len(shape) - 1) and len(shape) in (2, 4):
            spatial = shape[2] * shape[3] if len(shape) == 4 else 1
            return ("pass", offset * spatial, block * spatial)
        return "which flattens other dimensions than [C, H, W]"
    if op == "cat":
        dim = args.get("dim", 0)
        if dim % len(shape) != 1:
            return "which concatenates along another dimension than the channels"
        before = sum(graph.shapes[name][1] for name in node.inputs[:index])
        return ("pass", offset + before, block)
    module = graph.modules.get(node.name)
    if op == "conv2d":
        if _depthwise(module):
            return ("follow", offset, block) if block == 1 else "a depthwise convolution after a flatten"
        if module.groups > 1:
            return f"a grouped convolution (groups={module.groups})"
        return ("input", offset, block)
    if op == "conv_transpose2d":
        return ("input", offset, block) if module.groups == 1 else "a grouped transposed convolution"
    if op == "linear":
        if len(shape) != 2:
            return "a linear layer on a tensor of more than two dimensions"
        return ("input", offset, block)
    return "whose channels this module does not follow"


# -- the static rewrite ------------------------------------------------------------------------------


def narrow(flat: FlatGraph, widths: Mapping[str, int], *, field: str | None = None) -> FlatGraph:
    """``flat`` with each named layer's output channels set to ``widths[name]`` (``out_channels`` of a
    convolution, ``out_features`` of a linear layer); a depthwise convolution its channels reach gets
    its new width and groups. Every input width is inferred when the new graph is built.

    Refused, as one :class:`~papers.errors.SpecError` at ``field`` naming the layer: an unknown layer
    (or one that is not a convolution or linear layer), a width below 1 (every channel removed), a
    width above the layer's, and a layer whose channels cannot be removed (its ``reason``: a residual
    addition, a graph output, ...). A width equal to the layer's leaves it as it is.

    Inside a method's ``rewrite`` leave ``field`` out (or ``None``): the refusal is then located at
    the method's step (``variants[0].methods[0]``) in the spec, as ``papers build``/``compress``
    print it; a field given here is printed as it is, without the step's path."""
    _, layers = _analyse(flat)
    for name, width in widths.items():
        layer = layers.get(name)
        if layer is None:
            raise SpecError(_unknown(name, layers), field=field)
        if type(width) is not int:
            raise SpecError(f"layer {name!r}: width {width!r} is not a whole number of channels", field=field)
        if width < 1:
            raise SpecError(
                f"layer {name!r}: width {width} removes every one of its {layer.width} channels", field=field
            )
        if width > layer.width:
            raise SpecError(f"layer {name!r}: width {width} is above its {layer.width} channels", field=field)
        if width < layer.width and layer.reason is not None:
            raise SpecError(f"layer {name!r}: its channels cannot be removed: {layer.reason}", field=field)
    removed: dict[str, int] = {}
    for name, width in widths.items():
        for consumer in layers[name].followers:
            if consumer.op == "conv2d":  # depthwise: its width follows its input's
                removed[consumer.name] = removed.get(consumer.name, 0) + layers[name].width - width
    nodes = []
    for node in flat.nodes:
        if node.name in widths and widths[node.name] != layers[node.name].width:
            argument = SOURCE_OPS[node.op]
            node = replace(node, args={**node.args, argument: widths[node.name]})
        elif removed.get(node.name):
            graph, _ = _analyse(flat)
            channels = graph.modules[node.name].out_channels - removed[node.name]
            node = replace(node, args={**node.args, "out_channels": channels, "groups": channels})
        nodes.append(node)
    return replace(flat, nodes=tuple(nodes))


def _unknown(name: str, layers: Mapping[str, ChannelLayer]) -> str:
    import difflib

    close = difflib.get_close_matches(name, list(layers), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return f"no layer {name!r} whose channels can be removed (a convolution or linear layer){hint}"


def widths_of(flat: FlatGraph) -> dict[str, int]:
    """Each removable layer's width in ``flat`` (what :func:`narrow` takes), by node name."""
    return {name: layer.width for name, layer in _analyse(flat)[1].items() if layer.removable}


# -- copying the kept weights ------------------------------------------------------------------------


def check_kept(
    flat: FlatGraph, kept: Mapping[str, Sequence[int]], *, field: str | None = None
) -> dict[str, list[int]]:
    """``kept`` (each layer's kept output channels, by index) checked against ``flat`` and sorted:
    refused as :func:`narrow` refuses widths, and an index out of range or given twice."""
    _, layers = _analyse(flat)
    checked = {}
    for name, indices in kept.items():
        layer = layers.get(name)
        if layer is None:
            raise SpecError(_unknown(name, layers), field=field)
        chosen = sorted(int(i) for i in indices)
        if len(set(chosen)) != len(chosen):
            raise SpecError(f"layer {name!r}: a kept channel is given twice", field=field)
        if chosen and not 0 <= chosen[0] <= chosen[-1] < layer.width:
            raise SpecError(
                f"layer {name!r}: kept channel {chosen[-1] if chosen[-1] >= layer.width else chosen[0]} "
                f"is not one of its {layer.width}",
                field=field,
            )
        checked[name] = chosen
    narrow(flat, {name: len(indices) for name, indices in checked.items()}, field=field)
    return checked


def copy_kept(
    before: nn.Module,
    after: nn.Module,
    flat_before: FlatGraph,
    kept: Mapping[str, Sequence[int]],
) -> None:
    """Copy into ``after`` (built from ``narrow(flat_before, {name: len(kept[name])})``) the weights
    of ``before`` (built from ``flat_before``) that the kept channels keep.

    ``kept``: each narrowed layer's kept output channels, as indices into its channels in
    ``flat_before`` (any order; they are kept in ascending order). Copied: the kept rows of each
    narrowed layer's weight and bias; the kept entries of its followers (a batch norm's weight, bias,
    running mean and variance; a depthwise convolution's filters); the kept input columns of the
    layers that read them (the next convolution's input channels, a linear layer's block of H×W
    features per channel after a flatten; the offsets a concatenation adds). Every other tensor is
    copied as it is. Raises :class:`SpecError` on a plan :func:`narrow` refuses, and
    ``ValueError`` where ``after`` does not have the narrowed shapes."""
    import torch

    kept = check_kept(flat_before, kept)
    graph, layers = _analyse(flat_before)
    outputs: dict[str, torch.Tensor] = {}  # kept output channels, by layer
    inputs: dict[str, torch.Tensor] = {}  # kept input features (follow: channels), by node
    cut: dict[str, list[tuple[int, int, int, list[int]]]] = {}
    for name, indices in kept.items():
        outputs[name] = torch.tensor(indices, dtype=torch.long)
        removed = sorted(set(range(layers[name].width)) - set(indices))
        for consumer in layers[name].consumers:
            if consumer.role in ("follow", "input"):
                cut.setdefault(consumer.name, []).append(
                    (consumer.offset, consumer.block, layers[name].width, removed)
                )
    for name, pieces in cut.items():
        module = graph.modules[name]
        total = _input_width(module)
        keep = torch.ones(total, dtype=torch.bool)
        for offset, block, _, removed in pieces:
            for channel in removed:
                start = offset + channel * block
                keep[start : start + block] = False
        inputs[name] = torch.nonzero(keep).flatten()
    before_state = before.state_dict()
    with torch.no_grad():
        for key, target in after.state_dict().items():
            node, _, tensor_name = key.rpartition(".")
            source = before_state.get(key)
            if source is None:
                raise ValueError(f"{key!r} of the narrowed model is not in the model before")
            value = _cut(graph, node, tensor_name, source, outputs.get(node), inputs.get(node))
            if tuple(value.shape) != tuple(target.shape):
                raise ValueError(
                    f"{key!r}: the kept channels give {list(value.shape)}, the narrowed model has "
                    f"{list(target.shape)} (was it built from narrow() of these widths?)"
                )
            target.copy_(value)


def _input_width(module: Any) -> int:
    for attribute in ("in_channels", "in_features", "num_features"):
        if hasattr(module, attribute):
            return int(getattr(module, attribute))
    weight = getattr(module, "weight", None)  # torchvision's FrozenBatchNorm2d: buffers only
    if weight is not None and weight.dim() == 1:
        return int(weight.shape[0])
    raise ValueError(f"{type(module).__name__} has no input width")


def _cut(
    graph: _Graph,
    node: str,
    name: str,
    tensor: torch.Tensor,
    rows: torch.Tensor | None,
    columns: torch.Tensor | None,
) -> torch.Tensor:
    """``tensor`` (parameter or buffer ``name`` of node ``node``) cut to the kept output ``rows`` and
    input ``columns`` (``None``: all)."""
    if rows is None and columns is None:
        return tensor
    op = graph.nodes[node].op
    module = graph.modules[node]
    if op in NORM_OPS:
        return tensor[columns] if tensor.dim() == 1 and columns is not None else tensor
    if op == "conv2d" and _depthwise(module):
        return tensor[columns] if columns is not None else tensor
    if op == "conv_transpose2d":  # weight [in, out, kH, kW]: only its input channels are cut
        return tensor[columns] if name == "weight" and columns is not None else tensor
    if rows is not None:
        tensor = tensor[rows]
    if columns is not None and name == "weight":
        tensor = tensor[:, columns]
    return tensor


def remove_channels(
    model: nn.Module, flat: FlatGraph, kept: Mapping[str, Sequence[int]]
) -> tuple[nn.Module, FlatGraph]:
    """``model`` (built from ``flat``) with only the ``kept`` output channels of each named layer: a
    new, narrower dense model built from ``narrow(flat, ...)`` on ``model``'s device, in ``model``'s
    mode, holding the kept weights (:func:`copy_kept`), and its graph. ``model`` is left as it is."""
    import torch

    from papers.build import build
    from papers.registry import get_registry

    checked = check_kept(flat, kept)
    narrowed = narrow(flat, {name: len(indices) for name, indices in checked.items()})
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    catalogue = get_registry().catalogue
    after = build(narrowed, catalogue, device="meta")
    stored = after.state_dict().keys()
    if all(name in stored for name, _ in after.named_buffers()):
        after = after.to_empty(device=device)  # every tensor is copied below: none initialised first
    else:  # a buffer outside the state dict keeps the value its module gives it
        after = build(narrowed, catalogue, device=device)
    copy_kept(model, after, flat, checked)
    after.train(model.training)
    return after, narrowed


def top_channels(scores: torch.Tensor, count: int) -> list[int]:
    """The indices of the ``count`` highest of a layer's channel ``scores``, ascending (ties broken by
    position, as ``torch.topk`` does): what a criterion's ranking gives :func:`copy_kept`."""
    import torch

    if not 1 <= count <= scores.numel():
        raise ValueError(f"keeping {count} of {scores.numel()} channels")
    return sorted(int(i) for i in torch.topk(scores.detach().flatten(), count).indices)


def proxy_runner(
    proxy: Callable[[str], dict[str, Any]],
    variant_id: str,
    unit: str,
    extra: Callable[[dict[str, Any]], Sequence[str]] | None = None,
) -> Callable[[bool], tuple[float, float]]:
    """The runner a structured-pruning paper's proxy check calls: run ``proxy(variant_id)``, print
    (when ``progress``) each pruned layer's width before → after, named ``unit``, the multiply-adds
    before → after and the seconds, then the lines ``extra`` makes of the measurements; give top-1
    after and the bar it must reach (top-1 before less 1 point)."""

    def run(progress: bool) -> tuple[float, float]:
        measured = proxy(variant_id)
        if progress:
            widths = ", ".join(f"{name} {was}→{now}" for name, (was, now) in measured["widths"].items())
            macs, took = measured["macs"], measured["seconds"]
            print(f"  {unit} {widths}; multiply-adds {macs[0]:,} → {macs[1]:,} ({took} s)")
            for line in extra(measured) if extra else ():
                print(line)
        return measured["after"], measured["before"] - 1.0

    return run


def proxy_result(
    setup: Any,
    variant_id: str,
    flat: FlatGraph,
    kept: Mapping[str, Sequence[int]],
    began: float,
    **measured: Any,
) -> dict[str, Any]:
    """What a structured-pruning proxy gives beside its own figures (``measured``: top-1 before and
    after, ...): each pruned layer's width before and after (``kept``: its kept channels), the
    multiply-adds of the base's graph and of the pruned one (``flat``), and the seconds since ``began``
    (``time.perf_counter``)."""
    import time

    from papers.measure import measure_graph
    from papers.registry import get_registry

    def width(name: str) -> int:
        args = setup.flat.node(name).args
        return args.get("out_channels") or args["out_features"]

    catalogue = get_registry().catalogue
    return {
        **measured,
        "widths": {name: (width(name), len(k)) for name, k in kept.items()},
        "macs": (
            measure_graph(setup.base, setup.flat, catalogue).macs,
            measure_graph(variant_id, flat, catalogue).macs,
        ),
        "seconds": round(time.perf_counter() - began, 1),
    }


__all__ = [
    "ChannelLayer",
    "Consumer",
    "channel_layers",
    "check_kept",
    "copy_kept",
    "narrow",
    "proxy_result",
    "proxy_runner",
    "remove_channels",
    "top_channels",
    "widths_of",
]
