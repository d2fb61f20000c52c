"""Removing whole residual blocks on the graph language: what SSS's block level (Huang and Wang 2018)
does with a block whose scaling factor reached zero.

A residual block computes ``y = g(F(x) + s(x))``: a branch ``F`` (convolutions, batch norms), a
shortcut ``s`` and an addition, maybe followed by an activation ``g`` inside the block. With a
factor ``λ`` on the branch's output (``λ·F(x)``, before the addition), ``λ = 0`` leaves
``y = g(s(x))``; where the shortcut is the identity that is ``g(x)``, so the branch's nodes and the
addition can go and the addition's readers read the block's input (:meth:`FlatGraph.bypass`); the
nodes after the addition (the block's ReLU) stay, so the smaller graph computes exactly what the
scaled one did. A block whose shortcut projects or subsamples (a 1×1 convolution, the option-A
shortcut) changes the shape of what it adds to, so it cannot become the identity: it is listed with
the reason and kept. A factor that is not zero is folded into the branch's last layer (a batch norm's
``γ`` and ``β``, a convolution's or linear layer's weight and bias are multiplied by it), so the
kept blocks compute ``λ·F(x)`` without the factor.

Why not Torch-Pruning: it removes channels, not layers, and its result has no spec graph (see
:mod:`.channels`). Hand-written: the walk that finds each block's addition, branch and shortcut in the
expanded graph (the graph language names block instances, :attr:`FlatGraph.blocks`, but not their
roles) and the folding of one scalar.

This module imports torch only inside the functions that need it.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from papers.errors import SpecError
from papers.graph import FlatGraph, source

if TYPE_CHECKING:
    from torch import nn

ADD_OPS = frozenset({"add", "add_"})
FOLD_OPS = frozenset({"batchnorm2d", "batchnorm1d", "frozen_batchnorm2d", "conv2d", "linear"})
"""The ops a branch may end in: their output is linear in their weight and bias, so ``λ`` folds in."""


@dataclass(frozen=True)
class ResidualBlock:
    """A block instance of the graph with one residual addition."""

    name: str
    """The block instance (``layer1.1``)."""
    add: str
    """Its addition node."""
    branch: str
    """The node whose output the addition adds (the branch's last layer, where the factor goes)."""
    shortcut: str
    """What the branch is added to: the block's input where the shortcut is the identity."""
    nodes: tuple[str, ...]
    """The branch's nodes, in the graph's order: removed, with the addition, when the block goes."""
    reason: str | None = None
    """Why the block cannot be removed (``None``: it can)."""

    @property
    def removable(self) -> bool:
        return self.reason is None


def residual_blocks(flat: FlatGraph) -> dict[str, ResidualBlock]:
    """Every block instance of ``flat`` with a residual addition (``add``/``add_`` of two tensors in
    the instance itself, not in a block nested in it), in the graph's order, each with its branch,
    its shortcut and, where it cannot be removed, why."""
    readers: dict[str, list[str]] = {}
    for node in flat.nodes:
        for reference in node.inputs:
            readers.setdefault(source(reference), []).append(node.name)
    found: dict[str, ResidualBlock] = {}
    for instance in flat.blocks:
        members = {
            node.name: node
            for node in flat.nodes
            if node.block is not None and (node.block == instance or node.block.startswith(instance + "."))
        }
        adds = [n for n in members.values() if n.op in ADD_OPS and n.block == instance and len(n.inputs) == 2]
        if not adds:
            continue
        found[instance] = _block(flat, instance, members, adds, readers)
    return found


def _block(
    flat: FlatGraph, instance: str, members: Mapping[str, Any], adds: list[Any], readers: Mapping[str, list]
) -> ResidualBlock:
    add = adds[0]
    inside = [reference for reference in add.inputs if source(reference) in members]
    first, second = add.inputs

    def refused(why: str, branch: str = first, shortcut: str = second) -> ResidualBlock:
        return ResidualBlock(instance, add.name, branch, shortcut, (), why)

    if len(adds) > 1:
        return refused(f"it has {len(adds)} residual additions")
    if len(inside) == 2:
        return refused(f"its shortcut {second!r} is not the identity (it projects or subsamples its input)")
    if len(inside) == 0:
        return refused("neither input of its addition is computed in the block")
    branch = inside[0]
    shortcut = next(reference for reference in add.inputs if reference != branch)
    if branch != source(branch):
        return refused(f"its addition reads an item {branch!r} of a node's output", branch, shortcut)
    nodes, pending = {branch}, [branch]
    while pending:
        for reference in members[pending.pop()].inputs:
            name = source(reference)
            if name in members and name not in nodes:
                nodes.add(name)
                pending.append(name)
    outputs = set(flat.outputs.values()) | set(flat.features.values())
    for name in sorted(nodes):
        outside = [reader for reader in readers.get(name, []) if reader not in nodes and reader != add.name]
        if outside or name in outputs:
            where = repr(outside[0]) if outside else "an output of the graph"
            return refused(f"its branch's node {name!r} is also read by {where}", branch, shortcut)
    last = members[branch]
    if last.op not in FOLD_OPS or last.module is not None:
        return refused(
            f"its branch ends in {last.op} {branch!r}, into which a factor cannot be folded", branch, shortcut
        )
    order = [node.name for node in flat.nodes if node.name in nodes]
    return ResidualBlock(instance, add.name, branch, shortcut, tuple(order))


def chosen_blocks(flat: FlatGraph, names: Sequence[str], *, field: str) -> list[str]:
    """The blocks ``names`` gives (empty: every removable block of ``flat``), checked: an unknown name
    or a block that cannot be removed is refused as a :class:`SpecError` at ``field[i]`` naming it."""
    blocks = residual_blocks(flat)
    if not names:
        chosen = [name for name, block in blocks.items() if block.removable]
        if not chosen:
            raise SpecError("the graph has no residual block whose shortcut is the identity", field=field)
        return chosen
    for index, name in enumerate(names):
        block = blocks.get(name)
        if block is None:
            close = difflib.get_close_matches(name, list(blocks), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise SpecError(f"no residual block {name!r}{hint}", field=f"{field}[{index}]")
        if block.reason is not None:
            raise SpecError(f"block {name!r} cannot be removed: {block.reason}", field=f"{field}[{index}]")
    if len(set(names)) != len(names):
        raise SpecError("a block is named twice", field=field)
    return list(names)


def remove_blocks(
    model: nn.Module, flat: FlatGraph, factors: Mapping[str, float]
) -> tuple[nn.Module, FlatGraph]:
    """``model`` (built from ``flat``) with each block of ``factors`` (``{block: λ}``) scaled by its
    factor: the blocks whose factor is zero removed (their branch and addition dropped, the addition's
    readers reading the block's input), every other factor folded into its branch's last layer. A new
    model built from the smaller graph on ``model``'s device, in ``model``'s mode, and that graph;
    ``model`` is left as it is. A block that is unknown or cannot be removed is refused
    (:class:`SpecError`)."""
    import torch

    from papers.build import build
    from papers.registry import get_registry

    chosen = chosen_blocks(flat, list(factors), field="factors")
    blocks = residual_blocks(flat)
    state = {key: tensor.detach().clone() for key, tensor in model.state_dict().items()}
    replaced: dict[str, str | None] = {}
    for name in chosen:
        block, factor = blocks[name], float(factors[name])
        if factor == 0.0:
            replaced.update(dict.fromkeys(block.nodes))
            replaced[block.add] = block.shortcut
            continue
        weight = state.get(f"{block.branch}.weight")
        if weight is None:
            raise SpecError(
                f"block {name!r}: its branch's last layer {block.branch!r} has no weight to scale"
            )
        for key in (f"{block.branch}.weight", f"{block.branch}.bias"):
            if key in state:
                state[key] = state[key] * factor
    smaller = flat.bypass(replaced)
    # A node that read a removed addition now reads the block's input, which other nodes may read too:
    # an in-place activation there would change their input (it only changed the addition's output).
    bypassed = {name for name, target in replaced.items() if target is not None}
    moved = {node.name for node in flat.nodes if bypassed.intersection(map(source, node.inputs))}
    nodes = tuple(
        replace(node, args={**node.args, "inplace": False})
        if node.name in moved and node.args.get("inplace")
        else node
        for node in smaller.nodes
    )
    smaller = replace(smaller, nodes=nodes)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    after = build(smaller, get_registry().catalogue, device=device)
    after.load_state_dict({key: state[key] for key in after.state_dict()}, strict=True)
    after.train(model.training)
    return after, smaller


__all__ = ["ResidualBlock", "chosen_blocks", "remove_blocks", "residual_blocks"]
