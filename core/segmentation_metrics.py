"""Segmentation metrics from one confusion matrix: ``miou``, ``pixel_acc``, ``mean_acc``, ``fwiou``.

The four numbers FCN's Section 5 defines (and SegNet, DeepLab and the VOC devkit use), with n_ij the
pixels of class i predicted as class j and t_i = Σ_j n_ij the pixels of class i:

- ``pixel_acc`` = Σ_i n_ii / Σ_i t_i;
- ``mean_acc`` = (1/n_cl) Σ_i n_ii / t_i;
- ``miou`` = (1/n_cl) Σ_i n_ii / (t_i + Σ_j n_ji − n_ii);
- ``fwiou`` = (Σ_k t_k)⁻¹ Σ_i t_i n_ii / (t_i + Σ_j n_ji − n_ii).

Pixels labelled ``ignore_index`` (VOC's 255, the object boundaries) are left out. A class that is
neither in the labels nor predicted has no IoU and is left out of the means (``nan`` in ``per_class``),
as torchvision's reference scripts and mmsegmentation do; ``mean_acc`` likewise leaves out a class
with no labelled pixel. The matrix is one ``bincount`` on the
device the masks are on (the GPU where there is one), so evaluation never moves masks to the CPU.
Values are fractions in [0, 1].

:func:`boundary_band` and :func:`trimap_accuracy` score only the pixels near object boundaries:
DeepLab's "trimap" (Chen et al. 2015, Section 5 and Fig. 5), the pixel accuracy within a band of a
few pixels around the labels' boundaries, where a CRF's refinement shows and the mIoU hides it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

SEGMENTATION_METRICS = ("miou", "pixel_acc", "mean_acc", "fwiou")
"""Every segmentation metric's name, as results files and specs write them."""
IGNORE_INDEX = 255


def confusion_matrix(
    predicted: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """The ``num_classes`` × ``num_classes`` matrix of pixel counts (row: the label, column: the
    prediction) of integer masks of the same shape, ``ignore_index`` pixels left out."""
    import torch

    if predicted.shape != target.shape:
        raise ValueError(f"predicted masks {tuple(predicted.shape)} and labels {tuple(target.shape)} differ")
    kept = target != ignore_index
    labels, guesses = target[kept].long(), predicted[kept].long()
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"a label outside 0..{num_classes - 1} (and not {ignore_index}, ignored)")
    if guesses.numel() and (int(guesses.min()) < 0 or int(guesses.max()) >= num_classes):
        raise ValueError(f"a prediction outside 0..{num_classes - 1}")
    counts = torch.bincount(labels * num_classes + guesses, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def scores(confusion: torch.Tensor) -> dict[str, Any]:
    """The four metrics of a confusion matrix, and ``per_class`` IoU (``nan`` for an absent class)."""
    matrix = confusion.double()
    hits = matrix.diagonal()
    labelled = matrix.sum(1)
    union = labelled + matrix.sum(0) - hits
    total = float(labelled.sum())
    present = union > 0
    iou = hits / union.clamp(min=1)
    accuracy = hits / labelled.clamp(min=1)
    if total == 0:
        raise ValueError("no labelled pixel to score (every pixel is ignored)")
    return {
        "pixel_acc": float(hits.sum()) / total,
        "mean_acc": float(accuracy[labelled > 0].mean()),
        "miou": float(iou[present].mean()),
        "fwiou": float((labelled[present] * iou[present]).sum()) / total,
        "per_class": [
            float(v) if p else math.nan for v, p in zip(iou.tolist(), present.tolist(), strict=True)
        ],
    }


def boundary_band(target: torch.Tensor, width: int, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """The H×W boolean band of pixels at most ``width`` pixels (Chebyshev distance) from a boundary
    of the label mask ``target``: a pixel whose label differs from a 4-neighbour's; ``ignore_index``
    pixels are boundaries' neighbours but never in the band."""
    import torch
    import torch.nn.functional as F

    if target.ndim != 2 or width < 0:
        raise ValueError(f"an H×W mask and a width >= 0, not {tuple(target.shape)} and {width}")
    edge = torch.zeros_like(target, dtype=torch.bool)
    vertical, horizontal = target[1:] != target[:-1], target[:, 1:] != target[:, :-1]
    edge[1:] |= vertical
    edge[:-1] |= vertical
    edge[:, 1:] |= horizontal
    edge[:, :-1] |= horizontal
    band = F.max_pool2d(edge[None, None].float(), 2 * width + 1, stride=1, padding=width)[0, 0] > 0
    return band & (target != ignore_index)


def trimap_accuracy(
    predicted: torch.Tensor, target: torch.Tensor, width: int, ignore_index: int = IGNORE_INDEX
) -> tuple[int, int]:
    """Pixels correct and pixels in :func:`boundary_band` of ``target`` (``width`` pixels): summed
    over images, their ratio is DeepLab's trimap accuracy."""
    if predicted.shape != target.shape:
        raise ValueError(f"predicted masks {tuple(predicted.shape)} and labels {tuple(target.shape)} differ")
    band = boundary_band(target, width, ignore_index)
    return int((predicted[band] == target[band]).sum()), int(band.sum())


__all__ = [
    "IGNORE_INDEX",
    "SEGMENTATION_METRICS",
    "boundary_band",
    "confusion_matrix",
    "scores",
    "trimap_accuracy",
]
