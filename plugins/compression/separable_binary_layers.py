"""The layer of Lin et al.'s (2017) binarized convolutions with separable filters (see
:mod:`papers_plugins.compression.separable_binary`, which holds the method): imported only when a model
is built, so that discovering the method imports no torch. Hand-written: no library has separable
binary filters."""

from __future__ import annotations

import torch
from torch import nn


def separable_binary(weight: torch.Tensor) -> torch.Tensor:
    """Each k × k filter of ``weight`` (out × in × k × k) as sign(u) sign(v)ᵀ, u and v the leading
    singular vectors of its sign pattern (the sign of a zero taken as +1)."""
    signs = torch.where(weight >= 0, 1.0, -1.0).to(weight.dtype)
    u, _, vh = torch.linalg.svd(signs.detach().double())
    column = torch.where(u[..., :, 0] >= 0, 1.0, -1.0)
    row = torch.where(vh[..., 0, :] >= 0, 1.0, -1.0)
    return (column.unsqueeze(-1) * row.unsqueeze(-2)).to(weight.dtype)


class SeparableBinaryConv2d(nn.Conv2d):
    """A convolution run with rank-one separable binary filters (see the module)."""

    def binary_weight(self) -> torch.Tensor:
        """The filters the forward pass uses: separable ±1 patterns times each output channel's α, with
        the straight-through gradient to the latent weights (clipped where |w| > 1)."""
        weight = self.weight
        alpha = weight.detach().abs().mean(dim=(1, 2, 3), keepdim=True)
        used = separable_binary(weight) * alpha
        passed = weight * (weight.detach().abs() <= 1)
        return passed + (used - passed).detach()

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(input, self.binary_weight(), self.bias)
