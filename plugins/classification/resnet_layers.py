"""The option-A shortcut of ResNet (He et al., 2016, Section 3.3): identity with zero padding.

Imported only when a model is built (the plugin module itself does not import torch).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ShortcutA(nn.Module):
    """Parameter-free shortcut: subsample with ``stride`` and append zero channels up to ``out_channels``.

    Option A of the paper: "the shortcut still performs identity mapping, with extra zero entries
    padded for increasing dimensions"; across feature maps of two sizes it is "performed with a stride
    of 2", i.e. it keeps every other row and column. The paper does not say where the zero channels go;
    they are appended after the input's channels here (any placement is the same network up to a
    permutation of channels).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        if out_channels < in_channels:
            raise ValueError(f"out_channels ({out_channels}) must be at least in_channels ({in_channels})")
        if stride < 1:
            raise ValueError(f"stride must be positive, got {stride}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        extra = self.out_channels - self.in_channels
        if extra:
            x = F.pad(x, (0, 0, 0, 0, 0, extra))
        return x

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, stride={self.stride}"
