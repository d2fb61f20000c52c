"""Gong, Liu, Yang and Bourdev, "Compressing Deep Convolutional Networks using Vector Quantization"
(arXiv 1412.6115): a fully connected layer stored as codebooks and indices.

:class:`VQLinear` holds what vector quantization keeps of a weight matrix of ``out × in``: for each of
``stages`` stages and each of ``groups`` codebooks, ``clusters`` code vectors of ``dim`` weights (the
``codebook`` parameter), and for each stage, output unit and segment of ``dim`` inputs the index of
its code vector (the ``codes`` buffer: the indices packed at ceil(log2 clusters) bits each, least
significant bit first, in uint8 bytes; :meth:`VQLinear.set_indices` packs them, :meth:`VQLinear.indices`
unpacks them).
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

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def index_bits(clusters: int) -> int:
    """Bits of an index below ``clusters`` (at least 1)."""
    return max(1, (clusters - 1).bit_length())


def pack_indices(indices: torch.Tensor, bits: int) -> torch.Tensor:
    """Non-negative integers below ``2**bits`` packed at ``bits`` bits each, least significant first,
    into a 1-D uint8 tensor (the last byte padded with zeros)."""
    flat = indices.reshape(-1).long()
    planes = (flat.unsqueeze(1) >> torch.arange(bits, device=flat.device)) & 1
    stream = planes.reshape(-1)
    stream = torch.cat([stream, stream.new_zeros(-len(stream) % 8)])
    weights = 1 << torch.arange(8, device=flat.device)
    return (stream.view(-1, 8) * weights).sum(1).to(torch.uint8)


def unpack_indices(packed: torch.Tensor, count: int, bits: int) -> torch.Tensor:
    """The ``count`` integers :func:`pack_indices` packed at ``bits`` bits, as int64."""
    stream = (packed.long().unsqueeze(1) >> torch.arange(8, device=packed.device)) & 1
    planes = stream.reshape(-1)[: count * bits].view(count, bits)
    return (planes << torch.arange(bits, device=packed.device)).sum(1)


def cached_indices(module: nn.Module, buffer: str, shape: tuple[int, ...], bits: int) -> torch.Tensor:
    """``module``'s packed ``buffer`` unpacked to ``shape``, kept until the buffer changes."""
    packed = getattr(module, buffer)
    if packed.device.type == "meta":
        return torch.zeros(shape, dtype=torch.long, device="meta")
    key = (packed._version, packed.data_ptr())
    cache = module.__dict__.setdefault("_unpacked", {})
    if cache.get(buffer, (None,))[0] != key:
        with torch.inference_mode(False):  # a cache made in inference mode could not serve autograd later
            cache[buffer] = (key, unpack_indices(packed, math.prod(shape), bits).view(shape))
    return cache[buffer][1]


def store_indices(module: nn.Module, buffer: str, indices: torch.Tensor, bound: int, what: str) -> None:
    """Check ``indices`` (``module.index_shape``, each below ``bound``); store them packed in ``buffer``."""
    if tuple(indices.shape) != module.index_shape or int(indices.min()) < 0 or int(indices.max()) >= bound:
        raise ValueError(f"{what} of shape {module.index_shape} below {bound} expected")
    packed = getattr(module, buffer)
    with torch.no_grad():
        packed.copy_(pack_indices(indices.to(packed.device), module.bits))


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
        self.bits = index_bits(clusters)
        self.index_shape = (stages, out_features, segments)
        packed = math.ceil(stages * out_features * segments * self.bits / 8)
        self.register_buffer("codes", torch.zeros(packed, dtype=torch.uint8, device=device))
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

    def indices(self) -> torch.Tensor:
        """The indices (stages × out × segments), unpacked from ``codes``."""
        return cached_indices(self, "codes", self.index_shape, self.bits)

    def set_indices(self, indices: torch.Tensor) -> None:
        """Store ``indices`` (stages × out × segments, each below ``clusters``) packed in ``codes``."""
        store_indices(self, "codes", indices, self.clusters, "indices")

    def dense_weight(self) -> torch.Tensor:
        """The ``out × in`` weight the codebooks and indices stand for."""
        segments = self.in_features // self.dim
        indices = self.indices()
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
