"""Mermaid flowcharts of an expanded graph, one level at a time, so that a deep network stays readable.

A *view* draws the nodes under one prefix: the whole graph (prefix ``""``), a group (``features``,
``layer1``) or a block instance (``layer1.0``). Inside a view, every group or block instance below the
prefix is drawn as a single node (the outermost one wins), and a long chain of instances of one block
is drawn as its first, a "… n more" node and its last. What the view reads from outside becomes an
``in`` node, what it hands on an ``out`` node.

Labels are built from node names, op and block names, a few arguments and shapes: spec text that may
hold anything (a ``${...}`` name, a string argument). They are cut down to a small alphabet before
they reach mermaid, so nothing in a spec can end a label, inject mermaid syntax or close the Markdown
fence around the diagram. Mermaid refuses diagrams over 50,000 characters or 500 edges; a view is
collapsed harder until it fits well below both.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from papers.graph import FlatGraph, FlatNode

MAX_TEXT = 40_000
MAX_EDGES = 400
RUN = 4
"""Chains of more than this many instances of one block are collapsed."""

_UNSAFE = re.compile(r"[^\w .,:=×…/+\-()\[\]]", re.UNICODE)


def label_text(text: str, limit: int = 60) -> str:
    """``text`` with only letters, digits, spaces and ``_ . , : = × … / + - ( ) [ ]`` kept, cut to
    ``limit`` characters: safe inside a quoted mermaid label and inside a Markdown fence."""
    cleaned = _UNSAFE.sub("?", str(text)).strip()
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"


@dataclass
class _Unit:
    """One drawn node: a flat node, or a whole group or block instance."""

    name: str
    kind: str  # "op", "group", "block", "run", "in", "out"
    title: str
    detail: str = ""
    shape: str = ""
    members: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Diagram:
    """A view of a graph as mermaid text, with what it draws for captions and tests."""

    prefix: str
    text: str
    nodes: int
    edges: int


def containers(flat: FlatGraph) -> set[str]:
    """Names of the groups and block instances of ``flat``."""
    return set(flat.aliases) | set(flat.blocks)


def view(
    flat: FlatGraph,
    prefix: str = "",
    shapes: Mapping[str, Sequence[int]] | None = None,
    *,
    collapse_groups: bool = True,
) -> Diagram:
    """The mermaid flowchart of the nodes under ``prefix`` (the whole graph for ``""``).

    ``shapes`` (a measurement's ``node_shapes``, batch first) adds each unit's output shape.
    ``collapse_groups`` draws groups below the prefix as single nodes; block instances always are.
    """
    run = RUN
    while True:
        diagram = _view(flat, prefix, shapes or {}, collapse_groups, run)
        if (diagram.edges <= MAX_EDGES and len(diagram.text) <= MAX_TEXT) or run <= 1:
            return diagram
        run = max(1, run // 2)


def _view(
    flat: FlatGraph,
    prefix: str,
    shapes: Mapping[str, Sequence[int]],
    collapse_groups: bool,
    run: int,
) -> Diagram:
    inside = [n for n in flat.nodes if not prefix or n.name.startswith(prefix + ".")]
    boxes = {c for c in containers(flat) if not prefix or c.startswith(prefix + ".")}
    if not collapse_groups:
        boxes &= set(flat.blocks)
    unit_of: dict[str, str] = {}
    units: dict[str, _Unit] = {}
    for node in inside:
        owner = _outermost(node.name, prefix, boxes)
        unit_of[node.name] = owner or node.name
        if owner is None:
            units[node.name] = _op_unit(node, prefix, shapes)
        elif owner not in units:
            units[owner] = _box_unit(flat, owner, prefix, shapes)
        if owner is not None:
            units[owner].members.append(node.name)
    for unit in units.values():  # a block nested in a block is not in `aliases`: its last node's shape
        if unit.members and not unit.shape:
            unit.shape = _shape_text(shapes.get(unit.members[-1]))

    edges: list[tuple[str, str]] = []
    sources: dict[str, str] = {}
    for node in inside:
        target = unit_of[node.name]
        for reference in node.inputs:
            source = reference.partition(":")[0]  # an item (`pool:indices`) is drawn from its node
            if source in unit_of:
                origin = unit_of[source]
            else:  # read from outside the view: a graph input, or the block's input
                if source not in sources:
                    sources[source] = f"in:{source}"
                origin = sources[source]
            if origin != target and (origin, target) not in edges:
                edges.append((origin, target))
    inputs = _input_units(flat, prefix, sources, shapes)
    outputs = _output_units(flat, prefix, unit_of, shapes)
    order = list(inputs) + list(units) + list(outputs)
    edges += [(unit_of[node], name) for name, (_, node) in outputs.items()]
    everything = {**inputs, **units, **{name: unit for name, (unit, _) in outputs.items()}}
    everything, edges, order = _collapse_runs(everything, edges, order, run)

    ids = {name: f"n{index}" for index, name in enumerate(order)}
    lines = ["flowchart TD"]
    for name in order:
        lines.append(f"  {ids[name]}{_node_text(everything[name])}")
    for origin, target in edges:
        lines.append(f"  {ids[origin]} --> {ids[target]}")
    return Diagram(prefix=prefix, text="\n".join(lines) + "\n", nodes=len(order), edges=len(edges))


def _outermost(name: str, prefix: str, boxes: set[str]) -> str | None:
    parts = name.split(".")
    start = len(prefix.split(".")) if prefix else 0
    for depth in range(start + 1, len(parts)):
        candidate = ".".join(parts[:depth])
        if candidate in boxes:
            return candidate
    return None


def _local(name: str, prefix: str) -> str:
    return name[len(prefix) + 1 :] if prefix else name


def _shape_text(shape: Sequence[int] | None) -> str:
    if not shape:
        return ""
    return "×".join(str(dim) for dim in list(shape)[1:])


def _op_unit(node: FlatNode, prefix: str, shapes: Mapping[str, Sequence[int]]) -> _Unit:
    return _Unit(
        name=node.name,
        kind="op",
        title=_local(node.name, prefix),
        detail=_op_detail(node),
        shape=_shape_text(shapes.get(node.name)),
    )


def _op_detail(node: FlatNode) -> str:
    """The op and the arguments that say most about it: kernel, stride, groups, output width."""
    args = node.args
    parts = [node.op]
    kernel = args.get("kernel_size")
    if kernel is not None:
        size = kernel if isinstance(kernel, (list, tuple)) else [kernel, kernel]
        parts.append("×".join(str(k) for k in size))
    stride = args.get("stride")
    if stride not in (None, 1, [1, 1]):
        parts.append(f"/{stride if not isinstance(stride, (list, tuple)) else 'x'.join(map(str, stride))}")
    if args.get("groups") not in (None, 1):
        parts.append(f"g={args['groups']}")
    if "out_features" in args:
        parts.append(str(args["out_features"]))
    if "p" in args and node.op.startswith("dropout"):
        parts.append(f"p={args['p']}")
    return " ".join(str(part) for part in parts)


def _box_unit(flat: FlatGraph, name: str, prefix: str, shapes: Mapping[str, Sequence[int]]) -> _Unit:
    output = flat.aliases.get(name)
    if name in flat.blocks:
        return _Unit(
            name=name,
            kind="block",
            title=_local(name, prefix),
            detail=f"block {flat.blocks[name]}",
            shape=_shape_text(shapes.get(output or "")),
        )
    return _Unit(
        name=name,
        kind="group",
        title=_local(name, prefix),
        detail=_group_detail(flat, name),
        shape=_shape_text(shapes.get(output or "")),
    )


def _group_detail(flat: FlatGraph, group: str) -> str:
    """``3 × bottleneck`` where a group holds instances of one block only, else its size."""
    depth = group.count(".") + 1
    inside = [node.name for node in flat.nodes if node.name.startswith(group + ".")]
    children = {".".join(name.split(".")[: depth + 1]) for name in inside}
    kinds = {flat.blocks.get(child) for child in children}
    if len(kinds) == 1 and None not in kinds:
        return f"{len(children)} × {kinds.pop()}"
    return f"group of {len(children)}"


def _input_units(
    flat: FlatGraph, prefix: str, sources: Mapping[str, str], shapes: Mapping[str, Sequence[int]]
) -> dict[str, _Unit]:
    units = {}
    several = len(sources) > 1
    for position, (source, unit) in enumerate(sources.items()):
        if not prefix and source in flat.inputs:
            title, shape = source, "×".join(str(d) for d in flat.inputs[source])
        else:
            title, shape = (f"in {position + 1}" if several else "in"), _shape_text(shapes.get(source))
        units[unit] = _Unit(name=unit, kind="in", title=title, shape=shape)
    return units


def _output_units(
    flat: FlatGraph, prefix: str, unit_of: Mapping[str, str], shapes: Mapping[str, Sequence[int]]
) -> dict[str, tuple[_Unit, str]]:
    """Output units with the node each one shows."""
    if not prefix:  # an output that is an item (`pool:indices`) is drawn from its node
        wanted = {name: node.partition(":")[0] for name, node in flat.outputs.items()}
    else:
        # a nested block instance is not in `aliases`: its output is its last node
        last = flat.aliases.get(prefix) or next(reversed(unit_of), None)
        wanted = {"out": last} if last is not None else {}
    return {
        f"out:{name}": (
            _Unit(name=f"out:{name}", kind="out", title=name, shape=_shape_text(shapes.get(node))),
            node,
        )
        for name, node in wanted.items()
        if node in unit_of
    }


def _collapse_runs(
    units: dict[str, _Unit], edges: list[tuple[str, str]], order: list[str], run: int
) -> tuple[dict[str, _Unit], list[tuple[str, str]], list[str]]:
    """Chains of more than ``run`` instances of one block become first, "… n more", last."""
    incoming: dict[str, list[str]] = {name: [] for name in order}
    outgoing: dict[str, list[str]] = {name: [] for name in order}
    for origin, target in edges:
        outgoing[origin].append(target)
        incoming[target].append(origin)

    def kind(name: str) -> str | None:
        unit = units[name]
        return unit.detail if unit.kind == "block" else None

    hidden: dict[str, str] = {}
    result = dict(units)
    for start in order:
        if start in hidden or kind(start) is None:
            continue
        chain = [start]
        while True:
            last = chain[-1]
            following = outgoing[last]
            if len(following) != 1:
                break
            nxt = following[0]
            if kind(nxt) != kind(start) or incoming[nxt] != [last] or nxt in hidden:
                break
            chain.append(nxt)
        if len(chain) <= max(run, 2):
            continue
        middle = chain[1:-1]
        stand_in = f"run:{middle[0]}"
        result[stand_in] = _Unit(
            name=stand_in,
            kind="run",
            title=f"… {len(middle)} more",
            detail=units[start].detail,
            shape=units[middle[-1]].shape,
        )
        for name in middle:
            hidden[name] = stand_in
            result.pop(name)
    if not hidden:
        return units, edges, order
    new_edges: list[tuple[str, str]] = []
    for origin, target in edges:
        edge = (hidden.get(origin, origin), hidden.get(target, target))
        if edge[0] != edge[1] and edge not in new_edges:
            new_edges.append(edge)
    new_order: list[str] = []
    for name in order:
        name = hidden.get(name, name)
        if name not in new_order:
            new_order.append(name)
    return result, new_edges, new_order


def _node_text(unit: _Unit) -> str:
    lines = [label_text(unit.title)]
    if unit.detail and unit.detail != unit.title:
        lines.append(label_text(unit.detail))
    if unit.shape:
        lines.append(label_text(unit.shape))
    label = "<br>".join(lines)
    if unit.kind in ("in", "out"):
        return f'(["{label}"])'
    if unit.kind == "block":
        return f'[["{label}"]]'
    if unit.kind == "group":
        return f'("{label}")'
    if unit.kind == "run":
        return f'[/"{label}"/]'
    return f'["{label}"]'
