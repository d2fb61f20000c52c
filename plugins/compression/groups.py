"""Removing whole groups of a grouped convolution on the graph language: what SSS's group level
(Huang and Wang 2018, ResNeXt's groups) does with a group whose scaling factor reached zero.

A grouped convolution (``groups = G``, not depthwise) splits its input channels into ``G`` groups and
computes each group's output channels from its own input channels only. In a ResNeXt bottleneck the
input channels come from a 1×1 convolution (the *feeder*, through its batch norm and ReLU) and the
output channels go, through a batch norm and ReLU, to another 1×1 convolution (the *reader*). A factor
``λ_g`` on group ``g``'s output maps (after the last per-channel op, where the reader reads them) at
zero makes the group's filters, the feeder's filters that only it reads and the reader's input
columns for it useless: all three are cut, and ``groups`` becomes the number of groups left. Every
other factor is folded into the reader's columns for its group, so the thinner network computes what
the scaled one did. A grouped convolution whose input does not come from one ungrouped convolution
through per-channel ops, or whose output does not go to one through them, is listed with the reason
and kept.

Why not :mod:`.channels` or Torch-Pruning: the registry's channel removal refuses grouped
convolutions (their channels are tied to groups), and Torch-Pruning's result has no spec graph.
Hand-written: the walk that finds each grouped convolution's feeder and reader, the gate that scales
whole groups (:class:`GroupGates`, a forward hook) and the copying of the kept slices.

This module imports torch only inside the functions that need it.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from papers.errors import SpecError
from papers.graph import FlatGraph, source
from papers_plugins.compression.channels import NORM_OPS, PASS_OPS

if TYPE_CHECKING:
    import torch
    from torch import nn


@dataclass(frozen=True)
class GroupedLayer:
    """A grouped convolution whose groups are candidates for removal."""

    name: str
    groups: int
    width: int
    """Its output channels (``width // groups`` per group)."""
    feeder: str
    """The ungrouped convolution whose output channels its groups read."""
    feeder_width: int
    before: tuple[str, ...]
    """The per-channel nodes from the feeder to it (its batch norm, ReLU)."""
    after: tuple[str, ...]
    """The per-channel nodes from it to the reader; the last one's output carries the factors."""
    reader: str
    """The ungrouped convolution that reads its output channels."""
    reason: str | None = None

    @property
    def removable(self) -> bool:
        return self.reason is None

    @property
    def point(self) -> str:
        """The node whose output the factors scale (what the reader reads)."""
        return self.after[-1] if self.after else self.name


def grouped_layers(flat: FlatGraph) -> dict[str, GroupedLayer]:
    """Every grouped convolution of ``flat`` that is not depthwise, in the graph's order, with its
    feeder, reader and, where its groups cannot be removed, why."""
    nodes = {node.name: node for node in flat.nodes}
    readers: dict[str, list[str]] = {}
    for node in flat.nodes:
        for reference in node.inputs:
            readers.setdefault(source(reference), []).append(node.name)
    ends = set(flat.outputs.values()) | set(flat.features.values())
    found = {}
    for node in flat.nodes:
        groups = int(node.args.get("groups", 1)) if node.op == "conv2d" else 1
        width = int(node.args.get("out_channels", 0)) if node.op == "conv2d" else 0
        if groups <= 1 or groups == width:
            continue
        found[node.name] = _walk(node, nodes, readers, ends, groups, width)
    return found


def _per_channel(node: Any) -> bool:
    return node.module is None and (node.op in PASS_OPS or node.op in NORM_OPS)


def _ungrouped_conv(node: Any) -> bool:
    return node.op == "conv2d" and int(node.args.get("groups", 1)) == 1 and node.module is None


def _walk(
    node: Any, nodes: Mapping[str, Any], readers: Mapping[str, list], ends: set, groups: int, width: int
):
    def refused(why: str) -> GroupedLayer:
        return GroupedLayer(node.name, groups, width, "", 0, (), (), "", why)

    if node.module is not None or len(node.inputs) != 1 or width % groups:
        return refused("its module is shared, it has several inputs or its width is not whole groups")
    before: list[str] = []
    current = nodes.get(source(node.inputs[0]))
    while current is not None and _per_channel(current):
        if readers.get(current.name) != [before[0] if before else node.name] or current.name in ends:
            return refused(f"{current.name!r} before it is read by other nodes too")
        before.insert(0, current.name)
        current = nodes.get(source(current.inputs[0])) if len(current.inputs) == 1 else None
    if current is None or not _ungrouped_conv(current):
        return refused("its input does not come from an ungrouped convolution through per-channel ops")
    if readers.get(current.name) != [before[0] if before else node.name] or current.name in ends:
        return refused(f"its feeder {current.name!r} is read by other nodes too")
    feeder = current
    after: list[str] = []
    point = node.name
    while True:
        if point in ends or len(readers.get(point, [])) != 1:
            return refused(f"{point!r} after it is read by other nodes than one convolution")
        following = nodes[readers[point][0]]
        if _per_channel(following) and len(following.inputs) == 1:
            after.append(following.name)
            point = following.name
            continue
        if not _ungrouped_conv(following):
            return refused(
                f"its output reaches {following.op} {following.name!r}, not an ungrouped convolution"
            )
        feeder_width = int(feeder.args["out_channels"])
        if feeder_width % groups:
            return refused(f"its feeder {feeder.name!r} has {feeder_width} channels, not whole groups")
        return GroupedLayer(
            node.name, groups, width, feeder.name, feeder_width, tuple(before), tuple(after), following.name
        )


def chosen_grouped(flat: FlatGraph, names: Sequence[str], *, field: str) -> dict[str, GroupedLayer]:
    """The grouped convolutions ``names`` gives (empty: every removable one of ``flat``), checked: an
    unknown one or one whose groups cannot be removed is refused at ``field[i]`` naming it."""
    layers = grouped_layers(flat)
    if not names:
        chosen = {name: layer for name, layer in layers.items() if layer.removable}
        if not chosen:
            raise SpecError("the graph has no grouped convolution whose groups can be removed", field=field)
        return chosen
    for index, name in enumerate(names):
        layer = layers.get(name)
        if layer is None:
            close = difflib.get_close_matches(name, list(layers), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise SpecError(f"no grouped convolution {name!r}{hint}", field=f"{field}[{index}]")
        if layer.reason is not None:
            raise SpecError(
                f"the groups of {name!r} cannot be removed: {layer.reason}", field=f"{field}[{index}]"
            )
    return {name: layers[name] for name in names}


class GroupGates:
    """A factor per group on each grouped convolution's output maps (at :attr:`GroupedLayer.point`),
    applied by forward hooks on ``model`` until :meth:`close`; ``masks[name]`` holds layer ``name``'s
    ``groups`` factors (ones to begin with)."""

    def __init__(self, model: Any, layers: Mapping[str, GroupedLayer]) -> None:
        import torch

        device = next((p.device for p in model.parameters()), "cpu")
        self.masks: dict[str, torch.Tensor] = {
            name: torch.ones(layer.groups, device=device) for name, layer in layers.items()
        }
        self._handles = [
            model.get_submodule(layer.point).register_forward_hook(self._hook(name, layer.groups))
            for name, layer in layers.items()
        ]

    def _hook(self, name: str, groups: int) -> Any:
        def gate(module: Any, args: Any, output: torch.Tensor) -> torch.Tensor:
            n, c, *rest = output.shape
            scaled = output.reshape(n, groups, c // groups, *rest) * self.masks[name].view(
                1, groups, 1, *[1] * len(rest)
            )
            return scaled.reshape(output.shape)

        return gate

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> GroupGates:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def remove_groups(
    model: nn.Module, flat: FlatGraph, factors: Mapping[str, Sequence[float]]
) -> tuple[nn.Module, FlatGraph]:
    """``model`` (built from ``flat``) with each grouped convolution of ``factors`` (``{layer: one
    factor per group}``) scaled group by group: the groups whose factor is zero removed (their filters,
    the feeder's filters for them, the reader's columns for them; ``groups`` set to those left), every
    other factor folded into the reader's columns. A new model built from the thinner graph on
    ``model``'s device, in ``model``'s mode, and that graph. Refused (:class:`SpecError`): an unknown
    layer or one that cannot be thinned, a factor count that is not its groups, every group removed."""
    import torch

    from papers.build import build
    from papers.registry import get_registry

    layers = chosen_grouped(flat, list(factors), field="factors")
    rows: dict[str, torch.Tensor] = {}  # kept output channels (or per-channel entries), by node
    columns: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # the reader's kept inputs and their scale
    args: dict[str, dict[str, int]] = {}
    for name, layer in layers.items():
        values = torch.tensor([float(v) for v in factors[name]])
        if values.numel() != layer.groups:
            raise SpecError(f"layer {name!r}: {values.numel()} factors for its {layer.groups} groups")
        kept = values.nonzero().flatten()
        if kept.numel() == 0:
            raise SpecError(f"layer {name!r}: every one of its {layer.groups} groups would be removed")
        inner, outer = layer.feeder_width // layer.groups, layer.width // layer.groups
        feeding = (kept[:, None] * inner + torch.arange(inner)).flatten()
        giving = (kept[:, None] * outer + torch.arange(outer)).flatten()
        for node in (layer.feeder, *layer.before):
            rows[node] = feeding
        for node in (layer.name, *layer.after):
            rows[node] = giving
        columns[layer.reader] = (giving, values[kept].repeat_interleave(outer))
        args[layer.feeder] = {"out_channels": int(feeding.numel())}
        args[layer.name] = {"out_channels": int(giving.numel()), "groups": int(kept.numel())}
    nodes = tuple(replace(n, args={**n.args, **args[n.name]}) if n.name in args else n for n in flat.nodes)
    thinner = replace(flat, nodes=nodes)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    after = build(thinner, get_registry().catalogue, device=device)
    state = model.state_dict()
    new = {}
    for key, target in after.state_dict().items():
        node, _, _ = key.rpartition(".")
        value = state[key]
        if node in rows and value.dim() >= 1:
            value = value[rows[node].to(value.device)]
        if node in columns and key == f"{node}.weight":
            kept, scale = columns[node]
            shape = (1, -1) + (1,) * (value.dim() - 2)
            value = value[:, kept.to(value.device)] * scale.to(value).view(shape)
        if tuple(value.shape) != tuple(target.shape):
            raise ValueError(f"{key!r}: the kept groups give {list(value.shape)}, not {list(target.shape)}")
        new[key] = value
    after.load_state_dict(new, strict=True)
    after.train(model.training)
    return after, thinner


__all__ = ["GroupGates", "GroupedLayer", "chosen_grouped", "grouped_layers", "remove_groups"]
