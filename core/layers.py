"""Layers and initialisations that no maintained library has, written by hand.

torch and torchvision provide every other op in the catalogue. These are the exceptions: FCN's crop
(Caffe's ``Crop`` layer), a resize to another tensor's spatial size (``F.interpolate`` takes the size
as numbers, which a straight-line graph only knows at run time), and the bilinear initialisation of
FCN's upsampling filters (its ``surgery.interp``), a dense detection head's map laid out one
row per anchor (torchvision does it inline in its heads), and Darknet's ``reorg`` layer with its own
element order (:mod:`papers.darknet`). Add here only what neither library has.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.nn import functional as F


def resize_as(
    x: torch.Tensor, like: torch.Tensor, mode: str = "bilinear", align_corners: bool | None = None
) -> torch.Tensor:
    """``x`` interpolated to the spatial size of ``like`` (``F.interpolate``'s modes and corners)."""
    return F.interpolate(x, size=tuple(like.shape[2:]), mode=mode, align_corners=align_corners)


def flatten_anchors(x: torch.Tensor, values: int) -> torch.Tensor:
    """A head's map [N, A * values, H, W] as [N, H * W * A, values]: the rows of every position's
    anchors in turn, as torchvision's RetinaNet and RPN heads lay them out before concatenating levels."""
    n, channels, height, width = x.shape
    anchors = channels // values
    return x.view(n, anchors, values, height, width).permute(0, 3, 4, 1, 2).reshape(n, -1, values)


def darknet_reorg(x: torch.Tensor, stride: int = 2) -> torch.Tensor:
    """Darknet's ``[reorg]`` layer exactly as its C code computes it: [N, C, H, W] to
    [N, C·s², H/s, W/s]. Darknet's ``reorg_cpu`` is called with the input's sizes but indexes the
    input as [C/s², H·s, W·s]; its output, [C, H, W] in that indexing, is read as [C·s², H/s, W/s].
    Released YOLOv2 weights were trained with this order, not with a plain space-to-depth's."""
    n, channels, height, width = x.shape
    if channels % (stride * stride) or height % stride or width % stride:
        raise ValueError(f"reorg by {stride}: channels must divide by {stride * stride}, sides by {stride}")
    planes = channels // (stride * stride)
    moved = x.reshape(n, planes, height, stride, width, stride).permute(0, 3, 5, 1, 2, 4)
    return moved.reshape(n, channels * stride * stride, height // stride, width // stride)


def crop_as(x: torch.Tensor, like: torch.Tensor, offset: int | Sequence[int] = 0) -> torch.Tensor:
    """``x`` cropped to the spatial size of ``like``, starting at ``offset`` (one for every spatial
    dimension, or one per dimension): Caffe's ``Crop`` layer from axis 2, as FCN uses it."""
    size = tuple(like.shape[2:])
    offsets = [offset] * len(size) if isinstance(offset, int) else list(offset)
    if len(offsets) != len(size):
        raise ValueError(f"offset {offset} gives {len(offsets)} offsets for {len(size)} spatial dimensions")
    for start, length, available in zip(offsets, size, x.shape[2:], strict=True):
        if start < 0 or start + length > available:
            raise ValueError(f"cannot crop {length} from {available} at offset {start}")
    window = tuple(slice(start, start + length) for start, length in zip(offsets, size, strict=True))
    return x[(slice(None), slice(None), *window)]


def bilinear_kernel(size: Sequence[int]) -> torch.Tensor:
    """The kernel of bilinear upsampling by ``(k + 1) // 2`` along each dimension of size ``k``
    (FCN's ``upsample_filt``, extended to kernels that are not square)."""
    kernel = torch.ones(())
    for k in size:
        factor = (k + 1) // 2
        center = factor - 1 if k % 2 == 1 else factor - 0.5
        weights = 1 - (torch.arange(k, dtype=torch.float64) - center).abs() / factor
        kernel = kernel.unsqueeze(-1) * weights
    return kernel


def bilinear_(tensor: torch.Tensor) -> torch.Tensor:
    """Fill a (transposed) convolution's weight so that it interpolates each channel bilinearly.

    The weight is ``[a, b, *kernel]``: with ``b == 1`` (one group per channel) every channel gets the
    kernel; with ``a == b`` channel ``i`` maps to channel ``i`` only and the other pairs are zero, as in
    FCN's ``surgery.interp``. Other shapes mix channels, and have no bilinear filter.
    """
    if tensor.dim() < 3:
        shape = list(tensor.shape)
        raise ValueError(f"bilinear initialisation needs a convolution weight, not shape {shape}")
    a, b = tensor.shape[:2]
    if b != 1 and a != b:
        raise ValueError(
            f"bilinear initialisation needs as many input as output channels per group, not {a} and {b}"
        )
    kernel = bilinear_kernel(tensor.shape[2:]).to(dtype=tensor.dtype, device=tensor.device)
    with torch.no_grad():
        if b == 1:
            tensor.copy_(kernel.expand_as(tensor))
        else:
            tensor.zero_()
            channels = torch.arange(a, device=tensor.device)
            tensor[channels, channels] = kernel
    return tensor


__all__ = ["bilinear_", "bilinear_kernel", "crop_as", "resize_as"]
