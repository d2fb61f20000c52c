"""Measurements of a built graph on the meta device: parameters, multiply-adds, shapes.

Multiply-adds come from ``torch.utils.flop_counter.FlopCounterMode``, which counts the FLOPs of
convolutions and matrix products (2 per multiply-add) and nothing else: ``macs`` is that count
halved, the convention of most papers ("multiply-adds"); ``flops`` is the count as it is.

Measuring every variant of the registry takes most of a minute, so each measurement is kept as JSON
in the cache folder (``PAPERS_CACHE_DIR``; ``PAPERS_NO_CACHE=1`` turns it off), keyed by a hash of
what decides it: the expanded graph (inputs, nodes with their ops' targets, arguments and inputs,
outputs), the torch version, and the source of the modules that build and count. Editing the
builder or this module invalidates the cache without a version number to remember.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from papers.files import write_atomic
from papers.graph import FlatGraph
from papers.load import cache_dir
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
    """Trace ``flat`` on the meta device and count what the checks and summaries need (or read the
    cached measurement of the same graph)."""
    path = _cache_path(flat, catalogue)
    cached = _read_cached(path, variant)
    if cached is not None:
        return cached
    measurement = _measure(variant, flat, catalogue)
    _write_cached(path, measurement)
    return measurement


def is_cached(flat: FlatGraph, catalogue: Catalogue) -> bool:
    """Whether a measurement of ``flat`` is in the cache (False when the cache is off)."""
    path = _cache_path(flat, catalogue)
    return path is not None and path.is_file()


def _measure(variant: str, flat: FlatGraph, catalogue: Catalogue) -> Measurement:
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
        input_shapes={
            name: list(shape) if name in flat.unbatched else [1, *shape]
            for name, shape in flat.inputs.items()
        },
        output_shape=shapes[0] if len(shapes) == 1 else shapes,
        output_shapes=outputs,
        layers=layers,
        node_shapes={name: list(shape) for name, shape in traced.shapes.items()},
        node_params=dict(traced.params),
    )


_CACHE_FORMAT = 1


@functools.cache
def _code_version() -> str:
    """torch's version and a hash of the modules whose code decides a measurement."""
    import importlib

    import torch

    digest = hashlib.sha256(f"{_CACHE_FORMAT}\0{torch.__version__}".encode())
    for name in ("papers.build", "papers.measure", "papers.ops"):  # `papers.measure` is also a function
        digest.update(Path(importlib.import_module(name).__file__ or "").read_bytes())
    return digest.hexdigest()


@functools.cache
def _source_hash(target: str) -> str:
    """A hash of the source of the module an op comes from, where it is not torch's: editing a
    plugin's layer invalidates the measurements of the graphs that use it."""
    import importlib

    module = target.partition(":")[0]
    if module == "torch" or module.startswith(("torch.", "operator")):
        return ""
    try:
        path = importlib.import_module(module).__file__
        return hashlib.sha256(Path(path or "").read_bytes()).hexdigest()
    except (ImportError, OSError):
        return ""  # the measurement itself reports an op that cannot be imported


def graph_key(flat: FlatGraph, catalogue: Catalogue) -> str:
    """A hash of everything in ``flat`` that a measurement depends on (not its names for humans:
    ``where``, feature stages, the classifier and init rules do not change what is counted)."""
    document = {
        "inputs": {name: list(shape) for name, shape in flat.inputs.items()},
        "unbatched": sorted(flat.unbatched),
        "nodes": [
            [node.name, node.op, catalogue[node.op].target, dict(node.args), list(node.inputs), node.module]
            for node in flat.nodes
        ],
        "outputs": dict(flat.outputs),
        "code": _code_version(),
        "ops": sorted({_source_hash(catalogue[node.op].target) for node in flat.nodes}),
    }
    text = json.dumps(document, sort_keys=True, default=repr, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def _cache_path(flat: FlatGraph, catalogue: Catalogue) -> Path | None:
    root = cache_dir()
    if root is None:
        return None
    try:
        key = graph_key(flat, catalogue)
    except KeyError:  # an op the catalogue lacks: let the measurement raise its own error
        return None
    return root / "measure" / f"{key}.json"


def _read_cached(path: Path | None, variant: str) -> Measurement | None:
    if path is None:
        return None
    try:
        data = json.loads(path.read_bytes())
        layers = [Layer(**layer) for layer in data.pop("layers")]
        # two variants with one graph share an entry: the name is the caller's
        return Measurement(**{**data, "variant": variant, "layers": layers})
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None


def _write_cached(path: Path | None, measurement: Measurement) -> None:
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(asdict(measurement), separators=(",", ":")).encode())
    except OSError:
        return
