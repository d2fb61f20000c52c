"""Gong, Liu, Yang and Bourdev, "Compressing Deep Convolutional Networks using Vector Quantization"
(arXiv 1412.6115): a fully connected layer stored as codebooks and indices.

:class:`VQLinear` holds what vector quantization keeps of a weight matrix of ``out × in``: for each of
``stages`` stages and each of ``groups`` codebooks, ``clusters`` code vectors of ``dim`` weights (the
``codebook`` parameter), and for each stage, output unit and segment of ``dim`` inputs the index of
its code vector (the ``codes`` buffer, unsigned 8-bit up to 256 clusters, else 16 or 32-bit integers).
The weight is the sum over stages of the chosen code vectors laid side by side; the layer multiplies
by it as ``nn.Linear`` does. Its three uses:

- scalar quantization (k-means of all the weights): ``dim`` 1, one codebook, one stage;
- product quantization: ``dim`` inputs per segment, one codebook per segment, one stage;
- residual quantization: ``dim`` the whole row, one codebook, ``stages`` stages, each quantizing what
  the earlier ones left.

So the file ``papers compress`` writes holds the codebooks and the indices themselves, and its bytes
are what vector quantization stores. Hand-written: torch has no layer stored as codebook indices.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def code_dtype(clusters: int) -> torch.dtype:
    """The smallest integer type that holds an index below ``clusters``."""
    if clusters <= 1 << 8:
        return torch.uint8
    if clusters <= 1 << 15:
        return torch.int16
    return torch.int32


class VQLinear(nn.Module):
    """A fully connected layer whose weight is stored as codebooks and indices (see the module)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        clusters: int,
        dim: int = 1,
        groups: int = 1,
        stages: int = 1,
        bias: bool = True,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        if dim < 1 or in_features % dim:
            raise ValueError(f"{dim} weights per code vector do not divide {in_features} inputs")
        segments = in_features // dim
        if groups not in (1, segments):
            raise ValueError(f"groups is 1 (one codebook) or the {segments} segments, not {groups}")
        if clusters < 1 or stages < 1:
            raise ValueError("clusters and stages are positive")
        self.in_features, self.out_features = in_features, out_features
        self.clusters, self.dim, self.groups, self.stages = clusters, dim, groups, stages
        factory = {"device": device, "dtype": dtype}
        self.codebook = nn.Parameter(torch.zeros(stages, groups, clusters, dim, **factory))
        codes = torch.zeros(stages, out_features, segments, dtype=code_dtype(clusters), device=device)
        self.register_buffer("codes", codes)
        self.bias = nn.Parameter(torch.zeros(out_features, **factory)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Empty codebooks (every index 0, every code vector zero) and ``nn.Linear``'s bias: the
        ``vector_quantize`` method fills them from trained weights."""
        with torch.no_grad():
            self.codebook.zero_()
            self.codes.zero_()
            if self.bias is not None:
                bound = 1 / self.in_features**0.5
                nn.init.uniform_(self.bias, -bound, bound)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, clusters={self.clusters}, "
            f"dim={self.dim}, groups={self.groups}, stages={self.stages}, bias={self.bias is not None}"
        )

    def dense_weight(self) -> torch.Tensor:
        """The ``out × in`` weight the codebooks and indices stand for."""
        segments = self.in_features // self.dim
        indices = self.codes.long()
        total = None
        for stage in range(self.stages):
            book = self.codebook[stage]  # groups × clusters × dim
            if self.groups == 1:
                vectors = book[0][indices[stage]]  # out × segments × dim
            else:
                segment = torch.arange(segments, device=indices.device)
                vectors = book[segment, indices[stage]]
            total = vectors if total is None else total + vectors
        assert total is not None
        return total.reshape(self.out_features, self.in_features)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.linear(input, self.dense_weight(), self.bias)
