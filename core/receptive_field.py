"""Receptive fields computed from an expanded graph: how many input pixels, along one side, a node's
output sees (Yu & Koltun's Table 1, DeepLab's field of view).

Each node's field and jump (the input pixels between two neighbouring outputs) follow from its
inputs': a window op (``kernel_size`` with ``stride`` and ``dilation``) widens the field by
``(kernel - 1) * dilation * jump`` and multiplies the jump by its stride; ops without a window
(activations, normalisation, dropout, sums, concatenations, crops) keep the widest field and jump of
their inputs. Ops that see the whole input (global pooling, fully connected layers) or upsample
have no field here: asking for one through them is refused. Padding does not change a field's size.
No library computes this from a graph spec, hence this small module.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from papers.errors import GraphError
from papers.graph import FlatGraph, source

_UNBOUNDED = frozenset(
    {
        "adaptive_avgpool2d",
        "adaptive_maxpool2d",
        "linear",
        "flatten",
        "mean",
        "conv_transpose2d",
        "max_unpool2d",
        "resize_as",
        "upsample",
        "interpolate",
    }
)
"""Ops after which a field is not a window of the input (global, or upsampling)."""


def _side(value: Any, default: int) -> int:
    """One side of a square window argument (``3`` or ``[3, 3]``)."""
    if value is None:
        return default
    if isinstance(value, list | tuple):
        if len(set(value)) != 1:
            raise ValueError(f"a receptive field needs square windows, not {list(value)}")
        return int(value[0])
    return int(value)


def _window(op: str, args: Mapping[str, Any]) -> tuple[int, int, int]:
    """Kernel, stride and dilation of a window op (a pooling's stride defaults to its kernel)."""
    kernel = _side(args["kernel_size"], 1)
    stride = _side(args.get("stride"), kernel if "pool" in op else 1)
    return kernel, stride, _side(args.get("dilation"), 1)


def receptive_fields(flat: FlatGraph) -> dict[str, tuple[int, int] | None]:
    """Every node's ``(field, jump)`` in input pixels, or ``None`` where it is not a window."""
    fields: dict[str, tuple[int, int] | None] = dict.fromkeys(flat.inputs, (1, 1))
    for node in flat.nodes:
        before = [fields.get(source(name), (1, 1)) for name in node.inputs] or [(1, 1)]
        if node.op in _UNBOUNDED or any(item is None for item in before):
            fields[node.name] = None
            continue
        field = max(item[0] for item in before if item is not None)
        jump = max(item[1] for item in before if item is not None)
        if "kernel_size" in node.args:
            try:
                kernel, stride, dilation = _window(node.op, node.args)
            except ValueError as error:
                raise GraphError(f"node {node.name!r}: {error}", field=node.where) from None
            field, jump = field + (kernel - 1) * dilation * jump, jump * stride
        fields[node.name] = (field, jump)
    return fields


def receptive_field(flat: FlatGraph, node: str) -> int:
    """The side, in input pixels, of the window of the input that ``node``'s output sees."""
    fields = receptive_fields(flat)
    if node not in fields:
        raise GraphError(f"the graph has no node {node!r}", field="node")
    found = fields[node]
    if found is None:
        raise GraphError(
            f"node {node!r} sees the whole input (or upsamples): it has no receptive field", field="node"
        )
    return found[0]


__all__ = ["receptive_field", "receptive_fields"]
