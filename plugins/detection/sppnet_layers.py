"""Spatial pyramid pooling (He et al. 2014, Section 2.3 and Appendix), on an image and on its windows.

Each pyramid level max-pools the map into n × n bins, and the levels' bins are concatenated: with
levels 6, 3, 2, 1 that is 50 bins per channel, 12,800 values on ZF-5's 256-channel conv5 whatever the
input size. The paper implements a level as a sliding-window pooling of window ⌈a/n⌉ and stride
⌊a/n⌋ on an a × a map; that gives n bins only for some a (a = 10, n = 6 gives 9), so a level here is
adaptive max pooling (``torch.nn.functional.adaptive_max_pool2d``), whose bins are the paper's at
its 224 × 224 example (a = 13: windows 3, 5, 7, 13, strides 2, 4, 6, 13) and n × n at every size.

The detection form pools each window from the one conv5 map of the whole image: a window's corners
are projected onto conv5 as the paper's Appendix does (left or top x′ = ⌊x/S⌋ + 1, right or bottom
x′ = ⌈x/S⌉ − 1, S the total stride, for a network padded ⌊p/2⌋ at each layer of size p, as ZF-5 is
here), and each level is ``torchvision.ops.roi_pool`` on the projected window, which bins a window of
w cells exactly as adaptive max pooling bins a crop of it. Imported only when a model is built.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn.functional import adaptive_max_pool2d
from torchvision.ops import roi_pool


def pyramid_bins(levels: Sequence[int]) -> int:
    """Bins per channel of a pyramid: Σ n² (6, 3, 2, 1: 50)."""
    return sum(int(n) ** 2 for n in levels)


def _check_levels(levels: Sequence[int]) -> tuple[int, ...]:
    levels = tuple(int(n) for n in levels)
    if not levels or any(n < 1 for n in levels):
        raise ValueError(f"pyramid levels are positive bin counts, got {list(levels)}")
    return levels


class SpatialPyramidPool(nn.Module):
    """[N, C, H, W] → [N, C · Σ n²]: each level's n × n max-pooled bins, flattened, level after level."""

    def __init__(self, levels: Sequence[int] = (6, 3, 2, 1)):
        super().__init__()
        self.levels = _check_levels(levels)

    def forward(self, features: Tensor) -> Tensor:
        pooled = [adaptive_max_pool2d(features, n).flatten(1) for n in self.levels]
        return torch.cat(pooled, dim=1)

    def extra_repr(self) -> str:
        return f"levels={list(self.levels)}"


def project_windows(windows: Tensor, stride: int, height: int, width: int) -> Tensor:
    """Windows [K, 5] (image index, x1, y1, x2, y2 in input pixels) to inclusive cell coordinates on a map
    of total stride ``stride`` (the paper's Appendix), kept inside the map and at least one cell wide."""
    index, boxes = windows[:, :1], windows[:, 1:]
    left = torch.floor(boxes[:, :2] / stride) + 1
    right = torch.ceil(boxes[:, 2:] / stride) - 1
    limit = boxes.new_tensor([width - 1, height - 1])
    left = torch.minimum(left.clamp(min=0), limit)
    right = torch.maximum(torch.minimum(right.clamp(min=0), limit), left)
    return torch.cat([index, left, right], dim=1)


class SpatialPyramidRoIPool(nn.Module):
    """Features [N, C, H, W] and windows [K, 5] in input pixels → [K, C · Σ n²]: every window pooled once
    from the one map, each level ``roi_pool`` on the window projected to the map."""

    def __init__(self, levels: Sequence[int] = (6, 3, 2, 1), stride: int = 16):
        super().__init__()
        self.levels = _check_levels(levels)
        if int(stride) < 1:
            raise ValueError(f"the map's total stride is a positive integer, got {stride}")
        self.stride = int(stride)

    def forward(self, features: Tensor, windows: Tensor) -> Tensor:
        cells = project_windows(windows.to(features.dtype), self.stride, *features.shape[-2:])
        pooled = [roi_pool(features, cells, n, spatial_scale=1.0).flatten(1) for n in self.levels]
        return torch.cat(pooled, dim=1)

    def extra_repr(self) -> str:
        return f"levels={list(self.levels)}, stride={self.stride}"


class WindowScores(nn.Module):
    """SPP-net's detection network as a detector on proposals takes it: ``(image, rois)`` to the 21-way
    window scores and, since SPP-net regresses no box in this form, zero offsets for every class (the
    detections are the windows themselves, scored and suppressed per class)."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network

    def forward(self, images: Tensor, rois: Tensor) -> tuple[Tensor, Tensor]:
        scores = self.network(images, rois).scores
        return scores, scores.new_zeros(scores.shape[0], 4 * scores.shape[1])
