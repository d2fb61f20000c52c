"""The one piece of R-FCN no library has: the voted scores split into class scores and box deltas.

R-FCN's two position-sensitive banks, k²(C + 1) class maps and 4k² box maps (Dai et al. 2016,
Section 2), are pooled in one pass (``torchvision.ops.ps_roi_pool`` on their concatenation gives
[K, C + 1 + 4, k, k]) and voted by averaging over the k² bins (the graph's ``mean`` node). This
splits the voted vector into the (C + 1) class scores and the 4 class-agnostic box deltas. Imported
only when a model is built (the plugin module itself does not import torch).
"""

from __future__ import annotations

from torch import Tensor


def scores_and_boxes(votes: Tensor, classes: int) -> tuple[Tensor, Tensor]:
    """[K, classes + 4] voted scores as ([K, classes] class scores, [K, 4] box deltas)."""
    if votes.shape[-1] != classes + 4:
        raise ValueError(f"{classes} class scores and 4 box deltas expected, got {votes.shape[-1]} values")
    scores, boxes = votes.split([classes, 4], dim=-1)
    return scores, boxes
