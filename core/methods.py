"""Methods: what a compression paper does to a model, contributed by plugins (``papers_methods``).

A method variant is a base variant (of any paper) with methods applied to it, in order, each with
its settings as data::

    variants:
      - id: deep-compression-alexnet          # <paper-id>-<base>[-setting]
        name: AlexNet, pruned and quantised
        base: alexnet
        methods:
          - {name: magnitude_prune, settings: {sparsity: 0.89}}
          - {name: kmeans_quantize, settings: {bits: 8}}

A method is code in its plugin (:class:`Method`) with two optional steps:

- ``rewrite(flat, settings) -> FlatGraph``: a static rewrite of the expanded graph (narrower layers,
  a convolution split in two). It needs no weights, so what it changes (parameters, multiply-adds,
  shapes) is measured on the meta device like any graph; ``papers build`` and ``papers check`` see
  the rewritten graph.
- ``apply(model, settings, context) -> model``: a step on a model with weights (masks, codebooks,
  decompositions), run by ``papers compress`` (:mod:`papers.compress`); ``context.data`` is the data
  source where one is given. Where the weights decide the widths (a global ranking of filters), it
  returns a :class:`Narrowed` model with the graph it was built from instead.
- ``measure(flat, settings) -> {metric: value}``: what the settings alone say of the result, without
  weights (a pruning method's kept weights and compression ratio from its per-layer kept fractions),
  by metric of the spec's vocabulary in its base unit; a value may be an :class:`Estimate`, with the
  interval the settings' printed precision allows. ``papers check`` compares a method variant's
  reported results of those metrics with it (:func:`static_measurements`).

Settings are typed by the method's :class:`Settings` model (strict, unknown fields refused), so a
spec's settings are checked when the registry is discovered, before anything is built: a setting a
method does not take is refused naming the file and the field
(``variants[0].methods[0].settings.ratio``).

This module imports no torch: plugins make :class:`Method` objects when they are discovered.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, ValidationError

from papers.errors import GraphError, PapersError, PluginError, SpecError
from papers.graph import FlatGraph, FlatNode, check_name
from papers.ops import Catalogue
from papers.plugins import describe
from papers.spec import METRIC_DIRECTION, Variant, field_path

if TYPE_CHECKING:
    from torch import nn

METHOD_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_")


class Settings(BaseModel):
    """Base of a method's settings: strict (no string where a number is due), unknown fields refused."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class NoSettings(Settings):
    """The settings of a method that takes none."""


@dataclass(frozen=True)
class MethodContext:
    """What an ``apply`` step may use besides the model and its settings."""

    flat: FlatGraph
    """The expanded graph the model was built from (after this method's rewrite, if it has one)."""
    data: str | None = None
    """The data source given to ``papers compress`` (``builtin:digits``, an ImageFolder root), if any."""
    before: nn.Module | None = None
    """The model before this method's rewrite, with its weights (``None`` for a method without one).
    The model given to ``apply`` holds its weights cut to the new shapes (each tensor's leading block:
    the first channels); a method that chooses what to keep by importance copies them from here."""
    device: str = "cpu"
    flat_before: FlatGraph | None = None
    """The graph ``before`` was built from (``None`` for a method without a rewrite)."""


@dataclass(frozen=True)
class Narrowed:
    """What an ``apply`` step returns when the weights decide the shapes (a global ranking of filters
    chooses how many each layer keeps, or which residual blocks go): the new model and the graph it was
    built from. The graph may change the method variant's node arguments and remove nodes (each removed
    node's readers reading one node in its place, as :meth:`FlatGraph.bypass` gives), nothing else. It
    is checked as a rewrite's is, and the model's tensors must have the shapes that graph builds;
    ``papers compress`` writes its widths and removed nodes so that ``load_compressed`` builds the
    same model."""

    model: nn.Module
    flat: FlatGraph


@dataclass(frozen=True)
class Estimate:
    """A value computed from settings, with the interval their printed precision allows (a kept fraction
    printed as 8% lies in [7.5%, 8.5%)): a reported number within its own precision of any point of
    the interval agrees with it."""

    value: float
    low: float
    high: float


@dataclass(frozen=True)
class Method:
    """A method a plugin contributes: a name, typed settings, and a rewrite, an apply step, or both."""

    name: str
    settings: type[Settings]
    description: str
    rewrite: Callable[[FlatGraph, Any], FlatGraph] | None = None
    """Settings in, graph out: a static rewrite of the expanded graph (no torch, no weights)."""
    apply: Callable[[Any, Any, MethodContext], Any] | None = None
    """Model with weights in, model out (it may change the model in place and return it)."""
    measure: Callable[[FlatGraph, Any], Mapping[str, float | Estimate | None]] | None = None
    """Graph (after this method's rewrite) and settings in, static measurements out, by metric (``None``:
    no longer fixed by the settings after this step, whatever an earlier step said)."""


def check_method(method: Any) -> Method:
    """Refuse a contribution that is not a well-formed :class:`Method` (raises :class:`PluginError`)."""
    if not isinstance(method, Method):
        raise PluginError(f"papers_methods() returned {type(method).__name__}, not papers.methods.Method")
    for name in ("name", "description"):
        if type(getattr(method, name)) is not str:
            raise PluginError(f"method {name} is {type(getattr(method, name)).__name__}, not str")
    if not method.name or not set(method.name) <= METHOD_NAME_CHARS or not method.name[0].isalpha():
        raise PluginError(f"method name {method.name[:60]!r} is not lower-case letters, digits and _")
    if not (isinstance(method.settings, type) and issubclass(method.settings, Settings)):
        raise PluginError(f"method {method.name!r}: settings is not a papers.methods.Settings subclass")
    if method.rewrite is None and method.apply is None:
        raise PluginError(f"method {method.name!r} has neither a rewrite nor an apply step")
    for step in ("rewrite", "apply", "measure"):
        if getattr(method, step) is not None and not callable(getattr(method, step)):
            raise PluginError(f"method {method.name!r}: {step} is not callable")
    return method


def validate_settings(method: Method, settings: Mapping[str, Any], *, field: str) -> Settings:
    """A spec's settings validated by the method's model; a refusal names the setting's field."""
    try:
        return method.settings.model_validate(dict(settings))
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        first = errors[0]
        where = field_path(first["loc"])
        if first["type"] == "extra_forbidden":
            known = ", ".join(method.settings.model_fields) or "none"
            message = f"method {method.name!r} has no setting {where!r} (its settings: {known})"
        elif first["type"] == "missing":
            message = f"method {method.name!r} needs this setting"
        else:
            shown = repr(first.get("input"))
            message = f"{first['msg']} (got {shown[:60] + '...' if len(shown) > 60 else shown})"
        if len(errors) > 1:
            message += f" (and {len(errors) - 1} more error{'s' if len(errors) > 2 else ''})"
        raise SpecError(message, field=f"{field}.{where}" if where else field) from None


@dataclass(frozen=True)
class Step:
    """One method of a method variant, resolved: the method, its validated settings, its field path."""

    method: Method
    settings: Settings
    field: str
    origin: str
    """The plugin that contributed the method (for messages)."""


Methods = Mapping[str, tuple[str, Method]]
"""Methods by name, each with the plugin that contributed it (``Registry.methods``)."""


def resolve_steps(variant: Variant, index: int, methods: Methods) -> list[Step]:
    """The steps of method variant ``variant`` (``variants[index]`` of its spec), settings validated."""
    steps = []
    for position, use in enumerate(variant.methods):
        field = f"variants[{index}].methods[{position}]"
        if use.name not in methods:
            close = difflib.get_close_matches(use.name, list(methods), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            known = f" (known: {', '.join(sorted(methods))})" if methods and not close else ""
            raise SpecError(f"unknown method {use.name!r}{hint}{known}", field=f"{field}.name")
        origin, method = methods[use.name]
        settings = validate_settings(method, use.settings, field=f"{field}.settings")
        steps.append(Step(method, settings, field, origin))
    return steps


def check_method_variant(
    variant: Variant, index: int, variants: Mapping[str, Variant], methods: Methods
) -> list[Step]:
    """Check a method variant against the registry: its base exists and has a graph, each method
    exists, its settings validate. Raises :class:`SpecError` naming the field."""
    assert variant.base is not None
    base = variants.get(variant.base)
    if base is None:
        close = difflib.get_close_matches(variant.base, list(variants), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise SpecError(f"no variant {variant.base!r} in the registry{hint}", field=f"variants[{index}].base")
    if base.base is not None:
        raise SpecError(
            f"base {variant.base!r} is itself a method variant; list every method in one variant, in order",
            field=f"variants[{index}].base",
        )
    return resolve_steps(variant, index, methods)


def rewrite_graph(flat: FlatGraph, steps: list[Step], catalogue: Catalogue) -> FlatGraph:
    """``flat`` after each step's rewrite, in order; each result is checked before the next."""
    for step in steps:
        if step.method.rewrite is not None:
            flat = rewrite_once(flat, step, catalogue)
    return flat


def rewrite_once(flat: FlatGraph, step: Step, catalogue: Catalogue) -> FlatGraph:
    """One step's rewrite, run under a guard: what it raises or returns is checked, and every node it
    changed or added is located at the step (``variants[0].methods[1]``) in messages."""
    method = step.method
    assert method.rewrite is not None
    try:
        rewritten = method.rewrite(flat, step.settings)
    except PapersError as error:
        raise error.located(field=None if error.field else step.field) from None
    except Exception as exc:  # a plugin's code: anything it raises is reported as its failure
        raise PluginError(
            f"method {method.name!r} ({step.origin}): rewrite failed: {describe(exc)}", field=step.field
        ) from exc
    if not isinstance(rewritten, FlatGraph):
        raise PluginError(
            f"method {method.name!r} ({step.origin}): rewrite returned {type(rewritten).__name__}, "
            "not a FlatGraph",
            field=step.field,
        )
    before = {node.name: node for node in flat.nodes}
    nodes = tuple(
        node if before.get(node.name) == node else replace(node, where=step.field) for node in rewritten.nodes
    )
    rewritten = replace(rewritten, nodes=nodes)
    _check_graph(rewritten, catalogue, method, step)
    return rewritten


def check_narrowed(narrowed: Narrowed, flat: FlatGraph, step: Step, catalogue: Catalogue) -> FlatGraph:
    """The graph of an apply step's :class:`Narrowed` result, checked as a rewrite's (nodes changed
    from ``flat`` located at the step), with the model's tensors of the shapes it builds."""
    from papers.build import build

    method = step.method
    if not isinstance(narrowed.flat, FlatGraph):
        raise PluginError(f"method {method.name!r}: its apply step gave a Narrowed without a FlatGraph")
    before = {node.name: node for node in flat.nodes}
    nodes = tuple(
        node if before.get(node.name) == node else replace(node, where=step.field)
        for node in narrowed.flat.nodes
    )
    result = replace(narrowed.flat, nodes=nodes)
    _check_graph(result, catalogue, method, step)
    expected = {k: tuple(t.shape) for k, t in build(result, catalogue, device="meta").state_dict().items()}
    given = {k: tuple(t.shape) for k, t in narrowed.model.state_dict().items()}
    if expected != given:
        raise PluginError(
            f"method {method.name!r}: its narrowed model's tensors are not those its graph builds",
            field=step.field,
        )
    return result


def _check_graph(flat: FlatGraph, catalogue: Catalogue, method: Method, step: Step) -> None:
    """What the builder relies on: nodes of known ops with valid, unique names, each reading graph
    inputs or earlier nodes; outputs and feature stages that name nodes."""
    seen: set[str] = set(flat.inputs)
    for node in flat.nodes:
        if not isinstance(node, FlatNode) or not isinstance(node.args, Mapping):
            raise PluginError(f"method {method.name!r}: its rewrite gave a node that is no FlatNode")
        check_name(node.name, step.field)
        if node.name in seen:
            raise GraphError(f"method {method.name!r}: name {node.name!r} is used twice", field=step.field)
        if node.op not in catalogue:
            raise GraphError(f"method {method.name!r}: unknown op {node.op!r}", field=step.field)
        missing = [name for name in node.inputs if name not in seen]
        if missing:
            raise GraphError(
                f"method {method.name!r}: node {node.name!r} reads {missing[0]!r}, which no earlier node "
                "or input gives",
                field=step.field,
            )
        seen.add(node.name)
    for name, target in (*flat.outputs.items(), *flat.features.items()):
        if target not in seen:
            raise GraphError(f"method {method.name!r}: {name!r} names no node {target!r}", field=step.field)


def expand_method_variant(variant_id: str, options: Mapping[str, Any]) -> FlatGraph:
    """The expanded graph of a method variant: its base's (with ``options``), then each rewrite."""
    from papers.api import expand_variant
    from papers.registry import get_registry

    registry = get_registry()
    entry, variant = registry.variant(variant_id)
    index = next(i for i, v in enumerate(entry.spec.variants) if v.id == variant.id)
    steps = resolve_steps(variant, index, registry.methods)
    assert variant.base is not None
    return rewrite_graph(expand_variant(variant.base, **options), steps, registry.catalogue)


def variant_steps(variant_id: str) -> list[Step]:
    """The resolved steps of a method variant in the registry."""
    from papers.registry import get_registry

    registry = get_registry()
    entry, variant = registry.variant(variant_id)
    index = next(i for i, v in enumerate(entry.spec.variants) if v.id == variant.id)
    try:
        return resolve_steps(variant, index, registry.methods)
    except PapersError as error:
        raise error.located(file=entry.file) from None


def static_measurements(variant_id: str) -> dict[str, float | Estimate]:
    """What a method variant's settings say without weights: each step's ``measure``, on the graph after
    its rewrite, by metric (a later step's value of a metric replaces an earlier one's, and ``None``
    drops it: the step makes it depend on the weights, as Huffman coding does a ratio). Where the
    rewrites change the graph (narrower layers), ``flops_reduction`` and ``params_reduction`` too,
    from the two graphs (:func:`graph_reductions`), unless a step measured them itself. Empty for a
    variant whose methods neither rewrite nor measure."""
    from papers.api import expand_variant
    from papers.registry import get_registry

    registry = get_registry()
    entry, variant = registry.variant(variant_id)
    if variant.base is None:
        return {}
    steps = variant_steps(variant_id)
    if all(step.method.measure is None and step.method.rewrite is None for step in steps):
        return {}
    base = flat = expand_variant(variant.base)
    measured: dict[str, float | Estimate | None] = {}
    try:
        for step in steps:
            if step.method.rewrite is not None:
                flat = rewrite_once(flat, step, registry.catalogue)
            if step.method.measure is not None:
                measured.update(_measure_once(flat, step))
    except PapersError as error:
        raise error.located(file=entry.file) from None
    if flat != base:
        for metric, value in graph_reductions(base, flat).items():
            measured.setdefault(metric, value)
    return {metric: value for metric, value in measured.items() if value is not None}


def graph_reductions(before: FlatGraph, after: FlatGraph) -> dict[str, float]:
    """What a rewrite removed, in percent of ``before``'s: its multiply-adds (``flops_reduction``, the
    same fraction of FLOPs) and the parameters of its layers that multiply (``params_reduction``:
    convolutions and linear layers, batch normalisation aside, as pruning papers count them)."""
    from papers.measure import measure_graph
    from papers.registry import get_registry

    catalogue = get_registry().catalogue
    counts = []
    for flat in (before, after):
        measured = measure_graph("reduction", flat, catalogue)
        ops = {node.name: node.op for node in flat.nodes}
        weighted = sum(p for name, p in measured.node_params.items() if catalogue[ops[name]].counts_macs)
        counts.append((measured.macs, weighted))
    (macs_before, params_before), (macs_after, params_after) = counts
    reductions = {}
    if macs_before:
        reductions["flops_reduction"] = 100.0 * (1 - macs_after / macs_before)
    if params_before:
        reductions["params_reduction"] = 100.0 * (1 - params_after / params_before)
    return reductions


def _measure_once(flat: FlatGraph, step: Step) -> dict[str, float | Estimate | None]:
    """One step's ``measure``, run under a guard like a rewrite: what it gives is checked."""
    method = step.method
    assert method.measure is not None
    label = f"method {method.name!r} ({step.origin}): measure"
    try:
        values = method.measure(flat, step.settings)
    except PapersError as error:
        raise error.located(field=None if error.field else step.field) from None
    except Exception as exc:  # a plugin's code: anything it raises is reported as its failure
        raise PluginError(f"{label} failed: {describe(exc)}", field=step.field) from exc
    if not isinstance(values, Mapping):
        raise PluginError(f"{label} returned {type(values).__name__}, not a mapping", field=step.field)
    for metric, value in values.items():
        if metric not in METRIC_DIRECTION:
            raise PluginError(f"{label} gave {str(metric)[:60]!r}, which is no metric", field=step.field)
        if value is None:  # no longer fixed by the settings
            continue
        numbers = (value.value, value.low, value.high) if isinstance(value, Estimate) else (value,)
        finite = all(type(n) in (int, float) and math.isfinite(n) for n in numbers)
        if not finite or (isinstance(value, Estimate) and not value.low <= value.value <= value.high):
            raise PluginError(
                f"{label} gave {metric} = {str(value)[:80]}, not a finite number or an Estimate with "
                "low <= value <= high",
                field=step.field,
            )
    return dict(values)


__all__ = [
    "Estimate",
    "Method",
    "MethodContext",
    "Narrowed",
    "NoSettings",
    "Settings",
    "Step",
    "check_method",
    "check_method_variant",
    "check_narrowed",
    "expand_method_variant",
    "graph_reductions",
    "resolve_steps",
    "rewrite_graph",
    "static_measurements",
    "validate_settings",
    "variant_steps",
]
