"""Park, Li, Wen, Tang, Li, Chen and Dubey, "Faster CNNs with Direct Sparse Convolutions and Guided
Pruning" (ICLR 2017, arXiv 1608.01409): the direct sparse convolution and its measured speed.

The kernel (Section 2). A convolution is a sparse matrix (the output channels × the input channels at
each kernel offset) times the dense input, where the input is never lowered into the im2col matrix:
for kernel offset (kh, kw), the input channel c's row that output position p reads is the padded
input shifted by kh rows and kw columns, so with the input flattened (channel-major, the batch's images
one after another, each padded) the rows an offset reads are one slice of it, the paper's "virtual"
lowering. With a stride s the padded input is split once into its s × s phases (the pixels at rows
≡ a and columns ≡ b mod s), a copy the size of the input, and offset (kh, kw) reads phase
(kh mod s, kw mod s) shifted by (kh div s, kw div s); so an offset is again one slice. The output is
the sum, over the kernel offsets that hold a non-zero, of that offset's CSR weights times its slice
(torch's CSR × dense product, MKL's where torch has it), computed over the padded width and cut back.
Positions past a row's end, which wrap into the next row, are computed and dropped, as in the paper.

Its speed (Section 3). Whether the sparse kernel beats the dense one depends on the layer's shape, the
sparsity and the machine, so it is measured here: :func:`time_geometry` times both on random weights
of a layer's shape at a grid of sparsities (the two interleaved, the fastest of each),
:func:`break_even` reads the sparsity from which the sparse kernel is faster, and the measured table is
cached for the process.
:class:`SparseConv2d` is an ``nn.Conv2d`` (the same arguments, weights and ``state_dict``) that runs
the sparse kernel where no gradient is wanted and where it measured faster, on its own weights and
input shape, than ``F.conv2d``; anywhere else (training, the meta device, groups or dilation, tracing)
it runs ``F.conv2d``.

Hand-written: no maintained library has a direct sparse convolution for torch on the CPU (torch's
sparse convolutions, like spconv's and MinkowskiEngine's, are for sparse inputs, not sparse weights).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

KERNELS = ("auto", "sparse", "dense")
"""How a :class:`SparseConv2d` chooses: timing both on its first input of a shape, or always one."""


@dataclass(frozen=True)
class SparseWeight:
    """A convolution's weights as one CSR matrix (out channels × in channels) per kernel offset that
    holds a non-zero, with where that offset reads the phased input."""

    out_channels: int
    in_channels: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    parts: tuple[tuple[int, int, int, torch.Tensor], ...]
    """(phase, row shift, column shift, CSR weights) for each offset with a non-zero."""
    nonzero: int

    @property
    def sparsity(self) -> float:
        total = self.out_channels * self.in_channels * self.kernel[0] * self.kernel[1]
        return 1.0 - self.nonzero / total


def sparse_weight(weight: torch.Tensor, stride: Sequence[int] = (1, 1)) -> SparseWeight:
    """``weight`` (out, in, kh, kw) split by kernel offset into CSR matrices, for ``stride``."""
    if weight.dim() != 4:
        raise ValueError(f"a convolution's weight is 4-D (out, in, kh, kw), not {tuple(weight.shape)}")
    out_channels, in_channels, height, width = weight.shape
    sh, sw = int(stride[0]), int(stride[1])
    detached = weight.detach()
    parts = []
    with warnings.catch_warnings():  # torch calls its CSR tensors beta on every first use
        warnings.filterwarnings("ignore", "Sparse CSR tensor support is in beta", UserWarning)
        for kh in range(height):
            for kw in range(width):
                plane = detached[:, :, kh, kw]
                if bool(plane.any()):
                    phase = (kh % sh) * sw + kw % sw
                    parts.append((phase, kh // sh, kw // sw, plane.contiguous().to_sparse_csr()))
    return SparseWeight(
        out_channels,
        in_channels,
        (height, width),
        (sh, sw),
        tuple(parts),
        int(torch.count_nonzero(detached)),
    )


def sparse_conv2d(
    input: torch.Tensor,
    weight: SparseWeight,
    bias: torch.Tensor | None = None,
    padding: Sequence[int] = (0, 0),
) -> torch.Tensor:
    """The convolution of ``input`` (N, C, H, W) with ``weight``'s non-zeros, zero ``padding`` (rows,
    columns), without an im2col matrix: equal to ``F.conv2d`` with the dense weights and the stride
    ``weight`` was split for."""
    batch, channels, height, width = input.shape
    if channels != weight.in_channels:
        raise ValueError(f"input has {channels} channels; the weights take {weight.in_channels}")
    (kh, kw), (sh, sw) = weight.kernel, weight.stride
    ph, pw = int(padding[0]), int(padding[1])
    padded_h, padded_w = height + 2 * ph, width + 2 * pw
    out_h, out_w = (padded_h - kh) // sh + 1, (padded_w - kw) // sw + 1
    if out_h < 1 or out_w < 1:
        raise ValueError(f"input {height}×{width} is smaller than the kernel {kh}×{kw} with its padding")
    rows, cols = math.ceil(padded_h / sh), math.ceil(padded_w / sw)
    # Zero padding, and up to whole phases at the bottom and right: those pixels feed no output.
    padded = F.pad(input, (pw, pw + cols * sw - padded_w, ph, ph + rows * sh - padded_h))
    positions = batch * rows * cols
    phases = (
        padded.view(batch, channels, rows, sh, cols, sw)
        .permute(3, 5, 1, 0, 2, 4)
        .reshape(sh * sw, channels, positions)
    )
    tail = ((kh - 1) // sh) * cols + (kw - 1) // sw  # the furthest an offset's slice reaches past the end
    phases = F.pad(phases, (0, tail))
    out = input.new_zeros(weight.out_channels, positions)
    for phase, row, col, matrix in weight.parts:
        shift = row * cols + col
        out.addmm_(matrix, phases[phase, :, shift : shift + positions])
    out = out.view(weight.out_channels, batch, rows, cols)[:, :, :out_h, :out_w].permute(1, 0, 2, 3)
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1)
    return out.contiguous()


class SparseConv2d(nn.Conv2d):
    """An ``nn.Conv2d`` that runs the direct sparse kernel where it measured faster (Park et al. 2017).

    ``kernel``: ``"auto"`` times both kernels on the first input of each shape (once per weights) and
    keeps the faster; ``"sparse"`` or ``"dense"`` always that one. Its weights, ``state_dict`` and
    training are ``nn.Conv2d``'s; ``timings`` holds what ``auto`` measured, by input shape:
    (dense seconds, sparse seconds)."""

    def __init__(self, *args: object, kernel: str = "auto", **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        if kernel not in KERNELS:
            raise ValueError(f"kernel is one of {', '.join(KERNELS)}, not {kernel!r}")
        self.kernel = kernel
        self.timings: dict[tuple[int, ...], tuple[float, float]] = {}
        self._sparse: SparseWeight | None = None
        self._version: tuple[int, int] | None = None

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, kernel={self.kernel}"

    def sparse(self) -> SparseWeight:
        """The weights as CSR matrices, remade whenever the weights change."""
        version = (self.weight._version, self.weight.data_ptr())
        if self._sparse is None or version != self._version:
            self._sparse = sparse_weight(self.weight, self.stride)
            self._version = version
            self.timings = {}
        return self._sparse

    def supported(self, input: torch.Tensor) -> bool:
        """Whether the sparse kernel can run here: no gradient wanted, no tracing, a real device, and a
        plain convolution (zero padding given as numbers, one group, no dilation)."""
        plain = (
            self.groups == 1
            and tuple(self.dilation) == (1, 1)
            and self.padding_mode == "zeros"
            and not isinstance(self.padding, str)
        )
        wants_grad = torch.is_grad_enabled() and (input.requires_grad or self.weight.requires_grad)
        tracing = torch.jit.is_tracing() or torch.compiler.is_compiling()
        return plain and not wants_grad and not tracing and input.device.type != "meta" and input.dim() == 4

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if self.kernel == "dense" or not self.supported(input):
            return super().forward(input)
        weight = self.sparse()
        run_sparse = lambda: sparse_conv2d(input, weight, self.bias, self.padding)  # noqa: E731
        if self.kernel == "auto":
            key = (*input.shape, input.dtype.itemsize, torch.get_num_threads())
            if key not in self.timings:
                dense, sparse = interleaved([lambda: super(SparseConv2d, self).forward(input), run_sparse])
                self.timings[key] = (dense, sparse)
            dense, sparse = self.timings[key]
            if sparse >= dense:
                return super().forward(input)
        return run_sparse()


def interleaved(runs: Sequence[Callable[[], object]], repeats: int = 5) -> list[float]:
    """The fastest seconds of each of ``runs``, timed in turn ``repeats`` times after one untimed call
    each: interleaved, so that a machine getting busier slows them alike, and the fastest, as timeit
    advises, since the slower runs measure the machine's other work (a shared machine's spikes)."""
    for run in runs:
        run()
    times: list[list[float]] = [[] for _ in runs]
    for _ in range(repeats):
        for run, timed in zip(runs, times, strict=True):
            start = time.perf_counter()
            run()
            timed.append(time.perf_counter() - start)
    return [min(timed) for timed in times]


# -- the measured performance model ------------------------------------------------------------------


@dataclass(frozen=True)
class Geometry:
    """A convolution layer's shape and the input it is timed on."""

    in_channels: int
    out_channels: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    height: int
    width: int
    batch: int = 1

    @classmethod
    def of(cls, conv: nn.Conv2d, input_shape: Sequence[int]) -> Geometry:
        """The geometry of ``conv`` on an input of ``input_shape`` (N, C, H, W)."""
        if isinstance(conv.padding, str):
            raise ValueError("padding given as a string; the sparse kernel takes numbers")
        return cls(
            conv.in_channels,
            conv.out_channels,
            (int(conv.kernel_size[0]), int(conv.kernel_size[1])),
            (int(conv.stride[0]), int(conv.stride[1])),
            (int(conv.padding[0]), int(conv.padding[1])),
            int(input_shape[2]),
            int(input_shape[3]),
            int(input_shape[0]),
        )

    def label(self) -> str:
        (kh, kw), (sh, _) = self.kernel, self.stride
        stride = f"/{sh}" if sh != 1 else ""
        return f"{self.in_channels}→{self.out_channels} {kh}×{kw}{stride} on {self.height}×{self.width}"


@dataclass(frozen=True)
class Timing:
    """One row of the measured chart: a sparsity, the dense and the sparse kernel's seconds."""

    sparsity: float
    dense_s: float
    sparse_s: float

    @property
    def speedup(self) -> float:
        return self.dense_s / self.sparse_s


_TABLES: dict[tuple[object, ...], tuple[Timing, ...]] = {}
"""Measured tables, for the process: a layer shape is timed once however many layers share it."""


def time_geometry(
    geometry: Geometry, sparsities: Sequence[float], *, repeats: int = 5, seed: int = 0
) -> tuple[Timing, ...]:
    """The dense (``F.conv2d``) and the sparse kernel's times on ``geometry`` at each sparsity: random
    weights with that fraction of zeros at random places, a random input, the two kernels interleaved.
    Cached for the process by the geometry, the sparsities, the repeats and torch's thread count."""
    for sparsity in sparsities:
        if not 0 <= sparsity < 1:
            raise ValueError(f"a sparsity is in [0, 1), not {sparsity}")
    key = (geometry, tuple(sparsities), repeats, seed, torch.get_num_threads())
    if key in _TABLES:
        return _TABLES[key]
    generator = torch.Generator().manual_seed(seed)
    kh, kw = geometry.kernel
    shape = (geometry.out_channels, geometry.in_channels, kh, kw)
    size = (geometry.batch, geometry.in_channels, geometry.height, geometry.width)
    image = torch.randn(size, generator=generator)
    rows = []
    with torch.inference_mode():
        for sparsity in sparsities:
            weight = torch.randn(shape, generator=generator)
            count = weight.numel()
            zeros = torch.randperm(count, generator=generator)[: round(count * sparsity)]
            weight.view(-1)[zeros] = 0.0
            sparse = sparse_weight(weight, geometry.stride)
            dense_s, sparse_s = interleaved(
                [
                    partial(F.conv2d, image, weight, None, geometry.stride, geometry.padding),
                    partial(sparse_conv2d, image, sparse, None, geometry.padding),
                ],
                repeats,
            )
            rows.append(Timing(sparsity, dense_s, sparse_s))
    _TABLES[key] = tuple(rows)
    return _TABLES[key]


def break_even(rows: Sequence[Timing]) -> float | None:
    """The sparsity from which the sparse kernel is faster, read from a measured table: between the
    last sparsity where it is slower and the next (where it is faster from there on), the point where
    the log speed-up crosses zero, linearly; the lowest sparsity timed where it is faster at all of
    them; ``None`` where it is slower at the highest."""
    ordered = sorted(rows, key=lambda row: row.sparsity)
    if not ordered or ordered[-1].speedup <= 1:
        return None
    first = len(ordered) - 1
    while first > 0 and ordered[first - 1].speedup > 1:
        first -= 1
    if first == 0:
        return ordered[0].sparsity
    slow, fast = ordered[first - 1], ordered[first]
    low, high = math.log(slow.speedup), math.log(fast.speedup)
    return slow.sparsity + (fast.sparsity - slow.sparsity) * (-low) / (high - low)


__all__ = [
    "Geometry",
    "SparseConv2d",
    "SparseWeight",
    "Timing",
    "break_even",
    "interleaved",
    "sparse_conv2d",
    "sparse_weight",
    "time_geometry",
]
