"""The context module's convolution with Yu & Koltun's identity initialisation (ICLR 2016, Section 3).

With ``c_in`` input and ``c_out`` output channels in a module of ``C`` channels, the filter of output
``b`` at tap ``t`` on input ``a`` starts at ``C / c_out`` where ``t`` is the kernel's centre and
``⌊a C / c_in⌋ = ⌊b C / c_out⌋``, else 0; biases start at 0. Where ``c_in = c_out = C`` (the basic
module) that is the identity: each layer passes its input to the next, so an untrained module
returns a non-negative input unchanged (its ReLUs keep only a map's positive part). The large
module's wider layers repeat each input channel ``c_out / C`` times, and
the paper adds Gaussian noise of a standard deviation well below ``C / c_out`` to break the
symmetry between the copies: ``noise`` is that deviation as a fraction of ``C / c_out``. No library
has this initialisation. Imported only when a model is built.
"""

from __future__ import annotations

import torch
from torch import nn


def identity_weight(c_out: int, c_in: int, kernel: int, base: int) -> torch.Tensor:
    """The paper's initial filter bank [c_out, c_in, kernel, kernel], without noise."""
    weight = torch.zeros(c_out, c_in, kernel, kernel)
    groups_in = torch.div(torch.arange(c_in) * base, c_in, rounding_mode="floor")
    groups_out = torch.div(torch.arange(c_out) * base, c_out, rounding_mode="floor")
    same = (groups_out[:, None] == groups_in[None, :]).to(weight.dtype)
    weight[:, :, kernel // 2, kernel // 2] = same * (base / c_out)
    return weight


class IdentityConv2d(nn.Conv2d):
    """``nn.Conv2d`` (same state) whose ``reset_parameters`` is the paper's identity initialisation.

    ``base``: the module's channel count C (default: the input's); ``noise``: the initial weights'
    Gaussian noise, as a fraction of ``C / out_channels`` (default 0, the basic module's).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *args,
        base: int | None = None,
        noise: float = 0.0,
        **kwargs,
    ):
        super().__init__(in_channels, out_channels, *args, **kwargs)
        if self.groups != 1 or self.kernel_size[0] != self.kernel_size[1] or self.kernel_size[0] % 2 == 0:
            raise ValueError("identity initialisation needs one group and an odd square kernel")
        if noise < 0:
            raise ValueError(f"noise is a standard deviation, not {noise}")
        self.base = int(base) if base is not None else in_channels
        self.noise = float(noise)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if not hasattr(self, "base"):  # nn.Conv2d's own call, before this class's settings exist
            return
        if self.weight.is_meta:
            return
        scale = self.base / self.out_channels
        weight = identity_weight(self.out_channels, self.in_channels, self.kernel_size[0], self.base)
        with torch.no_grad():
            self.weight.copy_(weight)
            if self.noise:
                self.weight.add_(torch.randn_like(self.weight) * self.noise * scale)
            if self.bias is not None:
                self.bias.zero_()

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, base={self.base}, noise={self.noise}"
