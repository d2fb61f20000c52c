"""Juefei-Xu, Boddeti and Savvides, "Local Binary Convolutional Neural Networks" (CVPR 2017, arXiv
1608.06049): the local binary convolution layer.

:class:`LBConv2d` stands in for a convolution of ``in_channels → out_channels`` with an ``h × w``
kernel: ``intermediate`` fixed anchor filters of that kernel, sparse and ternary (each weight +1 or
-1 with equal chance where it is kept, 0 elsewhere; ``nonzero`` is the kept fraction), convolve the
input; a non-linearity (ReLU) follows; a learned 1×1 convolution combines the ``intermediate`` maps
into ``out_channels``. The anchors are drawn once from ``seed`` and stored as a buffer, never
trained: only the 1×1 combination (and its bias) is learned, ``intermediate × out_channels``
weights where the convolution learns ``in_channels × h × w × out_channels``.

Hand-written: no maintained library has this layer (it is two torch convolutions and a ReLU; the
ternary anchors are drawn here).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def anchor_weights(
    out_channels: int, in_channels: int, kernel: tuple[int, int], nonzero: float, seed: int
) -> torch.Tensor:
    """Sparse ternary filters: each weight kept with probability ``nonzero``, then +1 or -1 evenly."""
    if not 0 < nonzero <= 1:
        raise ValueError(f"the kept fraction of anchor weights is in (0, 1], not {nonzero}")
    generator = torch.Generator().manual_seed(seed)
    shape = (out_channels, in_channels, *kernel)
    signs = torch.randint(0, 2, shape, generator=generator).float() * 2 - 1
    kept = torch.rand(shape, generator=generator) < nonzero
    return signs * kept


class LBConv2d(nn.Module):
    """Fixed sparse ternary anchor filters, a ReLU and a learned 1×1 combination (see the module)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        *,
        intermediate: int,
        nonzero: float = 0.5,
        seed: int = 0,
        bias: bool = True,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        kernel = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
        if intermediate < 1:
            raise ValueError(f"intermediate channels are positive, not {intermediate}")
        self.in_channels, self.out_channels, self.intermediate = in_channels, out_channels, intermediate
        self.kernel_size, self.stride, self.padding = kernel, stride, padding
        self.nonzero, self.seed = nonzero, seed
        anchors = anchor_weights(intermediate, in_channels, kernel, nonzero, seed)
        self.register_buffer("anchors", anchors.to(device=device, dtype=dtype or torch.float32))
        self.combine = nn.Conv2d(intermediate, out_channels, 1, bias=bias, device=device, dtype=dtype)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, intermediate={self.intermediate}, nonzero={self.nonzero}"
        )

    def reset_parameters(self) -> None:
        """The anchors drawn again from the seed, and the 1×1 combination's default initialisation."""
        with torch.no_grad():
            anchors = anchor_weights(
                self.intermediate, self.in_channels, self.kernel_size, self.nonzero, self.seed
            )
            self.anchors.copy_(anchors)
        self.combine.reset_parameters()

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        responses = F.conv2d(input, self.anchors, None, self.stride, self.padding)
        return self.combine(F.relu(responses))
