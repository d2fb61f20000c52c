"""The two demo methods: their settings (typed), a rewrite and an apply step."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from pydantic import Field

from papers.graph import FlatGraph
from papers.methods import Method, MethodContext, Settings

_WIDTHS = ("out_channels", "out_features")


class NarrowSettings(Settings):
    factor: float = Field(0.5, gt=0, le=1, description="The fraction of each layer's outputs kept.")
    ops: list[str] | None = Field(None, description="The ops narrowed; default: every op that has a width.")
    keep: list[str] = Field([], description="Nodes or groups left as they are (the classifier always is).")


def narrow(flat: FlatGraph, settings: NarrowSettings) -> FlatGraph:
    """Every layer with a width (an ``out_channels`` or ``out_features`` argument: convolutions, hidden
    linear layers, ResNet's zero-padding shortcut) keeps ``factor`` of its outputs (at least one); the
    layers that read them take fewer channels, which the builder infers."""
    kept = (*flat.classifier, *settings.keep)
    nodes = []
    for node in flat.nodes:
        inside = any(node.name == name or node.name.startswith(name + ".") for name in kept)
        chosen = settings.ops is None or node.op in settings.ops
        if chosen and not inside and node.args.get("groups", 1) == 1:
            widths = {k: max(1, round(node.args[k] * settings.factor)) for k in _WIDTHS if k in node.args}
            node = replace(node, args={**node.args, **widths}) if widths else node
        nodes.append(node)
    return replace(flat, nodes=tuple(nodes))


class MagnitudeSettings(Settings):
    sparsity: float = Field(ge=0, lt=1, description="The fraction of each layer's weights set to zero.")
    ops: list[str] = Field(["conv2d", "linear"], description="The ops whose weights are masked.")


def magnitude(model: Any, settings: MagnitudeSettings, context: MethodContext) -> Any:
    """Zero the ``sparsity`` fraction of smallest-magnitude weights of each layer (ties by position)."""
    import torch

    with torch.no_grad():
        for node in context.flat.nodes:
            if node.op not in settings.ops:
                continue
            weight = getattr(model.get_submodule(node.name), "weight", None)
            count = int(settings.sparsity * weight.numel()) if weight is not None else 0
            if count:
                smallest = weight.detach().abs().flatten().topk(count, largest=False).indices
                weight.view(-1).index_fill_(0, smallest, 0.0)
    return model


NARROW = Method(
    name="narrow",
    settings=NarrowSettings,
    description="Every convolution and hidden linear layer keeps a fraction of its outputs.",
    rewrite=narrow,
)
MAGNITUDE = Method(
    name="magnitude",
    settings=MagnitudeSettings,
    description="The smallest-magnitude weights of each layer are set to zero (a mask).",
    apply=magnitude,
)
