"""Vanhoucke, Senior and Mao, "Improving the speed of neural networks on CPUs" (NIPS 2011 Deep Learning
workshop): fully connected and convolution layers run by real 8-bit integer kernels on the CPU.

The paper (Section 4.1) stores each layer's weights as signed 8-bit integers, scaled by the layer's
largest magnitude into [-127, 127], and its activations as unsigned 8-bit integers; the products are
accumulated in 32-bit integers (SSSE3's ``pmaddubsw``, Section 4.2) and the sums scaled back. Here
the kernels are torch's: ``quantized::linear_dynamic`` (FBGEMM on x86, the kernel behind
``torch.ao.quantization.quantize_dynamic``), which quantizes the activations of each call to unsigned
8 bits over their observed range, multiplies them with the int8 weights with 32-bit accumulation and
gives float outputs with the float bias added. A convolution is lowered by ``F.unfold`` (im2col, in
float) and its product run by the same int8 kernel: torch's ``quantized::conv2d_dynamic`` gave wrong
outputs in this build (torch 2.14), and its static ``quantized::conv2d`` needs an output range known
in advance.

:class:`Int8Linear` and :class:`Int8Conv2d` keep ``nn.Linear``'s and ``nn.Conv2d``'s float weights,
arguments and ``state_dict``, so the registry's container stores them like any layer; they pack their
weights into int8 (per layer, as the paper, or per output channel) whenever the weights change, and run
the int8 kernel where it can run: no gradient wanted, float32 on the CPU, no tracing, and a quantized
engine that has the kernel. Anywhere else (training, the meta device on which the registry measures,
CUDA) they run the float layer on their float weights. The ``int8_quantize`` method sets the float
weights to the int8 grid first, so the float fallback computes with the very weights the kernel holds.

Hand-written: the lowering of a convolution onto the int8 matrix product (a few lines around
``F.unfold``) and the cache of packed weights; the kernels are torch's.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

GRANULARITIES = ("layer", "channel")
"""One scale per layer (the paper's: the layer's largest magnitude) or one per output channel."""


def levels(bits: int) -> int:
    """The largest code of symmetric ``bits``-bit weights: 127 at 8 bits (the paper's [-127, 127])."""
    if not 2 <= bits <= 8:
        raise ValueError(f"int8 kernels hold codes of 2 to 8 bits, not {bits}")
    return (1 << (bits - 1)) - 1


def weight_scale(weight: torch.Tensor, granularity: str, bits: int = 8) -> torch.Tensor:
    """The scale of each code: the largest magnitude of the layer (a 0-d tensor) or of each output
    channel (one per row), divided by the largest code; 1 where the weights are all zero."""
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity is one of {', '.join(GRANULARITIES)}, not {granularity!r}")
    magnitude = weight.detach().abs()
    largest = magnitude.amax() if granularity == "layer" else magnitude.reshape(len(weight), -1).amax(1)
    scale = largest.float() / levels(bits)
    return torch.where(scale > 0, scale, torch.ones_like(scale))


def int8_codes(weight: torch.Tensor, granularity: str, bits: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """``weight`` as int8 codes and their scales (:func:`weight_scale`): ``codes × scale`` approximates
    it, each code the nearest in [-levels, levels]."""
    scale = weight_scale(weight, granularity, bits)
    shaped = scale if scale.dim() == 0 else scale.view(-1, *([1] * (weight.dim() - 1)))
    top = levels(bits)
    codes = torch.round(weight.detach().float() / shaped).clamp_(-top, top).to(torch.int8)
    return codes, scale


def on_grid(weight: torch.Tensor, granularity: str, bits: int = 8) -> torch.Tensor:
    """The float weights the int8 codes stand for (``codes × scale``, the weight's dtype and shape)."""
    codes, scale = int8_codes(weight, granularity, bits)
    shaped = scale if scale.dim() == 0 else scale.view(-1, *([1] * (weight.dim() - 1)))
    return (codes.float() * shaped).to(weight.dtype)


def kernel_available() -> bool:
    """Whether torch's int8 dynamic matrix product runs here (a quantized engine with it: x86's FBGEMM
    or oneDNN, or QNNPACK on ARM)."""
    return torch.backends.quantized.engine in ("x86", "fbgemm", "onednn", "qnnpack")


def _pack(matrix: torch.Tensor, bias: torch.Tensor | None, granularity: str, bits: int) -> Any:
    """``matrix`` (out × in) quantized to int8 and packed for ``quantized::linear_dynamic``."""
    codes, scale = int8_codes(matrix, granularity, bits)
    with warnings.catch_warnings():  # torch 2.14 marks quantized tensor creation as deprecated
        warnings.simplefilter("ignore")
        if scale.dim() == 0:
            quantized = torch._make_per_tensor_quantized_tensor(codes, float(scale), 0)
        else:
            zeros = torch.zeros(len(scale), dtype=torch.long)
            quantized = torch._make_per_channel_quantized_tensor(codes, scale.double(), zeros, 0)
        return torch.ops.quantized.linear_prepack(quantized, None if bias is None else bias.detach().float())


class _Int8Mixin:
    """What both layers share: the packed weights, remade when the weights change, and the test of
    whether the int8 kernel can run on an input."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    granularity: str
    bits: int
    reduce_range: bool

    def __init__(
        self, *args: Any, granularity: str = "layer", bits: int = 8, reduce_range: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)  # the torch layer's (next in the subclass's order)
        self._setup(granularity, bits, reduce_range)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, granularity={self.granularity}, bits={self.bits}"

    def _setup(self, granularity: str, bits: int, reduce_range: bool) -> None:
        if granularity not in GRANULARITIES:
            raise ValueError(f"granularity is one of {', '.join(GRANULARITIES)}, not {granularity!r}")
        levels(bits)
        self.granularity, self.bits, self.reduce_range = granularity, bits, bool(reduce_range)
        self._packed: Any = None
        self._version: tuple[int, ...] | None = None

    def packed(self) -> Any:
        """The int8 weights packed for the kernel (remade whenever the weights or the bias change)."""
        bias = self.bias
        version = (
            self.weight._version,
            self.weight.data_ptr(),
            -1 if bias is None else bias._version,
            0 if bias is None else bias.data_ptr(),
        )
        if self._packed is None or version != self._version:
            self._packed = _pack(self.weight.reshape(len(self.weight), -1), bias, self.granularity, self.bits)
            self._version = version
        return self._packed

    def runs_int8(self, input: torch.Tensor) -> bool:
        """Whether this call runs the int8 kernel (else the float layer): no gradient wanted, float32 on
        the CPU, no tracing or compiling, and a quantized engine with the kernel."""
        wants_grad = torch.is_grad_enabled() and (input.requires_grad or self.weight.requires_grad)
        tracing = torch.jit.is_tracing() or torch.compiler.is_compiling()
        return (
            not wants_grad
            and not tracing
            and input.device.type == "cpu"
            and self.weight.device.type == "cpu"
            and input.dtype == torch.float32
            and kernel_available()
        )


class Int8Linear(_Int8Mixin, nn.Linear):
    """An ``nn.Linear`` whose product runs on int8 weights and unsigned 8-bit activations with 32-bit
    accumulation (Vanhoucke et al. 2011, Section 4), by torch's ``quantized::linear_dynamic``."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not self.runs_int8(input) or input.numel() == 0:
            return F.linear(input, self.weight, self.bias)
        rows = input.reshape(-1, self.in_features).contiguous()
        output = torch.ops.quantized.linear_dynamic(rows, self.packed(), self.reduce_range)
        return output.reshape(*input.shape[:-1], self.out_features)


class Int8Conv2d(_Int8Mixin, nn.Conv2d):
    """An ``nn.Conv2d`` lowered by im2col (``F.unfold``, float) onto the int8 product of
    :class:`Int8Linear`; a grouped convolution, or one with non-zero padding modes or padding given as a
    string, runs in float."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        plain = self.groups == 1 and self.padding_mode == "zeros" and not isinstance(self.padding, str)
        if not plain or input.dim() != 4 or not self.runs_int8(input) or input.numel() == 0:
            return super().forward(input)
        batch, _, height, width = input.shape
        out_h, out_w = (
            (size + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1
            for size, pad, dilation, kernel, stride in zip(
                (height, width), self.padding, self.dilation, self.kernel_size, self.stride, strict=True
            )
        )
        columns = F.unfold(input, self.kernel_size, self.dilation, self.padding, self.stride)
        rows = columns.transpose(1, 2).reshape(batch * out_h * out_w, -1).contiguous()
        output = torch.ops.quantized.linear_dynamic(rows, self.packed(), self.reduce_range)
        return (
            output.view(batch, out_h * out_w, self.out_channels)
            .transpose(1, 2)
            .reshape(batch, self.out_channels, out_h, out_w)
        )
