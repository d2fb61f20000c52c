"""Darknet's own files: a ``.cfg`` read into a spec graph, and ``.weights`` loaded into the model built
from it, so that the YOLO authors' released networks can be built, loaded and checked here.

A ``.cfg`` is a list of sections: ``[net]`` (the input's width, height and channels), then one layer
per section, numbered from 0. Each layer becomes one node of the graph, named ``layer<i>``:

- ``[convolutional]``: a group ``conv`` (bias only without batch norm), ``bn`` and ``act``
  (``leaky``: slope 0.1; ``relu``, ``logistic``; ``linear``: none). ``pad=1`` pads by size // 2,
  else ``padding``; ``groups`` and ``dilation`` carry over.
- ``[maxpool]``: Darknet pads by ``size - 1`` in all (``padding`` if given), ``padding // 2`` at the
  top left and the rest at the bottom right, with −∞; here the edge is replicated instead, which
  gives the same maxima (every window that reaches into the padding holds the edge it copies, as the
  padding on a side is less than the window); ``[avgpool]`` averages the whole map to [N, C].
- ``[route] layers=...``: a concatenation of the layers named (negative: relative), or the layer
  itself when it names one; ``[shortcut] from=...``: the previous layer plus that one.
- ``[upsample] stride``: nearest upsampling; ``[reorg] stride``: Darknet's own reorg
  (:func:`papers.layers.darknet_reorg`).
- ``[connected]`` (flattened first where its input is a map), ``[dropout]``, ``[softmax]``.
- ``[yolo]``, ``[region]`` and ``[detection]`` hold no weights: the map they read is a graph output
  (``yolo<i>``, ``region<i>``, ``detection<i>``), and their anchors, masks and classes are the
  graph's parameters (``yolo<i>_anchors``, ...), for a detector to decode.

Anything else (``[local]``, ``[crop]``, a route over channel groups, another activation) is refused
with the section's line. ``.weights`` is Darknet's binary: a header (major, minor, revision, then
the images seen as 8 bytes from version 0.2, else 4), then per convolutional layer its biases (batch
norm's β with batch norm), with batch norm its scales, running means and variances, then its weights;
per connected layer biases, weights, then with batch norm scales, means and variances; all float32,
little-endian. A file that ends early or goes on after the last layer is refused with the offset.
Batch norm here is torch's, ε = 1e-5 inside the root, where Darknet divides by √var + 1e-6: the two
differ only for channels of near-zero variance.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from papers.errors import PapersError

if TYPE_CHECKING:
    import torch
    from torch import nn

ACTIVATIONS = {
    "leaky": ("leaky_relu", {"negative_slope": 0.1}),
    "relu": ("relu", {}),
    "logistic": ("sigmoid", {}),
}
"""Darknet's activations the graph language has, as (op, args); ``linear`` is no op."""
HEADS = ("yolo", "region", "detection")
"""Sections that decode a map rather than compute one."""
CITATION = {
    "title": "Darknet: Open Source Neural Networks in C",
    "authors": ["Joseph Redmon"],
    "year": 2013,
    "venue": "Darknet",
    "kind": "report",
    "url": "https://pjreddie.com/darknet/",
}
"""The framework's own citation (its web page's BibTeX, 2013–2016): an imported file is Darknet's
network until a paper's spec adopts it."""


@dataclass
class Section:
    """One ``[kind]`` section of a ``.cfg``: its options in order and the line it starts on."""

    kind: str
    line: int
    options: dict[str, str] = field(default_factory=dict)

    def get(self, key: str, default: str | None = None) -> str | None:
        return self.options.get(key, default)


def parse_cfg(text: str, file: str) -> list[Section]:
    """The sections of a ``.cfg`` (comments ``#`` and ``;`` and blank lines skipped)."""
    sections: list[Section] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].split(";", 1)[0].strip()
        if not line:
            continue
        header = re.fullmatch(r"\[([A-Za-z_]+)\]", line)
        if header:
            sections.append(Section(header.group(1).lower(), number))
            continue
        if "=" not in line or not sections:
            raise PapersError(f"line {number}: expected [section] or key=value, not {line!r}", file=file)
        key, value = (part.strip() for part in line.split("=", 1))
        sections[-1].options[key] = value
    if not sections or sections[0].kind not in ("net", "network"):
        raise PapersError("a Darknet .cfg begins with a [net] section", file=file)
    if len(sections) == 1:
        raise PapersError("the .cfg has no layers after [net]", file=file)
    return sections


class _Reader:
    """Typed options of one section, each refusal naming the file, the line and the key."""

    def __init__(self, section: Section, file: str):
        self.section, self.file = section, file

    def fail(self, message: str, key: str | None = None) -> PapersError:
        where = f"[{self.section.kind}] at line {self.section.line}"
        return PapersError(f"{where}: {message}", file=self.file, field=key)

    def integer(self, key: str, default: int | None = None) -> int:
        value = self.section.get(key)
        if value is None:
            if default is None:
                raise self.fail(f"`{key}` is missing", key)
            return default
        try:
            return int(value)
        except ValueError:
            raise self.fail(f"`{key}` must be an integer, not {value!r}", key) from None

    def number(self, key: str, default: float) -> float:
        value = self.section.get(key)
        try:
            return default if value is None else float(value)
        except ValueError:
            raise self.fail(f"`{key}` must be a number, not {value!r}", key) from None

    def integers(self, key: str) -> list[int]:
        value = self.section.get(key)
        if value is None:
            raise self.fail(f"`{key}` is missing", key)
        try:
            return [int(part) for part in value.split(",") if part.strip()]
        except ValueError:
            raise self.fail(f"`{key}` must be integers separated by commas, not {value!r}", key) from None


@dataclass
class Layer:
    """A layer as the graph and the weights file see it: its section, index, output channels, and
    whether it holds weights (``conv``, ``fc``) with batch norm."""

    section: Section
    index: int
    channels: int
    weights: str | None = None
    batch_norm: bool = False
    map: bool = True


def cfg_graph(sections: list[Section], file: str) -> tuple[dict[str, Any], list[Layer]]:
    """The graph of a parsed ``.cfg`` (``{params, inputs, nodes, outputs}``) and its layers."""
    net = _Reader(sections[0], file)
    channels = net.integer("channels", 3)
    height, width = net.integer("height"), net.integer("width")
    if min(channels, height, width) < 1:
        raise net.fail("channels, height and width must be positive")
    nodes: list[dict[str, Any]] = []
    outputs: list[dict[str, str]] = []
    params: dict[str, Any] = {}
    layers: list[Layer] = []
    previous = "image"

    def source(reader: _Reader, index: int, offset: int, key: str) -> Layer:
        target = index + offset if offset < 0 else offset
        if not 0 <= target < index:
            raise reader.fail(f"`{key}` names layer {offset}, which is not an earlier layer", key)
        return layers[target]

    for index, section in enumerate(sections[1:]):
        reader = _Reader(section, file)
        name = f"layer{index}"
        kind = section.kind
        below = layers[-1] if layers else Layer(sections[0], -1, channels)
        if kind == "convolutional":
            filters, size = reader.integer("filters"), reader.integer("size", 1)
            stride = reader.integer("stride", 1)
            padding = size // 2 if reader.integer("pad", 0) else reader.integer("padding", 0)
            norm = bool(reader.integer("batch_normalize", 0))
            args = {"out_channels": filters, "kernel_size": size, "stride": stride, "padding": padding}
            args |= {"bias": not norm}
            groups, dilation = reader.integer("groups", 1), reader.integer("dilation", 1)
            args |= ({"groups": groups} if groups != 1 else {}) | (
                {"dilation": dilation} if dilation != 1 else {}
            )
            group = [{"name": "conv", "op": "conv2d", "args": args}]
            if norm:
                group.append({"name": "bn", "op": "batchnorm2d"})
            group += _activation(reader)
            nodes.append({"name": name, "in": previous, "group": group})
            layers.append(Layer(section, index, filters, "conv", norm))
        elif kind == "maxpool":
            size = reader.integer("size", 1)
            stride = reader.integer("stride", 1)
            pad = reader.integer("padding", size - 1)
            group = []
            if pad:
                before = pad // 2
                group.append(
                    {
                        "name": "pad",
                        "op": "pad",
                        "args": {"pad": [before, pad - before] * 2, "mode": "replicate"},
                    }
                )
            group.append({"name": "pool", "op": "maxpool2d", "args": {"kernel_size": size, "stride": stride}})
            nodes.append({"name": name, "in": previous, "group": group})
            layers.append(Layer(section, index, below.channels))
        elif kind == "avgpool":
            nodes.append({"name": name, "in": previous, "op": "mean", "args": {"dim": [2, 3]}})
            layers.append(Layer(section, index, below.channels, map=False))
        elif kind == "route":
            if reader.section.get("groups") is not None:
                raise reader.fail("a route over channel groups is not supported", "groups")
            sources = [source(reader, index, offset, "layers") for offset in reader.integers("layers")]
            if not sources:
                raise reader.fail("`layers` names no layer", "layers")
            reads = [f"layer{s.index}" for s in sources]
            if len(sources) == 1:
                nodes.append({"name": name, "in": reads[0], "op": "identity"})
            else:
                nodes.append({"name": name, "in": reads, "op": "cat", "args": {"dim": 1}})
            layers.append(Layer(section, index, sum(s.channels for s in sources)))
        elif kind == "shortcut":
            (offset,) = reader.integers("from")[:1] or [0]
            other = source(reader, index, offset, "from")
            if other.channels != below.channels:
                raise reader.fail(f"adds {other.channels} channels to {below.channels}", "from")
            group = [{"name": "add", "op": "add", "in": [previous, f"layer{other.index}"]}]
            group += _activation(reader, default="linear")
            nodes.append({"name": name, "group": group})
            layers.append(Layer(section, index, below.channels))
        elif kind == "upsample":
            factor = reader.integer("stride", 2)
            nodes.append({"name": name, "in": previous, "op": "upsample", "args": {"scale_factor": factor}})
            layers.append(Layer(section, index, below.channels))
        elif kind == "reorg":
            step = reader.integer("stride", 2)
            nodes.append({"name": name, "in": previous, "op": "darknet_reorg", "args": {"stride": step}})
            layers.append(Layer(section, index, below.channels * step * step))
        elif kind == "connected":
            width_out = reader.integer("output")
            norm = bool(reader.integer("batch_normalize", 0))
            group = [{"name": "flat", "op": "flatten", "args": {"start_dim": 1}}] if below.map else []
            group.append({"name": "fc", "op": "linear", "args": {"out_features": width_out}})
            if norm:
                group.append({"name": "bn", "op": "batchnorm1d"})
            group += _activation(reader)
            nodes.append({"name": name, "in": previous, "group": group})
            layers.append(Layer(section, index, width_out, "fc", norm, map=False))
        elif kind == "dropout":
            rate = reader.number("probability", 0.5)
            nodes.append({"name": name, "in": previous, "op": "dropout", "args": {"p": rate}})
            layers.append(Layer(section, index, below.channels, map=below.map))
        elif kind == "softmax":
            nodes.append({"name": name, "in": previous, "op": "softmax", "args": {"dim": 1}})
            layers.append(Layer(section, index, below.channels, map=below.map))
        elif kind in HEADS:
            nodes.append({"name": name, "in": previous, "op": "identity"})
            outputs.append({"name": f"{kind}{index}", "node": name})
            params |= _head_params(reader, f"{kind}{index}")
            layers.append(Layer(section, index, below.channels, map=below.map))
        elif kind == "cost":
            continue  # training only: the loss of a classifier
        else:
            raise reader.fail(f"layers of kind [{kind}] are not supported")
        previous = name
    if not outputs:
        outputs.append({"name": "output", "node": previous})
    graph = {"params": params, "inputs": {"image": [channels, height, width]}, "nodes": nodes}
    return graph | {"outputs": outputs}, layers


def _activation(reader: _Reader, default: str = "leaky") -> list[dict[str, Any]]:
    name = reader.section.get("activation", default)
    if name == "linear":
        return []
    if name not in ACTIVATIONS:
        known = ", ".join([*ACTIVATIONS, "linear"])
        raise reader.fail(f"activation {name!r} is not supported ({known})", "activation")
    op, args = ACTIVATIONS[name]
    return [{"name": "act", "op": op, **({"args": args} if args else {})}]


def _head_params(reader: _Reader, prefix: str) -> dict[str, Any]:
    """A head's decoding settings as graph parameters: anchors (pairs of numbers), mask, classes."""
    made: dict[str, Any] = {f"{prefix}_classes": reader.integer("classes", 20)}
    anchors = reader.section.get("anchors")
    if anchors is not None:
        try:
            values = [float(part) for part in anchors.split(",") if part.strip()]
        except ValueError:
            raise reader.fail(f"`anchors` must be numbers, not {anchors!r}", "anchors") from None
        if not values or len(values) % 2:
            raise reader.fail(f"`anchors` are width, height pairs: {len(values)} numbers", "anchors")
        made[f"{prefix}_anchors"] = values
    if reader.section.get("mask") is not None:
        made[f"{prefix}_mask"] = mask = reader.integers("mask")
        pairs = len(made.get(f"{prefix}_anchors", [])) // 2
        if any(not 0 <= m < pairs for m in mask):
            raise reader.fail(f"`mask` {mask} names anchors beyond the {pairs} pairs given", "mask")
    return made


def import_cfg(cfg: str | Path, *, spec_id: str | None = None) -> dict[str, Any]:
    """A spec (as data) for the Darknet network of ``cfg``: one graph, ``darknet``, and one variant,
    the spec's id (default: the file's stem, made a slug)."""
    path = Path(cfg)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PapersError(f"cannot read the .cfg: {exc}", file=str(cfg)) from None
    sections = parse_cfg(text, str(cfg))
    graph, layers = cfg_graph(sections, str(cfg))
    made_id = spec_id or re.sub(r"[^a-z0-9_\-]", "_", path.stem.lower())
    if not re.fullmatch(r"[a-z][a-z0-9_\-]*", made_id):
        made_id = f"darknet_{made_id}"
    heads = [o["name"] for o in graph["outputs"] if o["name"] != "output"]
    weighted = sum(1 for layer in layers if layer.weights)
    summary = (
        f"The Darknet network of {path.name}, imported by `papers import darknet`: {len(layers)} layers, "
        f"{weighted} of them with weights (Darknet's .weights load into it with `--weights`)"
        + (
            f"; its heads {', '.join(heads)} are graph outputs, their anchors and classes parameters."
            if heads
            else "."
        )
    )
    return {
        "id": made_id,
        "name": f"Darknet {path.stem}"[:80],
        "topics": ["detection" if heads else "classification"],
        "citation": dict(CITATION),
        "summary": summary,
        "graphs": {"darknet": graph},
        "variants": [{"id": made_id, "name": f"{path.stem} (Darknet)"[:80], "graph": "darknet"}],
    }


def weight_layers(cfg: str | Path) -> list[Layer]:
    """The layers of ``cfg`` in the order the weights file holds them."""
    sections = parse_cfg(Path(cfg).read_text(encoding="utf-8"), str(cfg))
    _, layers = cfg_graph(sections, str(cfg))
    return [layer for layer in layers if layer.weights]


def read_weights(file: str | Path, model: nn.Module, layers: list[Layer]) -> dict[str, torch.Tensor]:
    """The state dict that Darknet's ``.weights`` gives ``model`` (built from the same ``.cfg``):
    every convolutional and connected layer's tensors, in file order, shaped as the model's."""
    import numpy as np
    import torch

    try:
        data = Path(file).read_bytes()
    except OSError as exc:
        raise PapersError(f"cannot read the weights: {exc}", file=str(file)) from None
    if len(data) < 16:
        raise PapersError(f"{len(data)} bytes: too short for Darknet's header (at least 16)", file=str(file))
    major, minor, _ = np.frombuffer(data[:12], dtype="<i4")
    offset = 20 if (major * 10 + minor >= 2 and major < 1000 and minor < 1000) else 16
    state = model.state_dict()
    made: dict[str, torch.Tensor] = {}

    def take(key: str) -> None:
        nonlocal offset
        target = state[key]
        size = target.numel() * 4
        if offset + size > len(data):
            raise PapersError(
                f"the file ends at byte {len(data):,}, inside {key} ({target.numel():,} values from byte "
                f"{offset:,}): truncated, or for another .cfg",
                file=str(file),
            )
        values = np.frombuffer(data, dtype="<f4", count=target.numel(), offset=offset)
        made[key] = torch.from_numpy(values.copy()).reshape(target.shape)
        offset += size

    for layer in layers:
        prefix = f"layer{layer.index}"
        main = f"{prefix}.{layer.weights}"
        if layer.weights == "conv":
            norm = [f"{prefix}.bn.{k}" for k in ("bias", "weight", "running_mean", "running_var")]
            for key in norm if layer.batch_norm else [f"{main}.bias"]:
                take(key)
            take(f"{main}.weight")
        else:
            take(f"{main}.bias")
            take(f"{main}.weight")
            if layer.batch_norm:
                for key in ("weight", "running_mean", "running_var"):
                    take(f"{prefix}.bn.{key}")
                made[f"{prefix}.bn.bias"] = torch.zeros_like(state[f"{prefix}.bn.bias"])
    if offset != len(data):
        raise PapersError(
            f"{len(data) - offset:,} bytes remain after the last layer's (byte {offset:,}): the file is "
            "for another .cfg",
            file=str(file),
        )
    return made


def darknet_model(cfg: str | Path, weights: str | Path | None = None) -> nn.Module:
    """The network of ``cfg`` built from its imported spec, with Darknet's ``weights`` loaded (strictly:
    every tensor but batch norm's step counters)."""
    import yaml

    from papers.build import build
    from papers.graph import expand
    from papers.load import load_spec_text
    from papers.registry import get_registry

    spec = load_spec_text(yaml.safe_dump(import_cfg(cfg), sort_keys=False), file=str(cfg))
    registry = get_registry()
    flat = expand(spec, "darknet", {}, registry.catalogue, registry.library(spec))
    model = build(flat, registry.catalogue, class_name="Darknet")
    if weights is not None:
        loaded = read_weights(weights, model, weight_layers(cfg))
        missing, _ = model.load_state_dict(loaded, strict=False)
        left = [key for key in missing if not key.endswith("num_batches_tracked")]
        assert not left, left  # every layer with weights was read above
    return model.eval()
