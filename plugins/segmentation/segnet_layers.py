"""SegNet's upsampling: max unpooling back to the size of the map its encoder pooled.

``torch.nn.functional.max_unpool2d`` gives ``2 h`` rows for ``h`` pooled rows unless told the size
to restore; an encoder map of odd size (25 rows pooled to 12) then gets 24 back, and the next
unpooling's indices point outside its map. Reading the size from the encoder's map at run time (as
the authors' Caffe upsampling layer is told it) lets any input of at least 2^stages pixels through.
Imported only when a model is built.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def max_unpool_as(
    x: torch.Tensor, indices: torch.Tensor, like: torch.Tensor, kernel_size: int = 2, stride: int = 2
) -> torch.Tensor:
    """``x`` unpooled at ``indices`` (a max pooling's) to the spatial size of ``like`` (its input)."""
    return F.max_unpool2d(x, indices, kernel_size, stride, output_size=tuple(like.shape[-2:]))
