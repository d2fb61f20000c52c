"""What changes between two variants: their expanded graphs node by node, and their cost per stage.

Nodes are matched by name first: a node of both graphs whose op or arguments differ is *changed*.
The two graphs' sequences of ops (in topological order) are then aligned by ``difflib``, and two
aligned nodes that have no partner by name are paired as *renamed* (SENet's ``layer0.conv1`` and
ResNet's ``conv1``) rather than reported as one removal and one addition; what still has no partner
is *added* or *removed*. Costs come from the measurements (meta device): each node belongs to the
feature stage whose node is the first one at or after it in topological order, the nodes after the
last stage to the ``head``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from papers.graph import FlatGraph, FlatNode

HEAD = "head"
"""The stage of the nodes after a graph's last feature stage (the classifier)."""
WHOLE = "network"
"""The stage of every node of a graph that names no feature stages."""


@dataclass(frozen=True)
class NodeChange:
    """A node of both graphs (by name, or by position where ``name_b`` differs) that differs."""

    name: str
    op: str
    args: dict[str, list[Any]]
    """Each argument that differs: ``[value in a, value in b]`` (``None`` where it is absent)."""
    name_b: str | None = None
    """The node's name in ``b`` when it is matched by position (renamed); ``None``: the same name."""
    op_b: str | None = None
    """The op in ``b`` where it differs."""
    inputs: list[list[str]] | None = None
    """``[inputs in a, inputs in b]`` where they differ (``a``'s names read as their partners in ``b``)."""


@dataclass(frozen=True)
class NodeInfo:
    """A node of one graph only."""

    name: str
    op: str
    args: dict[str, Any]


@dataclass(frozen=True)
class StageCost:
    stage: str
    params_a: int
    params_b: int
    macs_a: int
    macs_b: int


@dataclass(frozen=True)
class VariantDiff:
    """The difference from variant ``a`` to variant ``b``."""

    a: str
    b: str
    changed: list[NodeChange]
    renamed: list[NodeChange]
    """Matched by position: the same op at the same place under another name (arguments may differ)."""
    added: list[NodeInfo]
    """In ``b`` only."""
    removed: list[NodeInfo]
    """In ``a`` only."""
    stages: list[StageCost]
    total: StageCost

    def as_dict(self) -> dict[str, Any]:
        return _plain(asdict(self))

    def node_rows(self) -> list[tuple[str, str, str, str]]:
        """One row per node that differs, as the command line and the site show it: a mark (``~``
        changed, ``→`` renamed, ``−`` only in ``a``, ``+`` only in ``b``), the node, its op and what
        differs."""
        from papers.text import plain

        def shown(value: Any) -> str:
            return "(unset)" if value is None else plain(value)

        def arguments(args: dict[str, list[Any]]) -> list[str]:
            return [f"{key}: {shown(before)} → {shown(after)}" for key, (before, after) in args.items()]

        rows = []
        for change in self.changed:
            what = arguments(change.args)
            if change.op_b is not None:
                what.insert(0, f"op: {change.op} → {change.op_b}")
            if change.inputs is not None:
                what.append(f"inputs: {plain(change.inputs[0])} → {plain(change.inputs[1])}")
            rows.append(("~", change.name, change.op, "; ".join(what)))
        for change in self.renamed:
            what = [f"named {change.name_b} in {self.b}", *arguments(change.args)]
            rows.append(("→", change.name, change.op, "; ".join(what)))
        for mark, side, only in (("−", self.a, self.removed), ("+", self.b, self.added)):
            for node in only:
                rows.append(
                    (
                        mark,
                        node.name,
                        node.op,
                        f"only in {side}" + (f": {plain(node.args)}" if node.args else ""),
                    )
                )
        return rows


LIBRARY_ORIGINS_EXCLUDED = ("paper", "derived")
"""Origins of a paper's own variants; any other origin (``torchvision``, ``timm``) is a library's."""


def library_pairs(spec: Any, used: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The pairs ``(a, b)`` a paper's page shows the difference of, read from the variant ids.

    A library variant (its origin is neither the paper nor derived from it) against the paper's own
    variant whose id its id extends (``resnet50`` → ``resnet50.torchvision``, ``vgg11`` →
    ``vgg11_bn``); and each variant against the variant of a paper it ``uses`` whose id is the
    longest part of its own, not followed by a letter or digit (``resnet50`` → ``seresnet50``,
    ``resnet110`` → ``preact_resnet110``, not ``resnet20`` → ``preact_resnet200``).
    ``used`` maps the papers of ``spec.uses`` that are registered to their specs."""
    own = {v.id for v in spec.variants if _origin(v) in LIBRARY_ORIGINS_EXCLUDED}
    pairs: list[tuple[str, str]] = []
    for variant in spec.variants:
        if _origin(variant) not in LIBRARY_ORIGINS_EXCLUDED:
            bases = [
                b for b in own if variant.id[len(b) : len(b) + 1] in (".", "_") and variant.id.startswith(b)
            ]
            if bases:
                pairs.append((max(bases, key=len), variant.id))
                continue
        inside = [
            other.id
            for paper in spec.uses
            if paper in used
            for other in used[paper].variants
            if _origin(other) in LIBRARY_ORIGINS_EXCLUDED
            and other.id != variant.id
            and re.search(re.escape(other.id) + r"(?![0-9A-Za-z])", variant.id)
        ]
        if inside:
            pairs.append((max(inside, key=len), variant.id))
    return pairs


def _origin(variant: Any) -> str:
    return getattr(variant, "origin", None) or "paper"


def diff(a: str, b: str, **options: Any) -> VariantDiff:
    """What changes from variant ``a`` to variant ``b``: nodes changed, renamed, added and removed,
    and parameters and multiply-adds per feature stage and in total (``options`` go to both graphs)."""
    from papers.api import expand_variant, measure

    flat_a, flat_b = expand_variant(a, **options), expand_variant(b, **options)
    changed, renamed, added, removed = compare_graphs(flat_a, flat_b)
    cost_a, cost_b = _stage_costs(flat_a, measure(a, **options)), _stage_costs(flat_b, measure(b, **options))
    order = _merged(list(cost_a), list(cost_b))
    zero = (0, 0)
    stages = [
        StageCost(
            stage,
            cost_a.get(stage, zero)[0],
            cost_b.get(stage, zero)[0],
            cost_a.get(stage, zero)[1],
            cost_b.get(stage, zero)[1],
        )
        for stage in order
    ]
    total = StageCost(
        "total",
        sum(s.params_a for s in stages),
        sum(s.params_b for s in stages),
        sum(s.macs_a for s in stages),
        sum(s.macs_b for s in stages),
    )
    return VariantDiff(a, b, changed, renamed, added, removed, stages, total)


def compare_graphs(
    a: FlatGraph, b: FlatGraph
) -> tuple[list[NodeChange], list[NodeChange], list[NodeInfo], list[NodeInfo]]:
    """Changed, renamed, added (``b`` only) and removed (``a`` only) nodes of two expanded graphs."""
    nodes_b = {node.name: node for node in b.nodes}
    names_a = {node.name for node in a.nodes}
    only_a = [node for node in a.nodes if node.name not in nodes_b]
    only_b = [node for node in b.nodes if node.name not in names_a]
    partner: dict[str, str] = {}  # a's name -> b's name, for the nodes matched by position
    unmatched_a, unmatched_b = {n.name for n in only_a}, {n.name for n in only_b}
    ops_a, ops_b = [n.op for n in a.nodes], [n.op for n in b.nodes]
    for block in difflib.SequenceMatcher(None, ops_a, ops_b, autojunk=False).get_matching_blocks():
        for offset in range(block.size):
            name_a, name_b = a.nodes[block.a + offset].name, b.nodes[block.b + offset].name
            if name_a in unmatched_a and name_b in unmatched_b:
                partner[name_a] = name_b
    paired_b = set(partner.values())

    changed: list[NodeChange] = []
    renamed: list[NodeChange] = []
    for node in a.nodes:
        if node.name in nodes_b:
            change = _change(node, nodes_b[node.name], partner)
            if change is not None:
                changed.append(change)
        elif node.name in partner:
            other = nodes_b[partner[node.name]]
            change = _change(node, other, partner, always=True)
            assert change is not None
            renamed.append(change)
    removed = [_info(node) for node in only_a if node.name not in partner]
    added = [_info(node) for node in only_b if node.name not in paired_b]
    return changed, renamed, added, removed


def _change(
    node: FlatNode, other: FlatNode, partner: Mapping[str, str], *, always: bool = False
) -> NodeChange | None:
    args = {
        key: [node.args.get(key), other.args.get(key)]
        for key in sorted({*node.args, *other.args})
        if node.args.get(key) != other.args.get(key)
    }
    inputs_a = [_as_b(name, partner) for name in node.inputs]
    inputs = [list(node.inputs), list(other.inputs)] if inputs_a != list(other.inputs) else None
    op_b = other.op if other.op != node.op else None
    if not (always or args or inputs or op_b):
        return None
    name_b = other.name if other.name != node.name else None
    return NodeChange(node.name, node.op, args, name_b, op_b, inputs)


def _as_b(reference: str, partner: Mapping[str, str]) -> str:
    name, colon, item = reference.partition(":")
    return partner.get(name, name) + colon + item


def _info(node: FlatNode) -> NodeInfo:
    return NodeInfo(node.name, node.op, dict(node.args))


def _merged(first: list[str], second: list[str]) -> list[str]:
    """The stages of both graphs: ``first``'s order, each of ``second``'s own after the stage that
    precedes it there, and the head last."""
    order = list(first)
    for index, stage in enumerate(second):
        if stage not in order:
            before = next((order.index(s) + 1 for s in reversed(second[:index]) if s in order), 0)
            order.insert(before, stage)
    return [s for s in order if s != HEAD] + ([HEAD] if HEAD in order else [])


def _stage_costs(flat: FlatGraph, measurement: Any) -> dict[str, tuple[int, int]]:
    """Parameters and multiply-adds per feature stage, in the order of the graph."""
    position = {node.name: index for index, node in enumerate(flat.nodes)}
    ends = sorted((position[node], stage) for stage, node in flat.features.items() if node in position)
    costs: dict[str, list[int]] = {stage: [0, 0] for _, stage in ends}
    layers = {layer.name: layer for layer in measurement.layers}
    for index, node in enumerate(flat.nodes):
        stage = next((name for end, name in ends if index <= end), HEAD if ends else WHOLE)
        layer = layers.get(node.name)
        cost = costs.setdefault(stage, [0, 0])
        if layer is not None:
            cost[0] += layer.params
            cost[1] += layer.macs
    return {stage: (params, macs) for stage, (params, macs) in costs.items()}


def _plain(value: Any) -> Any:
    """Data as JSON takes it: tuples as lists, keys as strings."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [_plain(v) for v in value]
    return value
