"""Multi-scale inputs (DeepLab v2's MSC, Section 4.1): one segmenter run on rescaled copies of the
image, its score maps fused by a per-pixel maximum.

A wrapper rather than graph nodes: a graph node cannot call another graph's modules a second time
(only ops and block instances share modules), and the rescaling is of the input, not a layer. The
scales are the spec's (``segmentation.msc_scales``); ``papers segment --msc`` runs them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from papers.errors import PapersError


def scaled_size(size: int, scale: float) -> int:
    """A side of the image at ``scale`` as the authors' Caffe ``Interp`` layer sizes it: (n − 1)·s + 1."""
    return int((size - 1) * scale) + 1


def max_fuse(score_maps: Sequence[Tensor], *, mode: str = "bilinear", align_corners: bool = False) -> Tensor:
    """Resize every map to the first one's size and take the per-pixel, per-class maximum."""
    size = score_maps[0].shape[-2:]
    corners = align_corners if mode == "bilinear" else None
    resized = [
        m if m.shape[-2:] == size else F.interpolate(m, size=size, mode=mode, align_corners=corners)
        for m in score_maps
    ]
    return torch.stack(resized).amax(dim=0)


class MultiScaleSegmenter(nn.Module):
    """A segmenter (``papers.tasks.segmentation.Segmenter``) run at several input scales.

    Each scale's image is the input resized bilinearly (corners aligned, as Caffe's ``Interp``). Its
    score maps, at the network's output stride, are resized to those of the largest scale and fused
    by a per-pixel maximum; the fused map is resized to the input as the segmenter resizes its own.
    The layers are the segmenter's (same modules, same ``state_dict`` keys). ``model(images)`` gives
    ``{"out": ...}`` and, with ``per_scale=True``, ``"scales"``: each scale's score map before
    fusion, largest scale first, for the paper's training loss on every scale and on the fusion.
    """

    def __init__(self, segmenter: nn.Module, scales: Sequence[float], *, per_scale: bool = False):
        super().__init__()
        if not hasattr(segmenter, "task") or not hasattr(segmenter, "network"):
            raise PapersError("multi-scale inputs need a segmenter (a variant with a segmentation section)")
        factors = [float(s) for s in scales]
        if not factors or any(not 0 < s <= 4 for s in factors):
            raise PapersError(f"{list(scales)}: give one or more scale factors in (0, 4]", field="scales")
        for name, child in segmenter.named_children():
            self.add_module(name, child)
        object.__setattr__(self, "segmenter", segmenter)
        self.scales = sorted(factors, reverse=True)
        self.per_scale = per_scale

    def forward(self, images: Tensor) -> dict[str, Any]:
        task = self.segmenter.task
        height, width = images.shape[-2:]
        maps = []
        for scale in self.scales:
            size = (scaled_size(height, scale), scaled_size(width, scale))
            x = images
            if size != (height, width):
                x = F.interpolate(images, size=size, mode="bilinear", align_corners=True)
            maps.append(self.segmenter.network(x)[task.out])
        fused = max_fuse(maps, mode=task.mode, align_corners=task.align_corners)
        corners = task.align_corners if task.mode == "bilinear" else None
        result: dict[str, Any] = {
            "out": F.interpolate(fused, size=(height, width), mode=task.mode, align_corners=corners)
        }
        if self.per_scale:
            result["scales"] = maps
        return result


def build_multi_scale(
    variant_id: str, *, scales: Sequence[float] | None = None, per_scale: bool = False, **options: Any
) -> MultiScaleSegmenter:
    """``papers.build_model(variant_id, **options)`` run at ``scales`` (default: the spec's
    ``segmentation.msc_scales``) and max-fused."""
    import papers

    if scales is None:
        task = papers.expand_variant(variant_id).task
        scales = getattr(task, "msc_scales", None)
        if not scales:
            raise PapersError(
                f"{variant_id}'s paper uses no multi-scale inputs (its `segmentation` section has no "
                "`msc_scales`)"
            )
    return MultiScaleSegmenter(papers.build_model(variant_id, **options), scales, per_scale=per_scale)
