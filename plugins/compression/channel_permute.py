"""The ``channel_permute`` op: ``x[:, order]``, a gather of the channels with no multiply-adds.

A method that clusters channels (Denton et al. 2014's biclustering) puts them in group order for a
grouped convolution and back afterwards; the order is a weight of the model (a buffer, saved with
it), set by the method's ``apply`` step, the identity until then. Hand-written: torch has
``channel_shuffle`` (a fixed interleave) but no module holding an arbitrary order.
"""

from __future__ import annotations

import torch


class ChannelPermute(torch.nn.Module):
    """Output channel i is input channel ``order[i]``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.register_buffer("order", torch.arange(channels))

    def reset_parameters(self) -> None:
        """The identity order (the builder allocates a model's tensors empty, then resets them)."""
        with torch.no_grad():
            self.order.copy_(torch.arange(self.order.numel(), device=self.order.device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.index_select(1, self.order)
