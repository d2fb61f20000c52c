"""The graph language: expand a spec's graph into a flat, ordered list of named operations.

Expansion is pure Python (no torch): it binds parameters, evaluates ``${...}`` expressions and
``when`` conditions, unrolls ``repeat``, instantiates ``block`` definitions, numbers the unnamed
children of a ``group`` by position (``features.0``, ``features.1``, ...), resolves references by
name, orders the nodes topologically and drops what no output needs. The builder turns the result
into modules; the site draws it.
"""

from __future__ import annotations

import contextlib
import difflib
import heapq
import keyword
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from papers.errors import ExpressionError, GraphError
from papers.expr import evaluate, substitute
from papers.ops import Catalogue
from papers.spec import (
    Block,
    BlockNode,
    DenseDetection,
    Graph,
    GraphNode,
    GroupNode,
    InitRule,
    OpNode,
    RepeatNode,
    Segmentation,
    Spec,
)

MAX_NODES = 20_000  # six times the largest real graph (PreAct-ResNet-1001: 3,339 nodes)
MAX_REPEAT = 10_000
MAX_STEPS = 200_000
"""Spec nodes visited while expanding (a node skipped by ``when`` counts): nested repeats whose
nodes are all switched off must not loop for hours."""
MAX_DIM = 1 << 16
MAX_INPUT_ELEMENTS = 1 << 31


_PART = re.compile(r"[A-Za-z][A-Za-z0-9_]*|[0-9]+")
_IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_BLOCK_NAME = re.compile(r"([a-z][a-z0-9_\-]*\.)?[a-z][a-z0-9_\-]*")
RESERVED = frozenset(
    [
        "T_destination",
        "add_module",
        "add_submodule",
        "apply",
        "bfloat16",
        "buffers",
        "call_super_init",
        "children",
        "code",
        "compile",
        "cpu",
        "cuda",
        "delete_all_unused_submodules",
        "delete_submodule",
        "double",
        "dump_patches",
        "eval",
        "extra_repr",
        "float",
        "forward",
        "get_buffer",
        "get_extra_state",
        "get_parameter",
        "get_submodule",
        "graph",
        "half",
        "ipu",
        "load_state_dict",
        "meta",
        "modules",
        "mtia",
        "named_buffers",
        "named_children",
        "named_modules",
        "named_parameters",
        "parameters",
        "print_readable",
        "recompile",
        "register_backward_hook",
        "register_buffer",
        "register_forward_hook",
        "register_forward_pre_hook",
        "register_full_backward_hook",
        "register_full_backward_pre_hook",
        "register_load_state_dict_post_hook",
        "register_load_state_dict_pre_hook",
        "register_module",
        "register_parameter",
        "register_state_dict_post_hook",
        "register_state_dict_pre_hook",
        "requires_grad_",
        "set_extra_state",
        "set_submodule",
        "shape_env",
        "share_memory",
        "state_dict",
        "to",
        "to_empty",
        "to_folder",
        "train",
        "training",
        "type",
        "xpu",
        "zero_grad",
    ]
)
"""The public attributes of a ``torch.fx.GraphModule``: a layer of one of these names would replace
them (``forward``, ``training``). A test keeps the list equal to torch's."""


def check_name(name: str, where: str, *, dotted: bool = True) -> str:
    """Refuse a name that could not be a module path (or, not ``dotted``, an identifier) as written.

    Every name that reaches generated code (layers, inputs, outputs, feature stages) passes here after
    expansion, whatever produced it: torch.fx pastes names into the source of ``forward``, so a name is
    letters, digits and underscores only, starts with a letter (or is all digits, as a group's numbered
    children are), and is neither a Python keyword nor an attribute every model already has.
    """
    parts = name.split(".") if dotted else [name]
    pattern = _PART if dotted else _IDENTIFIER
    for part in parts:
        if not pattern.fullmatch(part) or keyword.iskeyword(part) or part in RESERVED:
            why = (
                "is reserved by torch (a model attribute or a Python keyword)"
                if pattern.fullmatch(part)
                else "must be letters, digits and underscores, starting with a letter"
            )
            shown = name if len(name) <= 80 else name[:77] + "..."
            raise GraphError(f"name {shown!r}: {part[:40]!r} {why}", field=where)
    return name


@dataclass(frozen=True)
class FlatNode:
    """One operation of an expanded graph."""

    name: str
    """Dotted path: the module's name in the model and the prefix of its ``state_dict`` keys."""
    op: str
    args: Mapping[str, Any]
    inputs: tuple[str, ...]
    where: str
    """Field path of the spec node it came from (for error messages)."""
    block: str | None = None
    """The block instance it belongs to (``layer1.0``), if any."""
    module: str | None = None
    """The node whose module this one calls (``shares``); ``None``: its own module, under its name."""


def source(reference: str) -> str:
    """The node an input reference reads: ``pool:indices`` (an item of a node's output) reads ``pool``."""
    return reference.partition(":")[0]


@dataclass(frozen=True)
class FlatGraph:
    """An expanded graph: inputs, nodes in topological order, named outputs and feature stages."""

    inputs: Mapping[str, tuple[int, ...]]
    nodes: tuple[FlatNode, ...]
    outputs: Mapping[str, str]
    features: Mapping[str, str]
    classifier: tuple[str, ...] = ()
    init: tuple[InitRule, ...] = ()
    blocks: Mapping[str, str] = field(default_factory=dict)
    """Block instance name to the block definition it instantiates."""
    aliases: Mapping[str, str] = field(default_factory=dict)
    """Group and block-instance names to the node giving their output (``layer1`` -> ``layer1.2.relu``)."""
    unbatched: frozenset[str] = frozenset()
    """Inputs whose shape is the whole shape, with no batch dimension (``rois``: [K, 5])."""
    task: DenseDetection | Segmentation | None = None
    """The graph's task layer (``papers.tasks``), if it has one; a cut graph has none."""

    def node(self, name: str) -> FlatNode:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    def cut(self, outputs: Sequence[str]) -> FlatGraph:
        """The subgraph that computes ``outputs`` (feature stages, groups, block instances or nodes)."""
        targets: dict[str, str] = {}
        names = {node.name for node in self.nodes}
        for wanted in outputs:
            if wanted in self.features:
                targets[wanted] = self.features[wanted]
            elif wanted in self.aliases:
                targets[wanted] = self.aliases[wanted]
            elif wanted in names:
                targets[wanted] = wanted
            else:
                known = ", ".join(self.features) or "none"
                raise GraphError(
                    f"no feature stage or node {wanted!r} (feature stages: {known})", field="features"
                )
        return _prune(self, targets)

    def bypass(self, replaced: Mapping[str, str | None]) -> FlatGraph:
        """The graph without the nodes of ``replaced``: every reference to one (a node's input, an
        output, a feature stage, an alias) reads its replacement instead, followed through replacements
        that are themselves removed (a residual block removed whole: its branch's nodes go, its
        addition is replaced by the block's input). A block instance none of whose nodes is left goes
        from ``blocks``. Raises :class:`GraphError` for an unknown node, a node left reading a removed
        node without a replacement (``None``), or a reference to an item of a removed node's output."""
        names = {node.name for node in self.nodes}
        for name in replaced:
            if name not in names:
                raise GraphError(f"cannot remove node {name!r}: the graph has no such node")

        def read(reference: str, reader: str) -> str:
            seen: set[str] = set()
            while source(reference) in replaced:
                if reference != source(reference):
                    raise GraphError(f"{reader} reads {reference!r}, an item of a removed node's output")
                target = replaced[reference]
                if target is None or reference in seen:
                    raise GraphError(f"{reader} reads {reference!r}, a removed node with no replacement")
                seen.add(reference)
                reference = target
            return reference

        nodes = tuple(
            replace(node, inputs=tuple(read(i, f"node {node.name!r}") for i in node.inputs))
            for node in self.nodes
            if node.name not in replaced
        )
        left = {node.block for node in nodes}
        return replace(
            self,
            nodes=nodes,
            outputs={k: read(v, f"output {k!r}") for k, v in self.outputs.items()},
            features={k: read(v, f"feature stage {k!r}") for k, v in self.features.items()},
            aliases={k: read(v, f"alias {k!r}") for k, v in self.aliases.items()},
            blocks={k: v for k, v in self.blocks.items() if k in left},
        )


class _Ref:
    """A name to resolve in a scope once the whole graph is expanded (forward references).

    Inside a group, a name is looked up relative to the group first, then to each enclosing group:
    ``in: conv`` in group ``layer.0`` finds ``layer.0.conv`` before a top-level ``conv``.
    """

    __slots__ = ("name", "path", "scope", "where")

    def __init__(self, name: str, scope: _Scope, where: str, path: str = ""):
        self.name, self.scope, self.where, self.path = name, scope, where, path

    def candidates(self) -> list[str]:
        parts = self.path.split(".")[:-1] if self.path else []
        return [".".join([*parts[:depth], self.name]) for depth in range(len(parts), -1, -1)]


@dataclass
class _Scope:
    env: dict[str, Any]
    prefix: str
    names: dict[str, str | _Ref] = field(default_factory=dict)
    auto: dict[str, int] = field(default_factory=dict)
    block_stack: tuple[str, ...] = ()
    instance: str | None = None
    owner: Spec | None = None
    """The spec whose blocks unqualified block names refer to."""
    features: dict[str, _Ref] = field(default_factory=dict)
    """The feature stages of the graph being expanded (shared by every scope inside it)."""
    shares: tuple[str, _Ref] | None = None
    """Inside a block instance that shares another's modules: (this instance's name, the other's)."""


@dataclass
class _Pending:
    name: str
    op: str
    args: dict[str, Any]
    inputs: list[str | _Ref]
    where: str
    block: str | None
    shares: tuple[str, _Ref] | None = None


def bind_params(declared: Mapping[str, Any], given: Mapping[str, Any], *, what: str, where: str) -> dict:
    """Defaults overridden by ``given``; an unknown name, or a value of another type than the
    default's, is an error naming the parameter."""
    unknown = sorted(set(given) - set(declared))
    if unknown:
        known = ", ".join(sorted(declared)) or "none"
        raise GraphError(f"{what} has no parameter {unknown[0]!r} (parameters: {known})", field=where)
    for name, value in given.items():
        expected = _kind(declared[name])
        if (
            expected is not None
            and _kind(value) != expected
            and not (expected == "number" and _kind(value) == "integer")
        ):
            raise GraphError(
                f"{what} parameter {name!r} takes {'an' if expected[0] in 'aeiou' else 'a'} "
                f"{expected}, got {value!r}",
                field=f"{where}.{name}",
            )
    return {**declared, **given}


def _kind(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return None if "${" in value else "string"
    return "list"


def expand(
    spec: Spec,
    graph_name: str,
    params: Mapping[str, Any],
    catalogue: Catalogue,
    library: Mapping[str, Spec] | None = None,
) -> FlatGraph:
    """Expand ``spec.graphs[graph_name]`` with ``params`` bound (on top of the graph's defaults).

    ``library`` holds the specs named in ``spec.uses``, whose blocks are instantiated as
    ``paper.block``; a block so defined resolves its own inner blocks in its own spec.
    """
    graph = spec.graphs[graph_name]
    where = f"graphs.{graph_name}"
    env = bind_params(graph.params, params, what=f"graph {graph_name!r}", where=f"{where}.params")
    expander = _Expander(spec, catalogue, library or {})
    inputs = {
        check_name(name, f"{where}.inputs", dotted=False): _input_shape(shape, env, f"{where}.inputs.{name}")
        for name, shape in graph.inputs.items()
    }
    for index, name in enumerate(graph.unbatched):
        if name not in inputs:
            raise GraphError(f"{name!r} is not an input of the graph", field=f"{where}.unbatched[{index}]")
    scope = _Scope(env=env, prefix="", names={name: name for name in inputs}, owner=spec)
    wanted = expander.graph(graph, where, scope, next(iter(inputs)))
    nodes = expander.resolve()
    outputs = {name: expander.lookup(ref) if isinstance(ref, _Ref) else ref for name, ref in wanted.items()}
    features = {name: expander.lookup(ref) for name, ref in scope.features.items()}
    for name, reference in (*outputs.items(), *features.items()):
        if reference in inputs:
            raise GraphError(f"output or feature stage {name!r} is a graph input", field=f"{where}.outputs")
    flat = FlatGraph(
        inputs=inputs,
        nodes=_topological(nodes, inputs),
        outputs=outputs,
        features=features,
        classifier=(*expander.classifier, *graph.classifier),
        init=tuple(_unique([*expander.init, *_init_rules(graph.init, env, f"{where}.init")])),
        blocks=expander.instances,
        aliases={
            name: target
            for name, target in scope.names.items()
            if isinstance(target, str) and name != target and ":" not in target
        },
        unbatched=frozenset(graph.unbatched),
        task=graph.detection or graph.segmentation,
    )
    if flat.task is not None:
        from papers.tasks import check_outputs

        check_outputs(flat.task, outputs, where)
    return _prune(flat, outputs)


def _unique(items: list[Any]) -> list[Any]:
    """``items`` without repeats, in order (for unhashable items such as init rules)."""
    kept: list[Any] = []
    for item in items:
        if item not in kept:
            kept.append(item)
    return kept


def _input_shape(shape: Sequence[Any], env: Mapping[str, Any], where: str) -> tuple[int, ...]:
    dims = tuple(_evaluate_value(dim, env, where) for dim in shape)
    if not all(isinstance(dim, int) and not isinstance(dim, bool) and 0 < dim <= MAX_DIM for dim in dims):
        raise GraphError(
            f"input dimensions must be integers from 1 to {MAX_DIM}, got {list(dims)}", field=where
        )
    elements = 1
    for dim in dims:
        elements *= dim
    if elements > MAX_INPUT_ELEMENTS:
        raise GraphError(f"input has {elements} elements, more than {MAX_INPUT_ELEMENTS}", field=where)
    return dims


def _evaluate_value(value: Any, env: Mapping[str, Any], where: str) -> Any:
    """``${...}`` templates in a value, resolved; errors located at ``where``."""
    with _located(where):
        return substitute(value, env)


def _init_rules(rules: Sequence[InitRule], env: Mapping[str, Any], where: str) -> list[InitRule]:
    """A graph's init rules with ``${...}`` in their arguments resolved in the graph's bound params (a
    rule's σ may follow a build option, as RetinaNet's subnets' does)."""
    return [
        rule.model_copy(
            update={
                "args": {
                    key: _evaluate_value(value, env, f"{where}[{index}].args.{key}")
                    for key, value in rule.args.items()
                }
            }
        )
        if "${" in repr(rule.args)
        else rule
        for index, rule in enumerate(rules)
    ]


def _evaluate_expression(source: str, env: Mapping[str, Any], where: str) -> Any:
    """A bare expression (``repeat``, ``when``), evaluated; errors located at ``where``."""
    with _located(where):
        return evaluate(source, env)


@contextlib.contextmanager
def _located(where: str) -> Iterator[None]:
    try:
        yield
    except ExpressionError as exc:
        raise exc.located(field=where) from None


def _condition(when: bool | str | None, env: Mapping[str, Any], where: str) -> bool:
    if when is None:
        return True
    value = when if isinstance(when, bool) else _evaluate_expression(when, env, where)
    if not isinstance(value, bool):
        raise GraphError(f"`when` must give true or false, got {value!r}", field=where)
    return value


class _Expander:
    def __init__(self, spec: Spec, catalogue: Catalogue, library: Mapping[str, Spec]):
        self.spec = spec
        self.library = library
        self.catalogue = catalogue
        self.pending: list[_Pending] = []
        self.taken: dict[str, str] = {}
        self.instances: dict[str, str] = {}
        self.steps = 0
        self.init: list[InitRule] = []
        """Init rules of inlined graphs (the outer graph's own rules come after them, so they win)."""
        self.classifier: list[str] = []
        """Classifier nodes of inlined graphs, under the names they were inlined with."""

    def graph(self, graph: Graph, where: str, scope: _Scope, previous: str | _Ref) -> dict[str, str | _Ref]:
        """Expand a graph's nodes in ``scope``; its outputs by name (references, resolved later)."""
        last = self.sequence(graph.nodes, f"{where}.nodes", scope, group=None, previous=previous)
        if graph.outputs is None:
            return {"output": last}
        wanted: dict[str, str | _Ref] = {}
        for index, output in enumerate(graph.outputs):
            if _condition(output.when, scope.env, f"{where}.outputs[{index}].when"):
                wanted[output.name] = _Ref(output.node, scope, f"{where}.outputs[{index}].node")
        if not wanted:
            raise GraphError("no output is enabled", field=f"{where}.outputs")
        return wanted

    # -- walking the spec ---------------------------------------------------------------------

    def sequence(
        self,
        nodes: Sequence[Any],
        where: str,
        scope: _Scope,
        group: list[int] | None,
        previous: str | _Ref,
        path: str = "",
    ) -> str | _Ref:
        """Expand ``nodes`` in order; each reads the previous one unless it names its inputs."""
        for index, node in enumerate(nodes):
            here = f"{where}[{index}]"
            self.steps += 1
            if self.steps > MAX_STEPS:
                raise GraphError(f"graph expansion visits more than {MAX_STEPS:,} nodes", field=here)
            if not _condition(node.when, scope.env, f"{here}.when"):
                continue
            if isinstance(node, RepeatNode):
                previous = self._repeat(node, here, scope, group, previous, path)
            else:
                previous = self._named(node, here, scope, group, previous, path)
        return previous

    def _repeat(
        self,
        node: RepeatNode,
        where: str,
        scope: _Scope,
        group: list[int] | None,
        previous: str | _Ref,
        path: str,
    ) -> str | _Ref:
        count = (
            node.repeat
            if isinstance(node.repeat, int)
            else _evaluate_expression(node.repeat, scope.env, f"{where}.repeat")
        )
        if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= MAX_REPEAT:
            raise GraphError(
                f"repeat count must be an integer from 0 to {MAX_REPEAT}, got {count!r}",
                field=f"{where}.repeat",
            )
        outer = scope.env.get(node.var, _MISSING)
        for iteration in range(count):
            scope.env[node.var] = iteration
            previous = self.sequence(node.body, f"{where}.body", scope, group, previous, path)
        if outer is _MISSING:
            scope.env.pop(node.var, None)
        else:
            scope.env[node.var] = outer
        return previous

    def _named(
        self,
        node: OpNode | BlockNode | GroupNode | GraphNode,
        where: str,
        scope: _Scope,
        group: list[int] | None,
        previous: str | _Ref,
        path: str,
    ) -> str:
        inputs = self._inputs(node, where, scope, previous, path)
        if isinstance(node, GraphNode) and node.name is None:  # inlined as the other graph names it
            return self._graph(node, where, scope, scope.prefix + path, path, inputs)[0]
        local = self._local_name(node, where, scope, group, path)
        full = scope.prefix + local
        items: dict[str, str | _Ref] = {}
        if node.shares is not None and not isinstance(node, (OpNode, BlockNode)):
            raise GraphError("only an op or a block instance can share modules", field=f"{where}.shares")
        if isinstance(node, OpNode):
            items = self._op(node, where, scope, full, inputs)
            output: str | _Ref = full
        elif isinstance(node, BlockNode):
            output, items = self._block(node, where, scope, full, inputs)
        elif isinstance(node, GraphNode):
            output, items = self._graph(node, where, scope, full + ".", local + ".", inputs)
        else:
            first = inputs[0] if len(inputs) == 1 else None
            if first is None:
                raise GraphError("a group reads exactly one input", field=f"{where}.in")
            last = self.sequence(node.group, f"{where}.group", scope, [0], first, path=local + ".")
            output = last if isinstance(last, str) else self.lookup(last)
        if local in scope.names:
            raise GraphError(f"name {scope.prefix + local!r} is used twice", field=f"{where}.name")
        scope.names[local] = output
        for item, target in items.items():  # an inlined graph's outputs win over its nodes' names
            if f"{local}.{item}" in scope.names and not isinstance(node, GraphNode):
                raise GraphError(f"name {scope.prefix + local}.{item!r} is used twice", field=f"{where}.name")
            scope.names[f"{local}.{item}"] = target
        if node.feature is not None:
            feature = _evaluate_value(node.feature, scope.env, f"{where}.feature")
            if not isinstance(feature, str):
                raise GraphError(f"a feature stage is a name, got {feature!r}", field=f"{where}.feature")
            self._feature(scope, feature, _Ref(local, scope, f"{where}.feature"), f"{where}.feature")
        return output if isinstance(output, str) else self.lookup(output)

    @staticmethod
    def _feature(scope: _Scope, name: str, target: str | _Ref, where: str) -> None:
        check_name(name, where, dotted=False)
        if name in scope.features:
            raise GraphError(f"feature stage {name!r} is named twice", field=where)
        scope.features[name] = target if isinstance(target, _Ref) else _Ref(target, scope, where)

    def _local_name(
        self,
        node: OpNode | BlockNode | GroupNode | GraphNode,
        where: str,
        scope: _Scope,
        group: list[int] | None,
        path: str,
    ) -> str:
        if node.name is not None:
            name = _evaluate_value(node.name, scope.env, f"{where}.name")
            if isinstance(name, int) and not isinstance(name, bool) and name >= 0:
                name = str(name)  # `name: ${i}` numbers children as a group would
            if not isinstance(name, str) or not name or any(not part for part in name.split(".")):
                raise GraphError(f"node name must be a dotted name, got {name!r}", field=f"{where}.name")
            return path + name
        if group is not None:
            position = group[0]
            group[0] += 1
            return f"{path}{position}"
        kind = node.op if isinstance(node, OpNode) else node.block if isinstance(node, BlockNode) else "group"
        kind = _evaluate_value(kind, scope.env, where)
        base = kind.rpartition(".")[2] if isinstance(kind, str) else "node"
        count = scope.auto.get(path + base, 0)
        scope.auto[path + base] = count + 1
        return f"{path}{base}" if count == 0 else f"{path}{base}_{count}"

    def _inputs(
        self,
        node: OpNode | BlockNode | GroupNode | GraphNode,
        where: str,
        scope: _Scope,
        previous: str | _Ref,
        path: str,
    ) -> list[str | _Ref]:
        if node.inputs is None:
            return [previous]
        raw = [node.inputs] if isinstance(node.inputs, str) else list(node.inputs)
        if not raw:
            raise GraphError("`in` names no input", field=f"{where}.in")
        inputs: list[str | _Ref] = []
        for position, name in enumerate(raw):
            value = _evaluate_value(name, scope.env, f"{where}.in")
            for item in value if isinstance(value, list) else [value]:  # a template may give a list
                if not isinstance(item, str):
                    raise GraphError(
                        f"an input is a node name, got {item!r}", field=f"{where}.in[{position}]"
                    )
                inputs.append(_Ref(item, scope, f"{where}.in", path))
        return inputs

    def _op(
        self, node: OpNode, where: str, scope: _Scope, full: str, inputs: list[str | _Ref]
    ) -> dict[str, str | _Ref]:
        """Add an op node; its output's items (``pool.indices``) by name, for an op that gives several."""
        op = _evaluate_value(node.op, scope.env, f"{where}.op")
        if not isinstance(op, str) or op not in self.catalogue:
            close = difflib.get_close_matches(str(op), self.catalogue.names(), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise GraphError(f"unknown op {op!r}{hint}", field=f"{where}.op")
        arity = self.catalogue[op].arity
        least = 1 if self.catalogue[op].list_input else 2
        if (arity is not None and len(inputs) != arity) or (arity is None and len(inputs) < least):
            wanted = arity if arity is not None else f"at least {least}"
            raise GraphError(f"op {op!r} takes {wanted} input(s), got {len(inputs)}", field=f"{where}.in")
        args = {
            key: _evaluate_value(value, scope.env, f"{where}.args.{key}") for key, value in node.args.items()
        }
        shares = scope.shares
        if node.shares is not None:
            if scope.shares is not None:
                raise GraphError(
                    "a node inside a sharing block instance cannot share", field=f"{where}.shares"
                )
            shares = (
                full,
                _Ref(_evaluate_value(node.shares, scope.env, f"{where}.shares"), scope, f"{where}.shares"),
            )
        self._add(_Pending(full, op, args, inputs, where, scope.instance, shares))
        return {item: f"{full}:{item}" for item in self.catalogue[op].items_for(args)}

    def _block(
        self, node: BlockNode, where: str, scope: _Scope, full: str, inputs: list[str | _Ref]
    ) -> tuple[str | _Ref, dict[str, str | _Ref]]:
        name = _evaluate_value(node.block, scope.env, f"{where}.block")
        if not isinstance(name, str) or not _BLOCK_NAME.fullmatch(name):
            raise GraphError(
                f"a block is named `block` or `paper.block`, got {name!r}", field=f"{where}.block"
            )
        owner, definition, body = self._definition(name, scope, where)
        qualified = f"{owner.id}.{name.rpartition('.')[2]}"
        if qualified in scope.block_stack:
            raise GraphError(f"block {name!r} instantiates itself", field=f"{where}.block")
        if len(inputs) != len(definition.inputs):
            raise GraphError(
                f"block {name!r} takes {len(definition.inputs)} input(s), got {len(inputs)}",
                field=f"{where}.in",
            )
        given = {
            key: _evaluate_value(value, scope.env, f"{where}.args.{key}") for key, value in node.args.items()
        }
        env = bind_params(definition.params, given, what=f"block {name!r}", where=f"{where}.args")
        shares = scope.shares
        if node.shares is not None:
            if scope.shares is not None:
                raise GraphError("a block inside a sharing instance cannot share", field=f"{where}.shares")
            target = _evaluate_value(node.shares, scope.env, f"{where}.shares")
            shares = (full, _Ref(target, scope, f"{where}.shares"))
        inner = _Scope(
            env=dict(env),
            prefix=full + ".",
            names=dict(zip(definition.inputs, inputs, strict=True)),
            block_stack=(*scope.block_stack, qualified),
            instance=full,
            owner=owner,
            features=scope.features,
            shares=shares,
        )
        # instances name their block as the expanded spec does: plain if its own, `paper.block` if not
        self.instances[full] = qualified if owner.id != self.spec.id else qualified.partition(".")[2]
        last = self.sequence(definition.nodes, f"{body}.nodes", inner, None, inputs[0])
        if definition.outputs is not None:
            items: dict[str, str | _Ref] = {}
            for item, node_name in definition.outputs.items():
                check_name(item, f"{body}.outputs", dotted=False)
                items[item] = _Ref(node_name, inner, f"{body}.outputs.{item}")
            return next(iter(items.values())), items
        if definition.output is not None:
            return _Ref(definition.output, inner, f"{body}.output"), {}
        return last, {}

    def _graph(
        self, node: GraphNode, where: str, scope: _Scope, prefix: str, local: str, inputs: list[str | _Ref]
    ) -> tuple[str | _Ref, dict[str, str | _Ref]]:
        """Inline another graph under ``prefix``; its outputs and feature stages become items."""
        owner, graph, body = self._graph_definition(node.graph, scope, where)
        qualified = f"{owner.id}:{node.graph.rpartition('.')[2]}"
        if qualified in scope.block_stack:
            raise GraphError(f"graph {node.graph!r} inlines itself", field=f"{where}.graph")
        if len(inputs) != len(graph.inputs):
            raise GraphError(
                f"graph {node.graph!r} takes {len(graph.inputs)} input(s), got {len(inputs)}",
                field=f"{where}.in",
            )
        given = {
            key: _evaluate_value(value, scope.env, f"{where}.args.{key}") for key, value in node.args.items()
        }
        env = bind_params(graph.params, given, what=f"graph {node.graph!r}", where=f"{where}.args")
        inner = _Scope(
            env=dict(env),
            prefix=prefix,
            names=dict(zip(graph.inputs, inputs, strict=True)),
            block_stack=(*scope.block_stack, qualified),
            owner=owner,
        )
        outputs = self.graph(graph, body, inner, inputs[0])
        self.init.extend(_init_rules(graph.init, env, f"graphs.{node.graph}.init"))
        self.classifier.extend(prefix + name for name in graph.classifier)
        items = {**inner.features, **outputs}
        # the inlined nodes, groups and blocks can be read from here: `body.layer1`, or `layer1`
        # where the graph is inlined without a name (its feature stages are then this graph's own)
        for name, target in inner.names.items():
            if name in graph.inputs:
                continue
            if local or name not in scope.names:
                scope.names.setdefault(local + name, target)
            else:
                raise GraphError(f"name {scope.prefix + name!r} is used twice", field=f"{where}.graph")
        if not local:
            for name, target in inner.features.items():
                self._feature(scope, name, target, f"{where}.graph")
        return next(iter(outputs.values())), items

    def _graph_definition(self, name: str, scope: _Scope, where: str) -> tuple[Spec, Graph, str]:
        """The spec that defines graph ``name`` as seen from ``scope``, the graph, and its field path."""
        return self._lookup_definition("graph", name, scope, where)

    def _definition(self, name: str, scope: _Scope, where: str) -> tuple[Spec, Block, str]:
        """The spec that defines block ``name`` as seen from ``scope``, the block, and its field path."""
        return self._lookup_definition("block", name, scope, where)

    def _lookup_definition(self, kind: str, name: str, scope: _Scope, where: str) -> tuple[Spec, Any, str]:
        """A block or graph of the spec ``scope`` expands, or ``paper.name`` of a paper in its ``uses``."""
        owner = scope.owner
        assert owner is not None
        paper, _, local = name.rpartition(".")
        if paper and paper != owner.id:
            if paper not in owner.uses:
                raise GraphError(
                    f"{kind} {name!r} is from {paper!r}, which `uses` does not list", field=f"{where}.{kind}"
                )
            if paper not in self.library:
                raise GraphError(
                    f"{kind} {name!r} needs paper {paper!r}, which is not in the registry",
                    field=f"{where}.{kind}",
                )
            owner = self.library[paper]
        table = owner.blocks if kind == "block" else owner.graphs
        definition = table.get(local)
        if definition is None:
            known = ", ".join(sorted(table)) or "none"
            raise GraphError(
                f"unknown {kind} {name!r} ({kind}s of {owner.id}: {known})", field=f"{where}.{kind}"
            )
        prefix = "" if owner is scope.owner else f"{owner.id}:"  # where a foreign definition's fields are
        return owner, definition, f"{prefix}{kind}s.{local}"

    def _add(self, pending: _Pending) -> None:
        check_name(pending.name, f"{pending.where}.name")
        if pending.name in self.taken:
            raise GraphError(
                f"name {pending.name!r} is used twice (first at {self.taken[pending.name]})",
                field=f"{pending.where}.name",
            )
        if len(self.pending) >= MAX_NODES:
            raise GraphError(f"graph expands to more than {MAX_NODES} nodes", field=pending.where)
        self.taken[pending.name] = pending.where
        self.pending.append(pending)

    # -- references ---------------------------------------------------------------------------

    def lookup(self, ref: _Ref) -> str:
        seen = 0
        target: str | _Ref = ref
        while isinstance(target, _Ref):
            seen += 1
            current = target
            names = current.scope.names
            found = next((names[c] for c in current.candidates() if c in names), _MISSING)
            if found is _MISSING:
                close = difflib.get_close_matches(current.name, list(names), n=3)
                hint = f"; did you mean {', '.join(close)}?" if close else ""
                raise GraphError(f"{current.name!r} names no node defined here{hint}", field=current.where)
            target = found
            if seen > MAX_NODES:
                raise GraphError("references go round in a circle", field=ref.where)
        return target

    def resolve(self) -> list[FlatNode]:
        pending = {p.name: p for p in self.pending}
        nodes = []
        for p in self.pending:
            module = None
            if p.shares is not None:
                module = self._shared_module(p, pending)
            nodes.append(
                FlatNode(
                    name=p.name,
                    op=p.op,
                    args=p.args,
                    inputs=tuple(self.lookup(i) if isinstance(i, _Ref) else i for i in p.inputs),
                    where=p.where,
                    block=p.block,
                    module=module,
                )
            )
        return nodes

    def _shared_module(self, node: _Pending, pending: Mapping[str, _Pending]) -> str:
        """The node whose module ``node`` calls: the same op with the same arguments, defined before it."""
        assert node.shares is not None
        root, reference = node.shares
        target = reference.name
        owner_root = self._lookup_name(reference)
        owner = owner_root + node.name[len(root) :]
        other = pending.get(owner)
        if other is None or owner == node.name:
            raise GraphError(
                f"{node.name!r} shares {target!r}, which has no node {owner!r} to share",
                field=reference.where,
            )
        if other.shares is not None:
            raise GraphError(
                f"{node.name!r} shares {owner!r}, which shares another node", field=reference.where
            )
        if other.op != node.op or dict(other.args) != dict(node.args):
            raise GraphError(
                f"{node.name!r} ({node.op}) shares {owner!r} ({other.op}), whose arguments differ",
                field=reference.where,
            )
        if not self.catalogue[node.op].kind == "module":
            raise GraphError(f"{node.name!r}: op {node.op!r} has no module to share", field=reference.where)
        return owner

    def _lookup_name(self, reference: _Ref) -> str:
        """A reference to a node, group or block instance, as the dotted name it was given."""
        names = reference.scope.names
        for candidate in reference.candidates():
            if candidate in names:
                return reference.scope.prefix + candidate
        raise GraphError(f"{reference.name!r} names no node defined here", field=reference.where)


_MISSING: Any = object()


def _topological(nodes: list[FlatNode], inputs: Mapping[str, Any]) -> tuple[FlatNode, ...]:
    """Order nodes so each comes after what it reads, keeping the written order where it can."""
    position = {node.name: index for index, node in enumerate(nodes)}
    readers: dict[str, list[int]] = {node.name: [] for node in nodes}
    waiting = [0] * len(nodes)
    for index, node in enumerate(nodes):
        needs = {source(reference) for reference in node.inputs} | ({node.module} if node.module else set())
        for name in needs:
            if name not in inputs:
                waiting[index] += 1
                readers[name].append(index)
    ready = [index for index, count in enumerate(waiting) if count == 0]
    heapq.heapify(ready)
    ordered: list[FlatNode] = []
    while ready:
        node = nodes[heapq.heappop(ready)]
        ordered.append(node)
        for reader in readers[node.name]:
            waiting[reader] -= 1
            if waiting[reader] == 0:
                heapq.heappush(ready, reader)
    if len(ordered) != len(nodes):
        stuck = [node for node in nodes if waiting[position[node.name]] > 0]
        names = ", ".join(node.name for node in stuck[:5])
        raise GraphError(f"the graph has a cycle through {names}", field=stuck[0].where)
    return tuple(ordered)


def _prune(flat: FlatGraph, outputs: Mapping[str, str]) -> FlatGraph:
    needed = {source(reference) for reference in outputs.values()}
    for node in reversed(flat.nodes):
        if node.name in needed:
            needed.update(source(reference) for reference in node.inputs)
            if node.module is not None:
                needed.add(node.module)
    nodes = tuple(node for node in flat.nodes if node.name in needed)
    kept_paths = set()  # every dotted prefix of a kept node: the groups and block instances it is in
    for node in nodes:
        parts = node.name.split(".")
        kept_paths.update(".".join(parts[:depth]) for depth in range(1, len(parts)))
    return FlatGraph(
        inputs={name: shape for name, shape in flat.inputs.items() if name in needed},
        nodes=nodes,
        outputs=dict(outputs),
        features={name: node for name, node in flat.features.items() if source(node) in needed},
        classifier=flat.classifier,
        init=flat.init,
        blocks={name: block for name, block in flat.blocks.items() if name in kept_paths},
        aliases={name: target for name, target in flat.aliases.items() if target in needed},
        unbatched=frozenset(name for name in flat.unbatched if name in needed),
        task=flat.task if dict(outputs) == dict(flat.outputs) else None,
    )
