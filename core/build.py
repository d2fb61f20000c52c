"""The builder: an expanded graph becomes a ``torch.fx.GraphModule``.

Modules are first made on the meta device and run on meta tensors, node by node: that infers the
arguments a spec leaves out (input channels), checks every shape, and counts multiply-adds without
allocating a weight. The same modules are then placed in a GraphModule whose ``forward`` is
straight-line generated code, and only when weights are wanted are they materialised and initialised.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import operator
import sys
import types
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn

from papers.errors import GraphError
from papers.graph import FlatGraph, FlatNode, source
from papers.measure import graph_key
from papers.ops import Catalogue

MAX_PARAMS = 1_000_000_000


@dataclass
class Traced:
    """What a meta-device pass learned: modules, per-node output shapes and multiply-adds."""

    modules: dict[str, nn.Module]
    shapes: dict[str, tuple[int, ...]]
    macs: dict[str, int] = field(default_factory=dict)
    params: dict[str, int] = field(default_factory=dict)
    arguments: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Each module's constructor arguments, inferred ones included."""


def trace(flat: FlatGraph, catalogue: Catalogue, *, count_macs: bool = False) -> Traced:
    """Make every module on the meta device and run it on meta tensors of batch size 1."""
    check_in_place(flat, catalogue)
    values: dict[str, torch.Tensor] = {
        name: torch.empty(shape if name in flat.unbatched else (1, *shape), device="meta")
        for name, shape in flat.inputs.items()
    }
    traced = Traced(modules={}, shapes={name: tuple(v.shape) for name, v in values.items()})
    total_params = 0
    for op in {node.op for node in flat.nodes}:
        catalogue[op].resolve()  # import every op's module (torchvision.ops needs the real dynamo) first
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.no_grad())  # no autograd bookkeeping, no grad hooks in the counter
        stack.enter_context(_dynamo_import_deferred())
        counter = None
        if count_macs:
            from torch.utils.flop_counter import FlopCounterMode

            counter = FlopCounterMode(display=False)
        for node in flat.nodes:
            if counter is not None and catalogue[node.op].counts_macs:
                with counter:  # entering resets its count
                    output = _run_node(node, catalogue, values, traced)
                traced.macs[node.name] = counter.get_total_flops() // 2
            else:
                output = _run_node(node, catalogue, values, traced)
                if counter is not None:
                    traced.macs[node.name] = 0
            for name, tensor in _outputs(node, catalogue, output).items():
                if tensor.numel() == 0:
                    shape = list(tensor.shape)
                    raise GraphError(
                        f"node {name!r} ({node.op}) gives an empty output {shape}", field=node.where
                    )
                values[name] = tensor
                traced.shapes[name] = tuple(tensor.shape)
            module = traced.modules.get(node.name)  # a node that shares a module counts no parameters
            count = sum(p.numel() for p in module.parameters()) if module is not None else 0
            traced.params[node.name] = count
            total_params += count
            if total_params > MAX_PARAMS:
                raise GraphError(f"model has more than {MAX_PARAMS:,} parameters", field=node.where)
    return traced


@contextlib.contextmanager
def _dynamo_import_deferred() -> Iterator[None]:
    """Run meta-device code without importing ``torch._dynamo`` (about 2 s here).

    torch wraps some functions (every dispatch mode's ``__torch_dispatch__``, the Python references
    that meta kernels such as ``addmm`` decompose into) in ``torch._disable_dynamo``, which on first
    call imports dynamo only to ask ``dynamo.disable(fn)`` and caches the answer on ``fn``. Nothing
    here runs under ``torch.compile``, so for the duration of the pass a stand-in answers "fn itself";
    afterwards the stand-in and every cached answer are removed, leaving torch as it was. Every op's
    module is imported before the pass (``trace``), so a library that imports dynamo at import time
    (torchvision.ops) gets the real one.
    """
    if "torch._dynamo" in sys.modules:
        yield
        return
    answered: list[Any] = []

    def disable(fn: Any, recursive: bool = True, wrapping: bool = True) -> Any:
        answered.append(fn)
        return fn

    stand_in = types.ModuleType("torch._dynamo")
    stand_in.disable = disable  # type: ignore[attr-defined]
    sys.modules["torch._dynamo"] = stand_in
    try:
        yield
    finally:
        if sys.modules.get("torch._dynamo") is stand_in:
            del sys.modules["torch._dynamo"]
        if torch.__dict__.get("_dynamo") is stand_in:
            delattr(torch, "_dynamo")
        for fn in answered:
            fn.__dict__.pop("__dynamo_disable", None)


def _outputs(node: FlatNode, catalogue: Catalogue, output: Any) -> dict[str, torch.Tensor]:
    """A node's output by name: the node itself, and ``node:item`` for each item of an op that gives
    several (the node itself stands for the first)."""
    items = catalogue[node.op].items_for(node.args)
    if not items:
        if not isinstance(output, torch.Tensor):
            raise GraphError(f"node {node.name!r} does not give one tensor", field=node.where)
        return {node.name: output}
    if not isinstance(output, (tuple, list)) or len(output) != len(items):
        raise GraphError(f"node {node.name!r} does not give its {len(items)} outputs", field=node.where)
    named = {f"{node.name}:{item}": tensor for item, tensor in zip(items, output, strict=True)}
    if not all(isinstance(tensor, torch.Tensor) for tensor in named.values()):
        raise GraphError(f"node {node.name!r} gives something that is not a tensor", field=node.where)
    return {node.name: output[0], **named}


def _run_node(
    node: FlatNode, catalogue: Catalogue, values: Mapping[str, torch.Tensor], traced: Traced
) -> Any:
    op = catalogue[node.op]
    inputs = [values[name] for name in node.inputs]
    try:
        if node.module is not None:  # another node's module, called on this node's inputs
            return traced.modules[node.module].eval()(*inputs)
        if op.kind == "module":
            shapes = [tuple(tensor.shape) for tensor in inputs]
            kwargs = {key: infer(shapes) for key, infer in op.inferred.items() if key not in node.args}
            with torch.device("meta"):
                module = op.resolve()(**kwargs, **node.args)
            traced.modules[node.name] = module
            traced.arguments[node.name] = {**kwargs, **node.args}
            return module.eval()(*inputs)  # shapes do not depend on the mode; batch-1 BN needs eval
        return _call_function(op, inputs, node.args)
    except GraphError:
        raise
    except Exception as exc:  # anything torch raises on bad arguments or shapes
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        shapes = ", ".join(str(list(tensor.shape)) for tensor in inputs)
        shared = f", sharing {node.module!r}," if node.module else ""
        raise GraphError(
            f"node {node.name!r} ({node.op}{shared}) fails on input {shapes}: {detail}", field=node.where
        ) from None


def _call_function(op: Any, inputs: list[Any], args: Mapping[str, Any]) -> Any:
    function = op.resolve()
    if op.list_input:
        return function(inputs, **args)
    if op.arity is None:
        result = inputs[0]
        for other in inputs[1:]:
            result = function(result, other, **args)
        return result
    return function(*inputs, **args)


def check_in_place(flat: FlatGraph, catalogue: Catalogue) -> None:
    """Refuse an in-place op whose first input is a graph input, an output, or read by another node:
    overwriting it would change what they see."""
    readers: dict[str, int] = {}
    for node in flat.nodes:
        for name in {source(reference) for reference in node.inputs}:
            readers[name] = readers.get(name, 0) + 1
    returned = {source(reference) for reference in flat.outputs.values()}
    for node in flat.nodes:
        if not catalogue[node.op].in_place:
            continue
        first = node.inputs[0]
        repeated = [source(reference) for reference in node.inputs].count(source(first)) > 1
        if first in flat.inputs or source(first) in returned or readers[source(first)] > 1 or repeated:
            raise GraphError(
                f"node {node.name!r} ({node.op}) overwrites {first!r}, which something else reads; use `add`",
                field=node.where,
            )


def assemble(
    flat: FlatGraph, traced: Traced, catalogue: Catalogue, *, class_name: str = "Model", as_dict: bool = False
) -> fx.GraphModule:
    """Place the traced modules in a GraphModule with a generated, straight-line ``forward``."""
    check_in_place(flat, catalogue)
    graph = fx.Graph()
    env: dict[str, fx.Node] = {name: graph.placeholder(name) for name in flat.inputs}
    for node in flat.nodes:
        op = catalogue[node.op]
        inputs = [env[name] for name in node.inputs]
        name = node.name.replace(".", "_")  # the spec's name for the value in the generated forward
        if op.kind == "module":
            value = graph.create_node("call_module", node.module or node.name, tuple(inputs), name=name)
        elif op.list_input:
            value = graph.call_function(op.resolve(), (inputs,), dict(node.args), name=name)
        elif op.arity is None:
            value = inputs[0]
            for index, other in enumerate(inputs[1:]):
                last = index == len(inputs) - 2
                step = name if last else f"{name}_{index}"
                value = graph.call_function(op.resolve(), (value, other), dict(node.args), name=step)
        else:
            value = graph.call_function(op.resolve(), tuple(inputs), dict(node.args), name=name)
        items = op.items_for(node.args)
        for index, item in enumerate(items):
            env[f"{node.name}:{item}"] = graph.call_function(
                operator.getitem, (value, index), name=f"{name}_{item}"
            )
        env[node.name] = env[f"{node.name}:{items[0]}"] if items else value
    names = list(flat.outputs)
    if as_dict:
        graph.output({name: env[flat.outputs[name]] for name in names})
    elif len(names) == 1:
        graph.output(env[flat.outputs[names[0]]])
    else:
        tuple_type = _output_tuple(class_name, tuple(names))
        graph.output(graph.call_function(tuple_type, tuple(env[flat.outputs[n]] for n in names)))
    # A dict root: fx installs each module once under its dotted name (an nn.Module root is copied).
    return fx.GraphModule(dict(traced.modules), graph, class_name=class_name).train()  # new models train


_OUTPUT_TUPLES: dict[tuple[str, tuple[str, ...]], type] = {}


def _output_tuple(class_name: str, names: tuple[str, ...]) -> type:
    key = (class_name, names)
    if key not in _OUTPUT_TUPLES:
        tuple_type = collections.namedtuple(f"{class_name}Outputs", names)
        tuple_type.__module__ = __name__
        _OUTPUT_TUPLES[key] = tuple_type
        globals()[tuple_type.__name__] = tuple_type
    return _OUTPUT_TUPLES[key]


_SHAPE_PASSES: dict[str, Traced] = {}
_SHAPE_PASS_LIMIT = 64


def _fresh(flat: FlatGraph, catalogue: Catalogue, template: Traced, device: str | torch.device) -> Traced:
    """New modules like a cached shape pass's, with uninitialised tensors on ``device``."""
    modules = {}
    for node in flat.nodes:
        module = template.modules.get(node.name)
        if module is None:
            continue
        if _copyable(module):
            modules[node.name] = _copy_layer(module, device)
        else:  # a plugin's layer: constructed again from the arguments the shape pass inferred
            with torch.device("meta"):
                fresh = catalogue[node.op].resolve()(**template.arguments[node.name])
            modules[node.name] = fresh if str(device) == "meta" else fresh.to_empty(device=device)
    return Traced(
        modules=modules, shapes=template.shapes, params=template.params, arguments=template.arguments
    )


def _copyable(module: nn.Module) -> bool:
    """A torch layer whose whole state is its attributes, parameters and buffers."""
    return (
        type(module).__module__.startswith("torch.nn.modules.")
        and not module._modules
        and not any(isinstance(value, torch.Tensor) for value in vars(module).values())
    )


def _copy_layer(template: nn.Module, device: str | torch.device) -> nn.Module:
    """A copy of a torch layer with new, uninitialised tensors on ``device``.

    Constructing a model's layers again costs 60 ms for a DenseNet-121 (a conv's ``__init__`` runs its
    default initialisation even on the meta device); copying their attributes costs a tenth of that.
    Every container attribute (parameters, buffers, hooks) is copied, so nothing is shared.
    """
    layer = type(template).__new__(type(template))
    layer.__dict__.update(
        {k: copy.copy(v) if isinstance(v, (dict, list, set)) else v for k, v in vars(template).items()}
    )
    for name, tensor in layer._parameters.items():
        if tensor is not None:
            fresh = torch.empty(tensor.shape, dtype=tensor.dtype, device=device)
            layer._parameters[name] = nn.Parameter(fresh, requires_grad=tensor.requires_grad)
    for name, tensor in layer._buffers.items():
        if tensor is not None:
            layer._buffers[name] = torch.empty(tensor.shape, dtype=tensor.dtype, device=device)
    return layer


def _shape_pass(flat: FlatGraph, catalogue: Catalogue, device: str | torch.device) -> Traced:
    """The shape pass, run once per distinct graph in a process (it costs 40 ms to a few seconds);
    its modules are kept as templates, and every build gets fresh copies of them on ``device``."""
    key = graph_key(flat, catalogue)  # the measurement cache's key: what decides the modules
    template = _SHAPE_PASSES.get(key)
    if template is None:
        template = trace(flat, catalogue)
        if len(_SHAPE_PASSES) >= _SHAPE_PASS_LIMIT:
            _SHAPE_PASSES.pop(next(iter(_SHAPE_PASSES)))
        _SHAPE_PASSES[key] = template
    return _fresh(flat, catalogue, template, device)


def build(
    flat: FlatGraph,
    catalogue: Catalogue,
    *,
    class_name: str = "Model",
    as_dict: bool = False,
    device: str | torch.device = "cpu",
) -> fx.GraphModule:
    """Trace, assemble and (unless ``device`` is meta) initialise an expanded graph."""
    traced = _shape_pass(flat, catalogue, device)
    model = assemble(flat, traced, catalogue, class_name=class_name, as_dict=as_dict)
    if str(device) != "meta":
        initialise(model, flat)
    return model


def initialise(model: nn.Module, flat: FlatGraph) -> nn.Module:
    """Initialise allocated weights: PyTorch's defaults, then the spec's rules."""
    ruled: dict[str, set[str]] = {}
    for rule in flat.init:
        ruled.setdefault(rule.op, set()).add(rule.param)
    by_op: dict[str, list[nn.Module]] = {}
    for node in flat.nodes:
        module = _get(model, node.name)
        if module is None:
            continue
        by_op.setdefault(node.op, []).append(module)
        own = {name for name, _ in module.named_parameters(recurse=False)}
        if own and own <= ruled.get(node.op, set()) and not any(True for _ in module.children()):
            # the spec's rules set every parameter: skip PyTorch's default, which they overwrite
            if hasattr(module, "reset_running_stats"):
                module.reset_running_stats()
        elif hasattr(module, "reset_parameters"):
            module.reset_parameters()
        elif type(module).__name__ == "FrozenBatchNorm2d":  # torchvision's: four buffers, no reset method
            for buffer, value in (("weight", 1), ("bias", 0), ("running_mean", 0), ("running_var", 1)):
                getattr(module, buffer).fill_(value)
        elif any(True for _ in module.parameters(recurse=False)):
            raise GraphError(f"module {node.name!r} ({node.op}) has no reset_parameters()", field=node.where)
    import importlib

    with torch.no_grad():
        for rule in flat.init:
            home, _, name = _INIT_FUNCTIONS[rule.fn].partition(":")
            function = getattr(importlib.import_module(home), name)
            for module in by_op.get(rule.op, []):
                tensor = getattr(module, rule.param, None)
                if isinstance(tensor, torch.Tensor):
                    function(tensor, **rule.args)
    return model


_INIT_FUNCTIONS = {
    "normal": "torch.nn.init:normal_",
    "uniform": "torch.nn.init:uniform_",
    "constant": "torch.nn.init:constant_",
    "zeros": "torch.nn.init:zeros_",
    "ones": "torch.nn.init:ones_",
    "kaiming_normal": "torch.nn.init:kaiming_normal_",
    "kaiming_uniform": "torch.nn.init:kaiming_uniform_",
    "xavier_normal": "torch.nn.init:xavier_normal_",
    "xavier_uniform": "torch.nn.init:xavier_uniform_",
    "trunc_normal": "torch.nn.init:trunc_normal_",
    "bilinear": "papers.layers:bilinear_",  # FCN's upsampling filters: no library has them
}
"""Each init rule's function, as ``module:attribute`` (as op targets are)."""


def _get(model: nn.Module, dotted: str) -> nn.Module | None:
    try:
        return model.get_submodule(dotted)
    except AttributeError:
        return None


__all__ = ["Traced", "assemble", "build", "initialise", "trace"]
