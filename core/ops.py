"""The op catalogue: every operation a graph node may name, and how to make it.

An op is either a module (a layer with parameters or state, placed in the model under the node's
name so ``state_dict`` keys are the spec's) or a function (``add``, ``cat``: no state, called in the
generated ``forward``). Arguments the builder can infer from input shapes (a conv's input channels,
a linear layer's input features) are filled in, so specs give only what the paper gives.

Targets are import paths, resolved on first use: this module must stay importable without torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Shape = tuple[int, ...]


def input_channels(shapes: Sequence[Shape]) -> int:
    """The channels of the first input (NCHW): for ``inferred={"in_channels": input_channels}``."""
    return shapes[0][1]


def input_features(shapes: Sequence[Shape]) -> int:
    """The last dimension of the first input: for ``inferred={"in_features": input_features}``."""
    return shapes[0][-1]


@dataclass(frozen=True)
class Op:
    """One entry of the catalogue."""

    name: str
    target: str
    """``module:attribute`` of the nn.Module class or the function."""
    kind: Literal["module", "function"] = "module"
    inferred: Mapping[str, Callable[[Sequence[Shape]], Any]] = field(default_factory=dict)
    """Constructor arguments computed from the input shapes (batch first)."""
    arity: int | None = 1
    """Number of inputs; ``None`` takes any number from one up (``cat``) or two up (``add``)."""
    list_input: bool = False
    """The function takes its inputs as one list (``torch.cat``)."""
    doc: str = ""
    in_place: bool = False
    """The function overwrites its first input (``out += identity``): that input must be a node that
    nothing else reads and no output returns, which the builder checks."""
    counts_macs: bool = True
    """Whether the op can do multiply-adds (a convolution or a matrix product inside); ``False`` runs it
    outside the FLOP counter, whose dispatch costs more than such an op (a batch norm) itself."""

    def resolve(self) -> Any:
        module, _, attribute = self.target.partition(":")
        return getattr(importlib.import_module(module), attribute)


def _module(name: str, target: str, doc: str, **inferred: Callable[[Sequence[Shape]], Any]) -> Op:
    return Op(name, target, "module", inferred, doc=doc, counts_macs=name in _WITH_MACS)


def _function(
    name: str,
    target: str,
    doc: str,
    *,
    arity: int | None = 1,
    list_input: bool = False,
    in_place: bool = False,
) -> Op:
    return Op(
        name,
        target,
        "function",
        arity=arity,
        list_input=list_input,
        doc=doc,
        in_place=in_place,
        counts_macs=False,
    )


_WITH_MACS = frozenset({"conv2d", "linear"})
"""The built-in modules that multiply and add; every built-in function (``add``, ``cat``) does not."""


BUILTIN_OPS: tuple[Op, ...] = (
    _module(
        "conv2d", "torch.nn:Conv2d", "2-D convolution; in_channels inferred.", in_channels=input_channels
    ),
    _module(
        "linear",
        "torch.nn:Linear",
        "Fully connected layer; in_features inferred.",
        in_features=input_features,
    ),
    _module(
        "batchnorm2d",
        "torch.nn:BatchNorm2d",
        "Batch normalisation over channels.",
        num_features=input_channels,
    ),
    _module(
        "batchnorm1d", "torch.nn:BatchNorm1d", "Batch normalisation of features.", num_features=input_channels
    ),
    _module(
        "lrn",
        "torch.nn:LocalResponseNorm",
        "Local response normalisation; torch divides alpha by size, Krizhevsky et al. do not.",
    ),
    _module("relu", "torch.nn:ReLU", "Rectified linear unit."),
    _module("relu6", "torch.nn:ReLU6", "ReLU clipped at 6."),
    _module("sigmoid", "torch.nn:Sigmoid", "Logistic sigmoid."),
    _module("tanh", "torch.nn:Tanh", "Hyperbolic tangent."),
    _module("softmax", "torch.nn:Softmax", "Softmax over a dimension."),
    _module("maxpool2d", "torch.nn:MaxPool2d", "Max pooling."),
    _module("avgpool2d", "torch.nn:AvgPool2d", "Average pooling."),
    _module("adaptive_avgpool2d", "torch.nn:AdaptiveAvgPool2d", "Average pooling to a fixed output size."),
    _module("adaptive_maxpool2d", "torch.nn:AdaptiveMaxPool2d", "Max pooling to a fixed output size."),
    _module("dropout", "torch.nn:Dropout", "Dropout (identity in eval mode)."),
    _module("dropout2d", "torch.nn:Dropout2d", "Channel dropout."),
    _module("identity", "torch.nn:Identity", "Passes its input through."),
    _function("flatten", "torch:flatten", "Flatten dimensions from start_dim on."),
    _function("add", "operator:add", "Sum of two or more inputs (residual connections).", arity=None),
    _function(
        "add_",
        "operator:iadd",
        "Sum into the first input, in place (torchvision's `out += identity`: one tensor fewer).",
        arity=None,
        in_place=True,
    ),
    _function("mul", "operator:mul", "Elementwise product of two inputs (gates).", arity=2),
    _function("scale", "torch:mul", "Multiply by a constant `other` (residual scaling)."),
    _function("mean", "torch:mean", "Mean over `dim` (with `keepdim`): global average pooling."),
    _function("pad", "torch.nn.functional:pad", "Pad with `pad` (last dimension first), `value`."),
    _function("cat", "torch:cat", "Concatenation along `dim`.", arity=None, list_input=True),
)


class Catalogue:
    """The ops known to one registry: the built-ins plus what plugins contribute."""

    def __init__(self, ops: Sequence[Op] = BUILTIN_OPS):
        self._ops: dict[str, Op] = {}
        self._origin: dict[str, str] = {}
        for op in ops:
            self.add(op, origin="papers")

    def add(self, op: Op, *, origin: str) -> None:
        if op.name in self._ops:
            from papers.errors import PluginError

            raise PluginError(f"op {op.name!r} is contributed by both {self._origin[op.name]} and {origin}")
        self._ops[op.name] = op
        self._origin[op.name] = origin

    def __contains__(self, name: object) -> bool:
        return name in self._ops

    def __getitem__(self, name: str) -> Op:
        return self._ops[name]

    def names(self) -> list[str]:
        return sorted(self._ops)

    def origin(self, name: str) -> str:
        return self._origin[name]
