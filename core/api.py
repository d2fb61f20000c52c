"""The Python surface: list, look up, build, measure and check, by id.

Importing this module is cheap; torch is imported by the functions that build.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from papers.checks import Check, check_spec
from papers.errors import PapersError
from papers.graph import FlatGraph, expand
from papers.measure import Measurement, measure_graph
from papers.registry import get_registry
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
    tenth of building it); the graph is immutable and safe to share.
    """
    registry = get_registry()
    entry, variant = registry.variant(variant_id)
    key = _options_key(variant_id, options)
    if key is not None and key in registry.expanded:
        return registry.expanded[key]
    try:
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
    variant_id: str, *, features: Sequence[str] | None = None, device: Any = "cpu", **options: Any
) -> torch.nn.Module:
    """Build a variant as a ``torch.fx.GraphModule`` with initialised weights.

    ``options`` override the graph's parameters (``num_classes=10``). ``features`` cuts the graph
    at those feature stages (or node names) and makes the model return a dict of their outputs.
    ``device="meta"`` builds without allocating weights.
    """
    from papers.build import build

    registry = get_registry()
    entry, _ = registry.variant(variant_id)
    flat = expand_variant(variant_id, **options)
    try:
        if features is not None:
            flat = flat.cut(list(features))
        return build(
            flat,
            registry.catalogue,
            class_name=_class_name(variant_id),
            as_dict=features is not None,
            device=device,
        )
    except PapersError as error:
        raise error.located(file=entry.file) from None


def measure(variant_id: str, **options: Any) -> Measurement:
    """Parameters, multiply-adds and shapes of a variant, computed on the meta device."""
    registry = get_registry()
    entry, _ = registry.variant(variant_id)
    flat = expand_variant(variant_id, **options)
    try:
        return measure_graph(variant_id, flat, registry.catalogue)
    except PapersError as error:
        raise error.located(file=entry.file) from None


def check(identifier: str, *, variant: str | None = None) -> list[Check]:
    """Every reported result of a paper against our measurement (one variant's, if narrowed).

    A variant id stands for its paper narrowed to itself; a paper id wins over a variant id.
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

    return check_spec(entry.spec, measured, variant)


def reference_model(variant_id: str, **kwargs: Any) -> torch.nn.Module:
    """The library model a variant names as its reference (``torchvision:resnet50``, ``timm:...``),
    randomly initialised; its ``state_dict`` loads into ``build_model(variant_id)`` with ``strict=True``.

    Needs torchvision or timm installed. ``kwargs`` go to the library's constructor.
    """
    entry, variant = get_registry().variant(variant_id)
    if variant.reference is None:
        raise PapersError(f"variant {variant_id!r} names no reference model", file=entry.file)
    library, _, name = variant.reference.partition(":")
    if library == "torchvision":
        import torchvision

        return torchvision.models.get_model(name, weights=None, **kwargs)
    import timm

    return timm.create_model(name, pretrained=False, **kwargs)


def validate_file(path: str | Path) -> Spec:
    """Validate a spec file and build every variant's graph on the meta device (nothing is written).

    Raises only :class:`papers.PapersError` subclasses, each naming the file and the field.
    """
    from papers.build import trace
    from papers.load import load_spec_file

    spec = load_spec_file(path)
    registry = get_registry()
    catalogue, library = registry.catalogue, registry.library(spec)
    for index, variant in enumerate(spec.variants):
        try:
            trace(expand(spec, variant.graph, variant.args, catalogue, library), catalogue)
        except PapersError as error:
            raise error.located(file=str(path), field=None if error.field else f"variants[{index}]") from None
    return spec


def _class_name(variant_id: str) -> str:
    return re.sub(r"\W|^(?=\d)", "_", variant_id)
