"""Channel gates: a 0/1 mask on each prunable layer's feature maps while a method decides which to keep.

Structured pruning methods that choose channels from data (Molchanov et al.'s Taylor criterion, Lin et
al.'s global and dynamic mask) train and rank a model whose removed channels are not yet gone. A gate
multiplies a layer's feature maps by its mask where they leave the layer's last channel-wise operation
(its batch norm, activation, pooling, dropout), so a zeroed channel is exactly what the layers that
read it will see once it is removed: the gated model computes what the narrowed one will, and a mask
that is set back to one restores the channel (GDP's pruned filters may come back). The removal itself
is :mod:`papers_plugins.compression.channels`'s.

Hand-written: forward hooks on the built model; Torch-Pruning prunes on a dependency graph but has no
soft masks on activations that a method can train through and undo.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from papers.graph import FlatGraph, source

if TYPE_CHECKING:
    import torch

CHANNELWISE = frozenset(
    {
        "batchnorm1d",
        "batchnorm2d",
        "frozen_batchnorm2d",
        "relu",
        "relu6",
        "leaky_relu",
        "tanh",
        "sigmoid",
        "maxpool2d",
        "avgpool2d",
        "adaptive_avgpool2d",
        "adaptive_maxpool2d",
        "dropout",
        "dropout2d",
        "identity",
    }
)
"""Ops that act on each channel alone: a channel that is zero and unused after them is removable before."""


def gate_point(flat: FlatGraph, layer: str, model: Any = None) -> str:
    """The node whose output carries ``layer``'s feature maps to their readers: ``layer`` followed along
    its channel-wise successors (batch norm, activation, pooling) while each is the only reader of the
    one before and runs its own module (in ``model``, where given: a hook needs a module)."""
    readers: dict[str, list[Any]] = {}
    for node in flat.nodes:
        for reference in node.inputs:
            readers.setdefault(source(reference), []).append(node)
    outputs = set(flat.outputs.values())
    point = layer
    while point not in outputs:
        after = readers.get(point, [])
        if len(after) != 1 or after[0].op not in CHANNELWISE or after[0].module is not None:
            break
        if model is not None and not _has_module(model, after[0].name):
            break
        point = after[0].name
    return point


def gate_points(model: Any, flat: FlatGraph, layers: Iterable[str]) -> dict[str, str]:
    """Each layer's :func:`gate_point` in ``model`` (built from ``flat``)."""
    return {name: gate_point(flat, name, model) for name in layers}


def _has_module(model: Any, name: str) -> bool:
    try:
        model.get_submodule(name)
    except AttributeError:
        return False
    return True


class ChannelGates:
    """Masks on the output channels of ``points``' layers (``{layer: module whose output is gated}``),
    applied by forward hooks on ``model`` until :meth:`close`. With ``record`` on, each gated output
    (before its mask) is kept with its gradient, for criteria on activations."""

    def __init__(
        self,
        model: Any,
        points: Mapping[str, str],
        widths: Mapping[str, int],
        *,
        straight_through: bool = False,
    ) -> None:
        import torch

        self.straight_through = straight_through
        """Pass the gradient through a zero gate as if it were one: a masked channel's filter keeps
        learning from what the network would do with it (Lin et al.'s GDP, whose pruned filters may
        come back), while the forward pass computes without it."""

        self.masks: dict[str, torch.Tensor] = {
            name: torch.ones(widths[name], device=_device_of(model)) for name in points
        }
        self.record = False
        self.outputs: dict[str, torch.Tensor] = {}
        self._handles = [
            model.get_submodule(point).register_forward_hook(self._hook(name))
            for name, point in points.items()
        ]

    def _hook(self, name: str) -> Any:
        def gate(module: Any, args: Any, output: torch.Tensor) -> torch.Tensor:
            if self.record and output.requires_grad:
                output.retain_grad()
                self.outputs[name] = output
            shape = (1, -1) + (1,) * (output.dim() - 2)
            gated = output * self.masks[name].view(shape)
            return output + (gated - output).detach() if self.straight_through else gated

        return gate

    def live(self, name: str) -> list[int]:
        """The channels of ``name`` whose mask is one, in order."""
        return [int(i) for i in self.masks[name].nonzero().flatten()]

    def kept(self) -> dict[str, list[int]]:
        """Each layer's live channels."""
        return {name: self.live(name) for name in self.masks}

    def close(self) -> None:
        """Remove the hooks: the model computes as it did before the gates."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> ChannelGates:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def layer_widths(model: Any, layers: Sequence[str]) -> dict[str, int]:
    """Each layer's output channels (a convolution's filters, a linear layer's features)."""
    widths = {}
    for name in layers:
        module = model.get_submodule(name)
        widths[name] = int(getattr(module, "out_channels", None) or module.out_features)
    return widths


def endless(batches: Any) -> Any:
    """Batches from ``batches`` (a function giving one pass), pass after pass."""
    while True:
        yield from batches()


def sgd_updates(model: Any, stream: Any, optimizer: Any, updates: int, device: str) -> None:
    """``updates`` SGD steps of cross-entropy on the model's logits, minibatches from ``stream``
    (``pruning.retrain`` counts whole epochs; these methods fine-tune a few updates between steps)."""
    import torch

    model.train()
    for _ in range(updates):
        images, labels = next(stream)
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(images.to(device)), labels.to(device)).backward()
        optimizer.step()
    model.eval()


def _device_of(model: Any) -> Any:
    for tensor in model.parameters():
        return tensor.device
    return "cpu"
