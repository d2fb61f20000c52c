"""Wu, Leng, Wang, Hu and Cheng, "Quantized Convolutional Neural Networks for Mobile Devices" (CVPR
2016, arXiv 1512.06473): layers stored as sub-codebooks and assignments, run by table lookup.

A layer's input dimension is split into ``subspaces`` of ``dim`` values (a fully connected layer's
inputs; a convolution's input channels). Each subspace has a sub-codebook of ``codewords`` vectors of
``dim`` values, and each output unit (each output channel at each kernel position, for a convolution)
stores, per subspace, the index of the sub-codeword that stands for its weights there. At test time
the layer computes, per subspace, the inner products of the input's piece with every sub-codeword
(a lookup table: ``codewords × dim`` multiply-adds per subspace, once per input position), and each
output is the sum of the table entries its indices pick: additions only. For a convolution the table
is computed once per input position and read at every kernel offset (the sub-codebooks are shared by
the kernel positions); the lookups are an unfold of the table and one ``F.embedding_bag`` sum per
output channel (a fully connected layer's, one ``torch.gather`` per input row). These are torch-level
gathers, memory-bound: ``benchmarks/qcnn_lookup.py`` measures them far slower than the dense BLAS
products here, where the paper's speed-ups come from its own native code.

:class:`QLinear` and :class:`QConv2d` hold ``codebooks`` (subspaces × codewords × dim) and the
``assignments`` buffer (packed at ceil(log2 codewords) bits each, as ``vq_linear`` packs its
indices); their ``dense_weight()`` rebuilds the weight they stand for, which training and the meta
device use instead of the tables. Hand-written: no library runs product-quantized layers by lookup
tables in torch.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from papers_plugins.compression.vq_linear import cached_indices, index_bits, store_indices


def _tables_run(input: torch.Tensor, codebooks: torch.Tensor) -> bool:
    """Whether to run the lookup tables (no gradient wanted, a real device), else the dense weight."""
    wants_grad = torch.is_grad_enabled() and (input.requires_grad or codebooks.requires_grad)
    return not wants_grad and input.device.type != "meta" and not torch.jit.is_tracing()


class _SubCodebooks(nn.Module):
    """What both layers share: ``subspaces`` sub-codebooks of ``codewords`` words of ``dim`` values, the
    assignments packed in a buffer, an optional bias of the last index dimension's size."""

    subspaces: int
    codewords: int
    dim: int

    def _store(self, index_shape: tuple[int, ...], bias: bool, device: Any, dtype: Any) -> None:
        self.codebooks = nn.Parameter(
            torch.zeros(self.subspaces, self.codewords, self.dim, device=device, dtype=dtype)
        )
        self.index_shape = index_shape
        self.bits = index_bits(self.codewords)
        packed = math.ceil(math.prod(self.index_shape) * self.bits / 8)
        self.register_buffer("assignments", torch.zeros(packed, dtype=torch.uint8, device=device))
        outputs = index_shape[-1]
        self.bias = nn.Parameter(torch.zeros(outputs, device=device, dtype=dtype)) if bias else None

    def reset_parameters(self) -> None:
        """Empty sub-codebooks and assignments: the ``qcnn_quantize`` method fills them."""
        with torch.no_grad():
            self.codebooks.zero_()
            self.assignments.zero_()
            if self.bias is not None:
                self.bias.zero_()

    def indices(self) -> torch.Tensor:
        """The assignments, unpacked from the ``assignments`` buffer."""
        return cached_indices(self, "assignments", self.index_shape, self.bits)

    def set_indices(self, indices: torch.Tensor) -> None:
        """Store ``indices`` (of the assignments' shape, each below ``codewords``) packed."""
        store_indices(self, "assignments", indices, self.codewords, "assignments")


class QLinear(_SubCodebooks):
    """A fully connected layer as sub-codebooks and assignments (see the module)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        dim: int,
        codewords: int,
        bias: bool = True,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        if dim < 1 or in_features % dim:
            raise ValueError(f"subspaces of {dim} do not divide {in_features} inputs")
        self.in_features, self.out_features, self.dim, self.codewords = (
            in_features,
            out_features,
            dim,
            codewords,
        )
        self.subspaces = in_features // dim
        self._store((self.subspaces, out_features), bias, device, dtype)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, dim={self.dim}, codewords={self.codewords}"

    def dense_weight(self) -> torch.Tensor:
        """The ``out × in`` weight the sub-codewords stand for."""
        index = self.indices()  # subspaces × out
        rows = torch.arange(self.subspaces, device=index.device).unsqueeze(1)
        pieces = self.codebooks[rows, index]  # subspaces × out × dim
        return pieces.permute(1, 0, 2).reshape(self.out_features, self.in_features)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not _tables_run(input, self.codebooks):
            return F.linear(input, self.dense_weight(), self.bias)
        rows = input.reshape(-1, self.subspaces, self.dim)
        table = torch.einsum("nsd,skd->nsk", rows, self.codebooks)  # inner products with every codeword
        offsets = torch.arange(self.subspaces, device=input.device).unsqueeze(1) * self.codewords
        bags = (self.indices() + offsets).T  # out × subspaces: entries of the flat table
        flat = table.reshape(len(rows), -1)
        # one gather per input row: faster here than embedding_bag, whose bags would be one value wide
        output = torch.stack([torch.gather(row.expand(len(bags), -1), 1, bags).sum(1) for row in flat])
        if self.bias is not None:
            output = output + self.bias
        return output.reshape(*input.shape[:-1], self.out_features)


class QConv2d(_SubCodebooks):
    """A convolution as sub-codebooks over its input channels, shared by the kernel positions, and
    each output channel's assignment per kernel position and subspace (see the module)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        *,
        dim: int,
        codewords: int,
        bias: bool = True,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        if dim < 1 or in_channels % dim:
            raise ValueError(f"subspaces of {dim} channels do not divide {in_channels} input channels")
        pair = lambda value: (value, value) if isinstance(value, int) else tuple(value)  # noqa: E731
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = pair(kernel_size), pair(stride), pair(padding)
        self.dim, self.codewords, self.subspaces = dim, codewords, in_channels // dim
        positions = self.kernel_size[0] * self.kernel_size[1]
        self._store((positions, self.subspaces, out_channels), bias, device, dtype)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, dim={self.dim}, codewords={self.codewords}"
        )

    def dense_weight(self) -> torch.Tensor:
        """The ``out × in × kh × kw`` kernel the sub-codewords stand for."""
        index = self.indices()  # positions × subspaces × out
        rows = torch.arange(self.subspaces, device=index.device).view(1, -1, 1)
        pieces = self.codebooks[rows, index]  # positions × subspaces × out × dim
        height, width = self.kernel_size
        kernel = pieces.permute(2, 1, 3, 0).reshape(self.out_channels, self.in_channels, height, width)
        return kernel

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not _tables_run(input, self.codebooks):
            return F.conv2d(input, self.dense_weight(), self.bias, self.stride, self.padding)
        batch, _, height, width = input.shape
        pieces = input.reshape(batch, self.subspaces, self.dim, height, width)
        table = torch.einsum("nsdhw,skd->nskhw", pieces, self.codebooks)  # once per input position
        table = table.reshape(batch, self.subspaces * self.codewords, height, width)
        columns = F.unfold(table, self.kernel_size, padding=self.padding, stride=self.stride)
        locations = columns.shape[-1]
        # unfold orders its rows (subspace, codeword, kernel row, kernel column)
        positions = self.kernel_size[0] * self.kernel_size[1]
        index = self.indices()  # positions × subspaces × out
        subspace = torch.arange(self.subspaces, device=input.device).view(1, -1, 1)
        position = torch.arange(positions, device=input.device).view(-1, 1, 1)
        rows = (subspace * self.codewords + index) * positions + position
        bags = rows.permute(2, 0, 1).reshape(self.out_channels, -1)
        flat = columns.permute(1, 0, 2).reshape(columns.shape[1], batch * locations)
        output = F.embedding_bag(bags, flat, mode="sum")  # out × (batch · locations)
        output = output.view(self.out_channels, batch, locations).transpose(0, 1)
        if self.bias is not None:
            output = output + self.bias.view(1, -1, 1)
        out_h = (height + 2 * self.padding[0] - self.kernel_size[0]) // self.stride[0] + 1
        out_w = (width + 2 * self.padding[1] - self.kernel_size[1]) // self.stride[1] + 1
        return output.reshape(batch, self.out_channels, out_h, out_w)
