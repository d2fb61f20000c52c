"""The op catalogue: every operation a graph node may name, and how to make it.

An op is either a module (a layer with parameters or state, placed in the model under the node's
name so ``state_dict`` keys are the spec's) or a function (``add``, ``cat``: no state, called in the
generated ``forward``). Arguments the builder can infer from input shapes (a conv's input channels,
a linear layer's input features) are filled in, so specs give only what the paper gives.

Targets are import paths, resolved on first use: this module must stay importable without torch.
They are torch's and torchvision's layers, and ``papers.layers`` for the few that neither has.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from papers.errors import GraphError

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
    """Whether the op can do multiply-adds (a convolution or a matrix product inside): its MACs are what
    torch's FLOP counter counts. ``False`` runs it outside the counter, whose dispatch costs more than
    such an op (a batch norm) itself, and counts zero. Every module op counts unless it says otherwise;
    the counter does not see torchvision's own ops (``roi_align``), so they say ``False``."""
    items: tuple[str, ...] | Callable[[Mapping[str, Any]], tuple[str, ...]] = ()
    """Names of the outputs of an op that gives several (a tuple), or a function of the node's
    arguments giving them (``maxpool2d`` with ``return_indices``): a graph reads them as ``node.item``,
    and the node itself stands for the first."""

    def items_for(self, args: Mapping[str, Any]) -> tuple[str, ...]:
        """The names of this op's outputs for a node with ``args`` (empty: one tensor)."""
        return self.items(args) if callable(self.items) else self.items

    def resolve(self) -> Any:
        module, _, attribute = self.target.partition(":")
        try:
            return getattr(importlib.import_module(module), attribute)
        except ModuleNotFoundError as error:  # an op from a package this environment lacks
            raise GraphError(
                f"op {self.name!r} needs the {error.name!r} package, which is not installed "
                f"(pip install {error.name})"
            ) from None


def _module(
    name: str,
    target: str,
    doc: str,
    *,
    arity: int | None = 1,
    counts_macs: bool = True,
    **inferred: Callable[[Sequence[Shape]], Any],
) -> Op:
    return Op(name, target, "module", inferred, arity=arity, doc=doc, counts_macs=counts_macs)


def _function(
    name: str,
    target: str,
    doc: str,
    *,
    arity: int | None = 1,
    list_input: bool = False,
    in_place: bool = False,
    counts_macs: bool = False,
) -> Op:
    """A function op: the built-in ones are elementwise, reshapes or lookups, so none counts MACs."""
    return Op(
        name,
        target,
        "function",
        arity=arity,
        list_input=list_input,
        doc=doc,
        in_place=in_place,
        counts_macs=counts_macs,
    )


_ROI = (
    ": features [N, C, H, W] and rois [K, 5] (batch index, x1, y1, x2, y2) give [K, C', *output_size];"
    " `spatial_scale` maps boxes to the features. torch's FLOP counter does not see torchvision's ops:"
    " zero MACs."
)
"""The end of the four RoI ops' docs."""


def _pooling_items(args: Mapping[str, Any]) -> tuple[str, ...]:
    """A max pooling that returns its indices gives two outputs (SegNet's unpooling reads the second)."""
    return ("out", "indices") if args.get("return_indices") else ()


BUILTIN_OPS: tuple[Op, ...] = (
    _module(
        "conv2d", "torch.nn:Conv2d", "2-D convolution; in_channels inferred.", in_channels=input_channels
    ),
    _module(
        "conv_transpose2d",
        "torch.nn:ConvTranspose2d",
        "Transposed 2-D convolution (learned upsampling, FCN's deconvolution); in_channels inferred.",
        in_channels=input_channels,
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
        counts_macs=False,
        num_features=input_channels,
    ),
    _module(
        "batchnorm1d",
        "torch.nn:BatchNorm1d",
        "Batch normalisation of features.",
        counts_macs=False,
        num_features=input_channels,
    ),
    _module(
        "frozen_batchnorm2d",
        "torchvision.ops.misc:FrozenBatchNorm2d",
        "Batch normalisation with fixed statistics and affine (detection backbones); state: weight, bias, "
        "running_mean, running_var, no num_batches_tracked; num_features inferred.",
        counts_macs=False,
        num_features=input_channels,
    ),
    _module(
        "group_norm",
        "torch.nn:GroupNorm",
        "Group normalisation over `num_groups` groups of channels; num_channels inferred.",
        counts_macs=False,
        num_channels=input_channels,
    ),
    _module(
        "lrn",
        "torch.nn:LocalResponseNorm",
        "Local response normalisation; torch divides alpha by size, Krizhevsky et al. do not.",
        counts_macs=False,
    ),
    _module("relu", "torch.nn:ReLU", "Rectified linear unit.", counts_macs=False),
    _module("relu6", "torch.nn:ReLU6", "ReLU clipped at 6.", counts_macs=False),
    _module(
        "leaky_relu",
        "torch.nn:LeakyReLU",
        "Leaky ReLU with slope `negative_slope` below zero (Darknet's leaky: 0.1).",
        counts_macs=False,
    ),
    _module("sigmoid", "torch.nn:Sigmoid", "Logistic sigmoid.", counts_macs=False),
    _module("tanh", "torch.nn:Tanh", "Hyperbolic tangent.", counts_macs=False),
    _module("softmax", "torch.nn:Softmax", "Softmax over a dimension.", counts_macs=False),
    replace(
        _module(
            "maxpool2d",
            "torch.nn:MaxPool2d",
            "Max pooling; with `return_indices`, items `out`, `indices`.",
            counts_macs=False,
        ),
        items=_pooling_items,
    ),
    _module("avgpool2d", "torch.nn:AvgPool2d", "Average pooling.", counts_macs=False),
    _module(
        "adaptive_avgpool2d",
        "torch.nn:AdaptiveAvgPool2d",
        "Average pooling to a fixed output size.",
        counts_macs=False,
    ),
    _module(
        "adaptive_maxpool2d",
        "torch.nn:AdaptiveMaxPool2d",
        "Max pooling to a fixed output size.",
        counts_macs=False,
    ),
    _module("dropout", "torch.nn:Dropout", "Dropout (identity in eval mode).", counts_macs=False),
    _module("dropout2d", "torch.nn:Dropout2d", "Channel dropout.", counts_macs=False),
    _module("identity", "torch.nn:Identity", "Passes its input through.", counts_macs=False),
    _module(
        "upsample",
        "torch.nn:Upsample",
        "Upsampling by `scale_factor` or to `size`; `mode` nearest (default) or bilinear (`align_corners`).",
        counts_macs=False,
    ),
    _module(
        "roi_pool",
        "torchvision.ops:RoIPool",
        "RoI max pooling (Fast R-CNN)" + _ROI,
        arity=2,
        counts_macs=False,
    ),
    _module(
        "roi_align",
        "torchvision.ops:RoIAlign",
        "RoIAlign (Mask R-CNN), with `sampling_ratio` and `aligned`" + _ROI,
        arity=2,
        counts_macs=False,
    ),
    _module(
        "ps_roi_pool",
        "torchvision.ops:PSRoIPool",
        "Position-sensitive RoI pooling (R-FCN); C a multiple of the bins" + _ROI,
        arity=2,
        counts_macs=False,
    ),
    _module(
        "ps_roi_align",
        "torchvision.ops:PSRoIAlign",
        "Position-sensitive RoIAlign, with `sampling_ratio`; C a multiple of the bins" + _ROI,
        arity=2,
        counts_macs=False,
    ),
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
    _function(
        "max_unpool2d",
        "torch.nn.functional:max_unpool2d",
        "Max unpooling (SegNet) of the first input at the second's pooling indices; `kernel_size`, "
        "`stride`, `padding` as the pooling's, `output_size` where the pooled size was odd.",
        arity=2,
    ),
    _function(
        "resize_as",
        "papers.layers:resize_as",
        "Resize the first input to the second's spatial size; `mode` bilinear (default) or nearest, "
        "`align_corners`.",
        arity=2,
    ),
    _function(
        "crop_as",
        "papers.layers:crop_as",
        "Crop the first input to the second's spatial size from `offset` (one, or one per dimension): "
        "FCN's crop.",
        arity=2,
    ),
    _function(
        "darknet_reorg",
        "papers.layers:darknet_reorg",
        "Darknet's reorg layer by `stride` (YOLOv2's passthrough as its C code orders the elements): "
        "[N, C, H, W] to [N, C·s², H/s, W/s].",
    ),
    _function(
        "flatten_anchors",
        "papers.layers:flatten_anchors",
        "A dense head's map [N, A·K, H, W] as [N, H·W·A, K]: one row per anchor, position-major "
        "(torchvision's RetinaNet and RPN order); `values` is K.",
    ),
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
