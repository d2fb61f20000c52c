"""Checks: each reported result against what we measure, as data (✓ pass, ✗ fail, not measurable)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import Any, Literal

from papers.errors import GraphError
from papers.graph import FlatGraph
from papers.measure import Measurement
from papers.spec import STATIC_METRICS, UNIT_SCALE, Result, Spec

Status = Literal["pass", "fail", "not_measurable"]


@dataclass(frozen=True)
class Check:
    paper: str
    variant: str
    metric: str
    scope: str
    reported: float | list[int]
    measured: float | list[int] | None
    unit: str
    tolerance: float
    difference: float | None
    """Relative difference (measured − reported) / reported; None for shapes and unmeasured."""
    status: Status
    source: str
    protocol: str | None
    dataset: str | None
    reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_tolerance(value: float) -> float:
    """Half a unit of the last digit printed: 133 -> 0.5, 29.6 -> 0.05."""
    number = Decimal(repr(float(value)))
    if number == number.to_integral_value():
        return 0.5
    return 0.5 * 10.0 ** int(number.normalize().as_tuple().exponent)


def check_spec(
    spec: Spec, measure: Callable[[str], tuple[FlatGraph, Measurement]], variant: str | None = None
) -> list[Check]:
    """Check every result of ``spec`` (of one variant, if given); ``measure`` gives a variant's numbers."""
    checks = []
    for result in spec.results:
        if variant is not None and result.variant != variant:
            continue
        if result.metric not in STATIC_METRICS:
            checks.append(_unmeasured(spec, result, "needs trained weights and the dataset"))
            continue
        flat, measurement = measure(result.variant)
        checks.append(_compare(spec, result, flat, measurement))
    return checks


def _measured_value(result: Result, flat: FlatGraph, m: Measurement) -> float | list[int]:
    if result.metric == "output_shape":
        if result.scope == "node":
            return m.node_shapes[_node(result, flat)][1:]
        shape = m.output_shape
        return shape[1:] if shape and isinstance(shape[0], int) else [s for s in shape[0][1:]]
    if result.metric == "params":
        if result.scope == "model":
            return m.params
        if result.scope == "backbone":
            return sum(p for name, p in m.node_params.items() if not _in_classifier(name, flat))
        prefix = _prefix(result, flat)
        return sum(p for name, p in m.node_params.items() if name == prefix or name.startswith(prefix + "."))
    per_layer = {layer.name: layer.macs for layer in m.layers}
    if result.scope == "model":
        total = m.macs
    elif result.scope == "backbone":
        total = sum(v for name, v in per_layer.items() if not _in_classifier(name, flat))
    else:
        prefix = _prefix(result, flat)
        total = sum(v for name, v in per_layer.items() if name == prefix or name.startswith(prefix + "."))
    return total if result.metric == "macs" else 2 * total


def _prefix(result: Result, flat: FlatGraph) -> str:
    """What a result's ``node`` sums over: a feature stage's node, or a node, group or block instance."""
    assert result.node is not None
    name = flat.features.get(result.node, result.node)
    if not any(node.name == name or node.name.startswith(name + ".") for node in flat.nodes):
        raise GraphError(
            f"a {result.metric} result of {result.variant} names node {result.node!r}, "
            "which the graph does not have",
            field="results",
        )
    return name


def _node(result: Result, flat: FlatGraph) -> str:
    """The node whose output a result's ``node`` means: a feature stage's, a group's or block
    instance's last node, or the node itself."""
    assert result.node is not None
    name = flat.features.get(result.node, flat.aliases.get(result.node, result.node))
    if all(node.name != name for node in flat.nodes):
        raise GraphError(
            f"a {result.metric} result of {result.variant} names node {result.node!r}, "
            "which the graph does not have",
            field="results",
        )
    return name


def _in_classifier(name: str, flat: FlatGraph) -> bool:
    return any(name == head or name.startswith(head + ".") for head in flat.classifier)


def _compare(spec: Spec, result: Result, flat: FlatGraph, m: Measurement) -> Check:
    measured = _measured_value(result, flat, m)
    if isinstance(result.value, list):
        status: Status = "pass" if list(measured) == result.value else "fail"  # type: ignore[arg-type]
        return _check(spec, result, measured, 0.0, None, status)
    scale = UNIT_SCALE[result.unit]
    in_unit = float(measured) / scale  # type: ignore[arg-type]
    tolerance = result.tolerance if result.tolerance is not None else default_tolerance(result.value)
    difference = (in_unit - result.value) / result.value if result.value else None
    status = "pass" if abs(in_unit - result.value) <= tolerance * (1 + 1e-9) else "fail"
    return _check(spec, result, round(in_unit, 6), tolerance, difference, status)


def _check(
    spec: Spec,
    result: Result,
    measured: Any,
    tolerance: float,
    difference: float | None,
    status: Status,
    reason: str | None = None,
) -> Check:
    return Check(
        paper=spec.id,
        variant=result.variant,
        metric=result.metric,
        scope=result.scope if result.scope != "node" else f"node:{result.node}",
        reported=result.value,
        measured=measured,
        unit=result.unit,
        tolerance=tolerance,
        difference=None if difference is None else round(difference, 6),
        status=status,
        source=result.source,
        protocol=result.protocol,
        dataset=result.dataset,
        reason=reason,
    )


def _unmeasured(spec: Spec, result: Result, reason: str) -> Check:
    tolerance = (
        result.tolerance
        if result.tolerance is not None
        else (default_tolerance(result.value) if isinstance(result.value, float) else 0.0)
    )
    return _check(spec, result, None, tolerance, None, "not_measurable", reason)
