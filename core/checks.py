"""Checks: each reported result against what we measure, as data (✓ pass, ✗ fail, not measurable)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any, Literal

from papers.errors import GraphError
from papers.graph import FlatGraph
from papers.measure import Measurement
from papers.methods import Estimate
from papers.spec import STATIC_METRICS, UNIT_SCALE, Result, Spec

Status = Literal["pass", "fail", "not_measurable", "inconsistent"]
"""``inconsistent``: the spec marks the result as contradicted by the paper's own numbers
(``Result.inconsistent``); it is measured where it can be and shown, but neither passes nor fails."""


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
    proxy: str | None = None
    """What differs, where the measurement stands in for the reported one (other data, a shorter recipe)."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TrainingCheck:
    """A small-scale reproduction a plugin defines: train ``variant`` on ``data`` with the paper's recipe
    changed by ``overrides``, and pass when the held-out top-1 accuracy reaches ``min_accuracy`` percent.

    ``variant`` may be a paper's id, for a method that runs on no network of the registry (Learning to
    Prune's parser). ``compares_with`` selects the reported result it is shown beside (a metric, and a
    dataset where the paper reports several); ``proxy`` says in words what makes it a stand-in for that
    result.
    """

    name: str
    variant: str
    data: str
    min_accuracy: float
    proxy: str
    overrides: Mapping[str, Any] = field(default_factory=dict)
    compares_with: Mapping[str, Any] = field(default_factory=dict)
    max_seconds: float | None = None
    """How long the run should take on a laptop-class CPU (reported; ``make bench`` times it)."""
    metric: str = "top1_accuracy"
    """What ``runner`` measures, in percent, where it is not top-1 (a parser's labelled recall)."""
    runner: Callable[[bool], tuple[float, float]] | None = None
    """A plugin's own run in place of training ``variant`` with ``overrides`` (a compression paper's
    train, prune and retrain): called with ``progress``, it gives the top-1 accuracy it measured and the
    accuracy that passes (e.g. the unpruned model's, less a point), which replaces ``min_accuracy``."""


def default_tolerance(value: float) -> float:
    """Half a unit of the last digit printed: 133 -> 0.5, 29.6 -> 0.05."""
    number = Decimal(repr(float(value)))
    if number == number.to_integral_value():
        return 0.5
    return 0.5 * 10.0 ** int(number.normalize().as_tuple().exponent)


def check_spec(
    spec: Spec,
    measure: Callable[[str], tuple[FlatGraph, Measurement]],
    variant: str | None = None,
    computed: Callable[[str], Mapping[str, float | Estimate]] | None = None,
) -> list[Check]:
    """Check every result of ``spec`` (of one variant, if given); ``measure`` gives a variant's numbers,
    ``computed`` what a method variant's settings say without weights (by metric, base units)."""
    checks = []
    for index, result in enumerate(spec.results):
        if variant is not None and result.variant != variant:
            continue
        if result.metric not in STATIC_METRICS:
            values = computed(result.variant) if computed is not None and result.scope == "model" else {}
            if result.metric in values:
                checks.append(_compare_computed(spec, result, values[result.metric]))
            else:
                checks.append(_unmeasured(spec, result, "needs trained weights and the dataset"))
            continue
        flat, measurement = measure(result.variant)
        try:
            checks.append(_compare(spec, result, flat, measurement))
        except GraphError as error:
            raise error.located(field=f"results[{index}]") from None
    return [_marked(check, result) for check, result in zip(checks, _chosen(spec, variant), strict=True)]


def _chosen(spec: Spec, variant: str | None) -> list[Result]:
    return [result for result in spec.results if variant is None or result.variant == variant]


def _marked(check: Check, result: Result) -> Check:
    """A result the spec marks inconsistent keeps its measurement, with the paper's contradiction as
    its status and reason."""
    if result.inconsistent is None:
        return check
    return Check(**{**check.as_dict(), "status": "inconsistent", "reason": result.inconsistent})


def check_result_nodes(spec: Spec, graphs: Mapping[str, FlatGraph]) -> None:
    """Refuse a result whose ``node`` names nothing in its variant's expanded graph (``graphs``, by
    variant id): a :class:`GraphError` at ``results[i].node``.

    A shape result names one output (a node, a feature stage, or a group or block instance the graph
    knows the last node of); a count sums over any node, feature stage, group or block instance.
    """
    for index, result in enumerate(spec.results):
        flat = graphs.get(result.variant)
        if result.node is None or flat is None:
            continue
        try:
            if result.metric == "output_shape":
                _node(result, flat)
            else:
                _prefix(result, flat)
        except GraphError as error:
            raise error.located(field=f"results[{index}]") from None


def _output_shapes(result: Result, flat: FlatGraph, m: Measurement) -> dict[str, list[int]]:
    """What a shape result is compared with, without the batch: its node's output, or every output of
    the graph (each must have the reported shape)."""
    if result.scope == "node":
        assert result.node is not None
        return {result.node: m.node_shapes[_node(result, flat)][1:]}
    return {name: shape[1:] for name, shape in m.output_shapes.items()}


def _measured_value(result: Result, flat: FlatGraph, m: Measurement) -> float:
    if result.metric == "receptive_field":
        from papers.receptive_field import receptive_field

        assert result.node is not None  # the spec requires it (Result)
        return receptive_field(flat, _node(result, flat))
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
    return _named_node(result, flat, whole=True)


def _node(result: Result, flat: FlatGraph) -> str:
    """The node whose output a result's ``node`` means: a feature stage's, a group's or block
    instance's last node, or the node itself."""
    return _named_node(result, flat, whole=False)


def _named_node(result: Result, flat: FlatGraph, *, whole: bool) -> str:
    """The name a result's ``node`` stands for (``whole``: everything under it; else its output)."""
    assert result.node is not None
    own = result.node if whole else flat.aliases.get(result.node, result.node)
    name = flat.features.get(result.node, own)
    found = any(n.name == name or (whole and n.name.startswith(name + ".")) for n in flat.nodes)
    if not found:
        raise GraphError(
            f"a {result.metric} result of {result.variant} names node {result.node!r}, "
            f"which the graph does not have{_known(flat)}",
            field="node",
        )
    return name


def _in_classifier(name: str, flat: FlatGraph) -> bool:
    return any(name == head or name.startswith(head + ".") for head in flat.classifier)


def _known(flat: FlatGraph) -> str:
    stages = ", ".join(flat.features)
    return f" (feature stages: {stages})" if stages else ""


def _compare(spec: Spec, result: Result, flat: FlatGraph, m: Measurement) -> Check:
    if isinstance(result.value, list):
        shapes = _output_shapes(result, flat, m)
        wrong = [shape for shape in shapes.values() if shape != result.value]
        if not wrong:
            return _check(spec, result, next(iter(shapes.values())), 0.0, None, "pass")
        every = ", ".join(f"{name} {shape}" for name, shape in shapes.items())
        reason = f"outputs: {every}" if len(shapes) > 1 else None
        return _check(spec, result, wrong[0], 0.0, None, "fail", reason)
    measured = _measured_value(result, flat, m)
    scale = UNIT_SCALE[result.unit]
    in_unit = float(measured) / scale
    tolerance = result.tolerance if result.tolerance is not None else default_tolerance(result.value)
    difference = (in_unit - result.value) / result.value if result.value else None
    status = "pass" if abs(in_unit - result.value) <= tolerance * (1 + 1e-9) else "fail"
    return _check(spec, result, round(in_unit, 6), tolerance, difference, status)


def _compare_computed(spec: Spec, result: Result, value: float | Estimate) -> Check:
    """A result against a value computed from a method's settings; an :class:`Estimate` agrees where
    the reported number is within its tolerance of any point of the estimate's interval."""
    assert isinstance(result.value, float | int)
    scale = UNIT_SCALE[result.unit]
    tolerance = result.tolerance if result.tolerance is not None else default_tolerance(result.value)
    central, low, high = (
        (value.value, value.low, value.high) if isinstance(value, Estimate) else (value, value, value)
    )
    central, low, high = central / scale, low / scale, high / scale
    gap = max(low - result.value, result.value - high, 0.0)
    status: Status = "pass" if gap <= tolerance * (1 + 1e-9) else "fail"
    difference = (central - result.value) / result.value if result.value else None
    reason = "computed from the method's settings"
    if low != high:
        reason += f": {low:.4g} to {high:.4g} with each setting anywhere within its printed precision"
    return _check(spec, result, round(central, 6), tolerance, difference, status, reason)


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


def measured_check(spec: Spec, result: Result, value: float, reason: str) -> Check:
    """A reported result against a value measured elsewhere (a results file), within its tolerance."""
    assert isinstance(result.value, float | int)
    tolerance = result.tolerance if result.tolerance is not None else default_tolerance(result.value)
    difference = (value - result.value) / result.value if result.value else None
    status: Status = "pass" if abs(value - result.value) <= tolerance * (1 + 1e-9) else "fail"
    return _check(spec, result, round(value, 6), tolerance, difference, status, reason)


def reported_for(spec: Spec, check: TrainingCheck) -> Result | None:
    """The reported result a training check is shown beside."""
    wanted = dict(check.compares_with)
    for result in spec.results:
        if result.variant != check.variant:
            continue
        if all(getattr(result, key) == value for key, value in wanted.items()):
            return result
    return None


def proxy_check(spec: Spec, check: TrainingCheck, accuracy: float, seconds: float) -> Check:
    """The outcome of a training check, labelled as a proxy, beside the result it stands in for."""
    result = reported_for(spec, check)
    status: Status = "pass" if accuracy >= check.min_accuracy else "fail"
    reason = (
        f"{check.name}: {'top-1' if check.metric == 'top1_accuracy' else check.metric} {accuracy:.2f}% "
        f"on {check.data} in {seconds:.1f} s "
        f"(passes at ≥ {check.min_accuracy:g}%)"
    )
    if result is None:
        return Check(
            paper=spec.id,
            variant=check.variant,
            metric=check.metric,
            scope="model",
            reported=check.min_accuracy,
            measured=round(accuracy, 6),
            unit="percent",
            tolerance=0.0,
            difference=None,
            status=status,
            source="training check",
            protocol=None,
            dataset=check.data,
            reason=reason,
            proxy=check.proxy,
        )
    # a top-1 proxy beside an error result is shown as an error; a proxy of the result's own metric
    # (a segmenter's miou) as measured
    as_error = check.metric == "top1_accuracy" and not result.metric.endswith("accuracy")
    value = 100.0 - accuracy if as_error else accuracy
    made = _check(spec, result, round(value, 6), 0.0, None, status, reason)
    return Check(**{**made.as_dict(), "proxy": check.proxy})
