"""Measurements of a built graph on the meta device: parameters, multiply-adds, shapes.

Multiply-adds come from ``torch.utils.flop_counter.FlopCounterMode``, which counts the FLOPs of
convolutions and matrix products (2 per multiply-add) and nothing else: ``macs`` is that count
halved, the convention of most papers ("multiply-adds"); ``flops`` is the count as it is.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from papers.graph import FlatGraph
from papers.ops import Catalogue


@dataclass(frozen=True)
class Layer:
    name: str
    op: str
    output_shape: list[int]
    params: int
    macs: int


@dataclass(frozen=True)
class Measurement:
    """What ``papers build`` prints and the static checks compare against. Shapes include batch 1."""

    variant: str
    params: int
    macs: int
    flops: int
    input_shapes: dict[str, list[int]]
    output_shape: list[int] | list[list[int]]
    output_shapes: dict[str, list[int]]
    layers: list[Layer] = field(default_factory=list)
    node_shapes: dict[str, list[int]] = field(default_factory=dict)
    node_params: dict[str, int] = field(default_factory=dict)

    def as_dict(self, *, layers: bool = True) -> dict[str, Any]:
        data = asdict(self)
        data.pop("node_shapes")
        data.pop("node_params")
        if not layers:
            data.pop("layers")
        return data


def measure_graph(variant: str, flat: FlatGraph, catalogue: Catalogue) -> Measurement:
    """Trace ``flat`` on the meta device and count what the checks and summaries need."""
    from papers.build import trace

    traced = trace(flat, catalogue, count_macs=True)
    layers = [
        Layer(
            node.name,
            node.op,
            list(traced.shapes[node.name]),
            traced.params[node.name],
            traced.macs[node.name],
        )
        for node in flat.nodes
    ]
    outputs = {name: list(traced.shapes[node]) for name, node in flat.outputs.items()}
    shapes = list(outputs.values())
    return Measurement(
        variant=variant,
        params=sum(layer.params for layer in layers),
        macs=sum(layer.macs for layer in layers),
        flops=2 * sum(layer.macs for layer in layers),
        input_shapes={name: [1, *shape] for name, shape in flat.inputs.items()},
        output_shape=shapes[0] if len(shapes) == 1 else shapes,
        output_shapes=outputs,
        layers=layers,
        node_shapes={name: list(shape) for name, shape in traced.shapes.items()},
        node_params=dict(traced.params),
    )
