"""The Python surface: list, look up, build, measure and check, by id.

Importing this module is cheap; torch is imported by the functions that build.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from papers.checks import Check, check_result_nodes, check_spec, measured_check, proxy_check, reported_for
from papers.errors import GraphError, PapersError
from papers.graph import FlatGraph, expand
from papers.measure import Measurement, measure_graph
from papers.registry import get_registry
from papers.results import ResultsFile
from papers.spec import Spec

if TYPE_CHECKING:
    import torch


def list_papers(topic: str | None = None) -> list[Spec]:
    """Every paper's spec, oldest first; ``topic`` filters by topic or compression kind."""
    return [entry.spec for entry in get_registry().list(topic)]


def get_spec(identifier: str) -> Spec:
    """The spec of a paper, by the paper's id or one of its variants' ids."""
    return get_registry().paper(identifier).spec


def expand_variant(variant_id: str, **options: Any) -> FlatGraph:
    """The expanded graph of a variant, with graph parameters overridden by ``options``.

    Expansion is pure, so its result is kept per registry (a DenseNet takes 30 ms to expand, a
    tenth of building it); the graph is immutable and safe to share. Options of the graph's task
    layer (``box_score_thresh``, ``min_size``) do not change the graph and are passed over.
    """
    registry = get_registry()
    entry, variant = registry.variant(variant_id)
    if options:
        from papers.tasks import task_options

        layer = task_options(expand_variant(variant_id).task)
        options = {k: v for k, v in options.items() if k not in layer}
    key = _options_key(variant_id, options)
    if key is not None and key in registry.expanded:
        return registry.expanded[key]
    try:
        if variant.base is not None:  # a method variant: its base's graph, rewritten by its methods
            from papers.methods import expand_method_variant

            flat = expand_method_variant(variant_id, options)
        else:
            assert variant.graph is not None
            flat = expand(
                entry.spec,
                variant.graph,
                {**variant.args, **options},
                registry.catalogue,
                registry.library(entry.spec),
            )
    except PapersError as error:
        raise error.located(file=entry.file) from None
    if key is not None:
        registry.expanded[key] = flat
    return flat


def _options_key(variant_id: str, options: dict[str, Any]) -> str | None:
    """A key for the expansion cache; ``None`` (not cached) where an option is not plain data."""
    try:
        return json.dumps([variant_id, options], sort_keys=True, allow_nan=False)
    except (TypeError, ValueError):
        return None


def build_model(
    variant_id: str,
    *,
    features: Sequence[str] | None = None,
    device: Any = "cpu",
    raw: bool = False,
    **options: Any,
) -> torch.nn.Module:
    """Build a variant as a ``torch.fx.GraphModule`` with initialised weights; a detector's or a
    segmenter's graph comes wrapped in its task layer (``papers.tasks``), unless ``raw``.

    ``options`` override the graph's parameters (``num_classes=10``). ``features`` cuts the graph
    at those feature stages (or node names) and makes the model return a dict of their outputs.
    ``device="meta"`` builds without allocating weights. Options that configure a task layer keep
    torchvision's names (``score_thresh``, ``min_size``, ``aux_loss``).
    """
    from papers.build import build
    from papers.tasks import task_options, wrap

    registry = get_registry()
    entry, spec_variant = registry.variant(variant_id)
    task = expand_variant(variant_id).task if features is None and not raw else None
    task_args = {k: v for k, v in options.items() if k in task_options(task)}
    flat = expand_variant(variant_id, **{k: v for k, v in options.items() if k not in task_args})
    try:
        if features is not None:
            flat = flat.cut(list(features))
        network = build(
            flat,
            registry.catalogue,
            class_name=_class_name(variant_id),
            as_dict=features is not None or task is not None,
            device=device,
        )
        if task is None:
            return network
        source, graph_variant = entry, spec_variant
        while graph_variant.base is not None:  # a method variant's box head is its base graph's spec's
            source, graph_variant = registry.variant(graph_variant.base)
        graph_args = {**graph_variant.args, **{k: v for k, v in options.items() if k not in task_args}}

        def build_graph(name: str, args: dict[str, Any]) -> tuple[torch.nn.Module, FlatGraph]:
            """Another graph of the spec (a box head), built and expanded: the detector's parameters it
            declares, then ``args``."""
            if name not in source.spec.graphs:
                known = ", ".join(source.spec.graphs)
                raise GraphError(
                    f"box_head names graph {name!r}, not one of this spec's ({known})",
                    field="detection.box_head.graph",
                )
            declared = source.spec.graphs[name].params
            shared = {k: v for k, v in graph_args.items() if k in declared}
            other = expand(
                source.spec, name, {**shared, **args}, registry.catalogue, registry.library(source.spec)
            )
            built = build(
                other, registry.catalogue, class_name=_class_name(variant_id), as_dict=True, device=device
            )
            return built, other

        return wrap(network, task, task_args, build_graph)
    except PapersError as error:
        raise error.located(file=entry.file) from None


def measure(variant_id: str, **options: Any) -> Measurement:
    """Parameters, multiply-adds and shapes of a variant, computed on the meta device. Options of its
    task layer do not change the graph; they are checked by building the model on the meta device."""
    from papers.tasks import task_options

    registry = get_registry()
    entry, _ = registry.variant(variant_id)
    flat = expand_variant(variant_id, **options)
    if set(options) & set(task_options(flat.task)):
        build_model(variant_id, device="meta", **options)
    try:
        return measure_graph(variant_id, flat, registry.catalogue)
    except PapersError as error:
        raise error.located(file=entry.file) from None


@dataclass(frozen=True)
class FeatureInfo:
    """One feature stage of a variant, as timm's ``feature_info`` describes it."""

    name: str
    """The stage's name (``stage4``), which ``build_model(features=...)`` takes."""
    node: str
    """The node that gives it (``layer4.2.relu``)."""
    channels: int
    stride: int
    """The input's height over the stage's (the reduction)."""
    shape: tuple[int, ...]
    """Its output shape for one image of the graph's input size."""


def feature_info(variant_id: str, **options: Any) -> list[FeatureInfo]:
    """The feature stages of a variant with their channels and strides, measured on the meta device.

    Stage names are the spec's; the stride says where in the network each one is, so stages of
    different families compare by stride (ResNet's ``stage1`` is at stride 4, WRN-28-10's at 1).
    """
    flat = expand_variant(variant_id, **options)
    shapes = measure(variant_id, **options).node_shapes
    height = next(iter(flat.inputs.values()))[-2]
    stages = []
    for name, node in flat.features.items():
        shape = tuple(shapes[node])
        stride = height // shape[-2] if len(shape) == 4 else 1
        stages.append(FeatureInfo(name, node, shape[1], stride, shape[1:]))
    return stages


def measure_many(variant_ids: Sequence[str], *, jobs: int | None = None) -> dict[str, Measurement]:
    """Measure many variants; those missing from the measurement cache are measured in up to ``jobs``
    processes first (default: the cores this process may use), which fill the cache.

    Measuring all of image classification takes 25 s in one process here; the processes share it.
    """
    from papers.load import cache_dir
    from papers.measure import is_cached

    registry = get_registry()
    missing = [v for v in variant_ids if not is_cached(expand_variant(v), registry.catalogue)]
    jobs = min(jobs or _cores(), len(missing))
    if jobs > 1 and len(missing) >= 2 * jobs and cache_dir() is not None:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # fork where there is one: workers inherit the registry and torch (as DataLoader's workers do)
        # instead of importing them again, a few seconds each
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("fork" if "fork" in methods else None)
        with ProcessPoolExecutor(jobs, mp_context=context) as pool:
            largest_first = sorted(missing, key=lambda v: -len(expand_variant(v).nodes))  # balances the load
            list(pool.map(_measure_into_cache, largest_first))
    return {v: measure(v) for v in variant_ids}  # read from the cache; a failure raises here, located


def _measure_into_cache(variant_id: str) -> None:
    """A worker of :func:`measure_many`: errors are left for the parent to raise with their location."""
    with contextlib.suppress(Exception):  # the parent measures it again and reports the error itself
        measure(variant_id)


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def check(
    identifier: str,
    *,
    variant: str | None = None,
    results: str | Path | ResultsFile | None = None,
    run: bool = False,
    progress: bool = False,
) -> list[Check]:
    """Every reported result of a paper against our measurement (one variant's, if narrowed).

    A variant id stands for its paper narrowed to itself; a paper id wins over a variant id.
    ``results`` (a results file from ``papers eval --out``) measures accuracies that otherwise are
    not measurable here; ``run`` also runs the plugins' training checks (small-scale reproductions),
    each shown right after the reported result it stands in for, labelled as a proxy.
    """
    registry = get_registry()
    entry = registry.paper(identifier)
    if identifier not in registry.papers and variant is None:
        variant = identifier
    if variant is not None:
        registry.variant(variant)
    cache: dict[str, tuple[FlatGraph, Measurement]] = {}

    def measured(variant_id: str) -> tuple[FlatGraph, Measurement]:
        if variant_id not in cache:
            flat = expand_variant(variant_id)
            try:
                cache[variant_id] = (flat, measure_graph(variant_id, flat, registry.catalogue))
            except PapersError as error:
                raise error.located(file=entry.file) from None
        return cache[variant_id]

    computed_cache: dict[str, Any] = {}

    def computed(variant_id: str) -> Any:
        """What a method variant's settings say without weights (``Method.measure``)."""
        if variant_id not in computed_cache:
            from papers.methods import static_measurements

            computed_cache[variant_id] = static_measurements(variant_id)
        return computed_cache[variant_id]

    checks = check_spec(entry.spec, measured, variant, computed)
    if results is not None:
        checks = _with_results(entry.spec, checks, variant, results)
    if run:
        checks = _with_training_checks(entry.spec, checks, variant, progress)
    return checks


def _with_results(
    spec: Spec, checks: list[Check], variant: str | None, results: str | Path | ResultsFile
) -> list[Check]:
    from papers.results import answer, read_results

    measured = (results if isinstance(results, ResultsFile) else read_results(results)).results
    reported = [r for r in spec.results if variant is None or r.variant == variant]
    updated = []
    for result, original in zip(reported, checks, strict=True):
        value = answer(result, measured) if original.status == "not_measurable" else None
        if value is None:
            updated.append(original)
        else:
            updated.append(measured_check(spec, result, value, "from the results file"))
    return updated


def _with_training_checks(
    spec: Spec, checks: list[Check], variant: str | None, progress: bool
) -> list[Check]:
    import time
    from dataclasses import replace

    from papers.train import run_training_check

    out = list(checks)
    for training in get_registry().training_checks(spec.id):
        if variant is not None and training.variant != variant:
            continue
        started = time.perf_counter()
        if training.runner is not None:  # a plugin's own procedure (train, prune, retrain)
            accuracy, needed = training.runner(progress)
            training = replace(training, min_accuracy=needed)
        else:
            accuracy = run_training_check(training, progress=progress).final["val_top1"]
        made = proxy_check(spec, training, accuracy, time.perf_counter() - started)
        result = reported_for(spec, training)
        after = next((i + 1 for i, c in enumerate(out) if result is not None and _same(c, result)), len(out))
        out.insert(after, made)
    return out


def _same(check: Check, result: Any) -> bool:
    return (check.variant, check.metric, check.source, check.reported, check.proxy) == (
        result.variant,
        result.metric,
        result.source,
        result.value,
        None,
    )


def reference_model(variant_id: str, **kwargs: Any) -> torch.nn.Module:
    """The library model a variant names as its reference (``torchvision:resnet50``, ``timm:...``),
    randomly initialised; its ``state_dict`` loads into ``build_model(variant_id)`` with ``strict=True``.

    Needs torchvision or timm installed. ``kwargs`` go to the library's constructor, over the keyword
    arguments of the variant's first ``equivalence`` entry (``aux_logits=False`` for torchvision's
    GoogLeNet, whose default builds auxiliary heads that our default graph has not). Where that entry's
    options change the graph, ours needs them too: torchvision's Faster R-CNN built without weights
    has trainable batch norms, ``build_model("fasterrcnn_resnet50_fpn", norm="batchnorm2d")``.
    """
    entry, variant = get_registry().variant(variant_id)
    if variant.reference is None:
        raise PapersError(f"variant {variant_id!r} names no reference model", file=entry.file)
    if variant.equivalence:
        kwargs = {**variant.equivalence[0].kwargs, **kwargs}
    library, _, name = variant.reference.partition(":")
    if library == "torchvision":
        import torchvision

        return torchvision.models.get_model(name, weights=None, **kwargs)
    import timm

    return timm.create_model(name, pretrained=False, **kwargs)


def validate_file(path: str | Path) -> Spec:
    """Validate a spec file and build every variant's graph on the meta device (nothing is written);
    a result's ``node`` must name something in its variant's graph.

    Raises only :class:`papers.PapersError` subclasses, each naming the file and the field.
    """
    from papers.build import trace
    from papers.load import load_spec_file

    spec = load_spec_file(path)
    registry = get_registry()
    catalogue, library = registry.catalogue, registry.library(spec)
    graphs: dict[str, FlatGraph] = {}
    for index, variant in enumerate(spec.variants):
        try:
            if variant.base is not None:
                flat = _method_variant_graph(spec, index, variant)
            else:
                assert variant.graph is not None
                flat = expand(spec, variant.graph, variant.args, catalogue, library)
            trace(flat, catalogue)
        except PapersError as error:
            raise error.located(file=str(path), field=None if error.field else f"variants[{index}]") from None
        graphs[variant.id] = flat
    try:
        check_result_nodes(spec, graphs)
        from papers.recipe import resolve

        if spec.hyperparameters is not None:  # each recipe resolves: its optimizer and criterion exist
            resolve(spec)
        for recipe in spec.recipes:
            resolve(spec, variant=recipe.variants[0])
    except PapersError as error:
        raise error.located(file=str(path)) from None
    return spec


def _method_variant_graph(spec: Spec, index: int, variant: Any) -> FlatGraph:
    """A method variant of a spec file that need not be registered: its base is one of the file's
    variants or the registry's, its methods the registry's."""
    from papers.methods import check_method_variant, rewrite_graph

    registry = get_registry()
    own = {v.id: v for v in spec.variants}
    known = {**{v: found for v, (_, found) in registry.variants.items()}, **own}
    steps = check_method_variant(variant, index, known, registry.methods)
    base = own.get(variant.base)
    if base is not None:
        assert base.graph is not None  # check_method_variant refuses a base that is a method variant
        flat = expand(spec, base.graph, base.args, registry.catalogue, registry.library(spec))
    else:
        flat = expand_variant(variant.base)
    return rewrite_graph(flat, steps, registry.catalogue)


def _class_name(variant_id: str) -> str:
    return re.sub(r"\W|^(?=\d)", "_", variant_id)
