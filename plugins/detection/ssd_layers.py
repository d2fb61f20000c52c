"""The one layer of SSD that no library has as a module: conv4_3's L2 normalisation with a learned scale.

SSD normalises every position of conv4_3's map to unit L2 norm across its channels and multiplies
channel c by a learned scale γ_c, initialised to 20 (Liu et al. 2016, Section 3.1, after ParseNet).
torchvision computes it inside its SSD's feature extractor; here it is a layer the graph names, whose
parameter keeps torchvision's name (``scale_weight``). Imported only when a model is built (the
plugin module itself does not import torch).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class L2Norm(nn.Module):
    """x / ‖x‖₂ over the channels at every position, times a learned per-channel scale."""

    def __init__(self, channels: int, scale: float = 20.0, eps: float = 1e-12):
        super().__init__()
        self.scale = scale
        self.eps = eps
        self.scale_weight = nn.Parameter(torch.empty(channels))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.scale_weight.fill_(self.scale)

    def forward(self, x: Tensor) -> Tensor:
        return self.scale_weight.view(1, -1, 1, 1) * F.normalize(x, dim=1, eps=self.eps)

    def extra_repr(self) -> str:
        return f"{self.scale_weight.numel()}, scale={self.scale}"
