"""MultiBox's machinery around its graph (Erhan et al., CVPR 2014): priors, matching loss, decoding.

The graph gives, per image, K box offsets [K, 4] (x1, y1, x2, y2 normalised by the image's size) and
K confidence logits and confidences [K]. A box is its prior plus its offsets; the K priors are
k-means centroids of the training boxes (scikit-learn's ``KMeans``). Training assigns the M
ground-truth boxes of an image to M of the K predictions by the bipartite matching that minimises
Section 3's objective (SciPy's ``linear_sum_assignment``) and back-propagates that objective:

    F(x, l, c) = α/2 Σ_ij x_ij ‖l_i − g_j‖² − Σ_ij x_ij log c_i − Σ_i (1 − Σ_j x_ij) log(1 − c_i).

The objective is hand-written (no maintained library has it); the matching, the clustering and the
suppression (``torchvision.ops.nms``) are libraries'. Choices where this module could not check the
paper: α = 0.3 by default; images warped to the network's square input and normalised with
ImageNet's mean and standard deviation; the loss summed over an image's boxes and averaged over the
images of a batch; NMS at IoU 0.5, score threshold 0.05 and at most 100 boxes an image
(torchvision's defaults); the matching computed on the predictions, as Section 3's objective
states it, unless ``match_priors`` computes it on the priors instead (the paper's training details
describe such a "prior matching" as this registry recalls them; not checked against its text).
Imported only when a model is built or a detector made.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

ALPHA = 0.3
"""The weight of the location term in the objective (the registry's default; see the module's doc)."""
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)
OBJECT = 1
"""MultiBox's one label: "object" (class-agnostic; 0 is the background, as torchvision numbers)."""


def box_corners(locations: Tensor) -> Tensor:
    """The box layer's [N, 4K] outputs as K boxes [N, K, 4]."""
    if locations.shape[-1] % 4:
        raise ValueError(f"4 coordinates a box expected, got {locations.shape[-1]} values")
    return locations.reshape(locations.shape[0], -1, 4)


# --- priors ---------------------------------------------------------------------------------


def _checked_boxes(boxes: Any) -> np.ndarray:
    array = np.asarray(boxes, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != 4:
        raise ValueError(f"boxes [N, 4] expected, got shape {list(array.shape)}")
    if not np.isfinite(array).all() or array.min(initial=0.0) < 0 or array.max(initial=0.0) > 1:
        raise ValueError("box coordinates normalised to [0, 1] expected (x1, y1, x2, y2 / image size)")
    if (array[:, 2] < array[:, 0]).any() or (array[:, 3] < array[:, 1]).any():
        raise ValueError("boxes as (x1, y1, x2, y2) with x1 ≤ x2 and y1 ≤ y2 expected")
    return array


def kmeans_priors(boxes: Any, k: int, *, seed: int = 0) -> np.ndarray:
    """K priors [k, 4]: the k-means centroids of training boxes [N, 4] (x1, y1, x2, y2, each normalised
    by its image's width or height) in the four-dimensional coordinate space, ordered by area, then
    by position, so the same boxes and seed give the same priors in the same order."""
    from sklearn.cluster import KMeans

    array = _checked_boxes(boxes)
    if not 1 <= k <= len(array):
        raise ValueError(f"{k} priors need at least as many training boxes, got {len(array)}")
    centroids = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(array).cluster_centers_
    area = (centroids[:, 2] - centroids[:, 0]) * (centroids[:, 3] - centroids[:, 1])
    order = np.lexsort((centroids[:, 1], centroids[:, 0], -area))
    return centroids[order].astype(np.float32)


def spread_priors(k: int) -> np.ndarray:
    """K deterministic priors [k, 4] for a detector built before any data is seen: centres and sizes
    from a Halton sequence (centres in [0.1, 0.9], sides in [0.1, 0.9]), clipped to the image. Not
    the paper's: it takes k-means centroids of the training boxes (:func:`kmeans_priors`)."""
    from scipy.stats import qmc

    points = qmc.Halton(d=4, scramble=False).random(k + 1)[1:]  # the first point is all zeros
    centre = 0.1 + 0.8 * points[:, :2]
    half = (0.1 + 0.8 * points[:, 2:]) / 2
    priors = np.concatenate([centre - half, centre + half], axis=1).clip(0.0, 1.0)
    return priors.astype(np.float32)


def training_boxes(source: str, split: str = "train") -> np.ndarray:
    """Every box of a detection source's ``split`` (``builtin:shapes``, a VOC folder, a COCO folder),
    normalised by its image's width and height: what :func:`kmeans_priors` clusters."""
    from papers.data import load_image
    from papers.detection_data import detection_split

    dataset = detection_split(source, split).dataset
    rows = []
    for index in range(len(dataset)):
        size = dataset.items[index][1]
        if size is None:
            size = load_image(dataset.path(index)).size
        boxes = dataset.target(index)["boxes"].numpy().astype(np.float64)
        rows.append(boxes / np.array([size[0], size[1], size[0], size[1]], dtype=np.float64))
    return np.concatenate(rows).clip(0.0, 1.0) if rows else np.zeros((0, 4))


# --- the objective of Section 3 -------------------------------------------------------------


def matching_cost(locations: Tensor, confidence_logits: Tensor, truth: Tensor, *, alpha: float) -> Tensor:
    """[K, M]: what assigning prediction i to ground-truth box j adds to the objective over leaving
    every prediction unassigned, α/2 ‖l_i − g_j‖² − log c_i + log(1 − c_i); locations [K, 4], logits
    [K], truth [M, 4], all boxes normalised."""
    distance = torch.cdist(locations.double(), truth.double()).square()
    logits = confidence_logits.double()
    gain = F.logsigmoid(-logits) - F.logsigmoid(logits)  # log(1 − c) − log c
    return alpha / 2 * distance + gain[:, None]


def match(cost: Tensor) -> tuple[Tensor, Tensor]:
    """The assignment minimising the total cost [K, M] (each ground-truth box to one prediction, each
    prediction to at most one box; min(K, M) pairs): (predictions, boxes) as index tensors."""
    from scipy.optimize import linear_sum_assignment

    rows, columns = linear_sum_assignment(cost.detach().cpu().numpy())
    device = cost.device
    return torch.as_tensor(rows, device=device), torch.as_tensor(columns, device=device)


@dataclass
class Matching:
    """One image's objective, as its two terms, and the assignment it was computed at."""

    location: Tensor
    """α F_match: α/2 Σ x_ij ‖l_i − g_j‖²."""
    confidence: Tensor
    """F_conf: − Σ x_ij log c_i − Σ (1 − Σ_j x_ij) log(1 − c_i)."""
    predictions: Tensor
    boxes: Tensor


def matching_loss(
    locations: Tensor,
    confidence_logits: Tensor,
    truth: Tensor,
    *,
    alpha: float = ALPHA,
    match_on: Tensor | None = None,
) -> Matching:
    """Section 3's objective for one image at the assignment that minimises it: locations [K, 4] (the
    predicted boxes, prior plus offsets), confidence logits [K], ground truth [M, 4], all normalised.
    ``match_on`` [K, 4] computes the assignment with other boxes in place of the predictions (the
    priors); the loss is always the predictions'. Logits, not confidences, so log c and log(1 − c)
    stay finite."""
    if truth.numel() == 0:
        predictions = boxes = torch.zeros(0, dtype=torch.int64, device=locations.device)
    else:
        where = locations if match_on is None else match_on
        cost = matching_cost(where.detach(), confidence_logits.detach(), truth, alpha=alpha)
        predictions, boxes = match(cost)
    matched = torch.zeros_like(confidence_logits, dtype=torch.bool)
    matched[predictions] = True
    distance = (locations[predictions] - truth[boxes].to(locations.dtype)).square().sum()
    confidence = -(
        F.logsigmoid(confidence_logits[matched]).sum() + F.logsigmoid(-confidence_logits[~matched]).sum()
    )
    return Matching(alpha / 2 * distance, confidence, predictions, boxes)


# --- decoding -------------------------------------------------------------------------------


def decode(offsets: Tensor, priors: Tensor) -> Tensor:
    """Boxes [..., K, 4] = priors + offsets, corners put in order (x1 ≤ x2, y1 ≤ y2) and clipped to the
    image ([0, 1])."""
    boxes = offsets + priors
    low = torch.minimum(boxes[..., :2], boxes[..., 2:])
    high = torch.maximum(boxes[..., :2], boxes[..., 2:])
    return torch.cat([low, high], dim=-1).clamp(0.0, 1.0)


def suppress(
    boxes: Tensor, scores: Tensor, *, score_thresh: float, nms_thresh: float, detections: int
) -> tuple[Tensor, Tensor]:
    """One image's boxes [K, 4] and scores [K] above ``score_thresh``, greedily suppressed at IoU
    ``nms_thresh`` (torchvision's ``nms``), the ``detections`` best, best first."""
    from torchvision.ops import nms, remove_small_boxes

    keep = torch.nonzero(scores > score_thresh).squeeze(1)
    keep = keep[remove_small_boxes(boxes[keep], 1e-6)]
    keep = keep[nms(boxes[keep], scores[keep], nms_thresh)][:detections]
    return boxes[keep], scores[keep]


class MultiBoxDetector(nn.Module):
    """The graph as a detector: ``model(images, targets=None)``, images (C, H, W) in [0, 1] of any sizes,
    each warped to the network's square input. Eval gives torchvision's ``[{boxes, scores, labels}]``
    (x1, y1, x2, y2 in each image's pixels, label 1 "object"); training ``{loss_location,
    loss_confidence}``, the objective's two terms summed over each image's boxes and averaged over
    the images. ``priors`` [K, 4] (normalised) is a buffer, so trained weights keep theirs."""

    def __init__(
        self,
        network: nn.Module,
        priors: Tensor,
        *,
        image_size: int,
        alpha: float = ALPHA,
        match_priors: bool = False,
        box_score_thresh: float = 0.05,
        box_nms_thresh: float = 0.5,
        box_detections_per_img: int = 100,
        image_mean: Sequence[float] = IMAGE_MEAN,
        image_std: Sequence[float] = IMAGE_STD,
    ):
        super().__init__()
        self.network = network
        self.register_buffer("priors", torch.as_tensor(priors, dtype=torch.float32).reshape(-1, 4).clone())
        self.register_buffer("image_mean", torch.tensor(image_mean).reshape(3, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(image_std).reshape(3, 1, 1), persistent=False)
        self.image_size = image_size
        self.alpha = alpha
        self.match_priors = match_priors
        self.box_score_thresh = box_score_thresh
        self.box_nms_thresh = box_nms_thresh
        self.box_detections_per_img = box_detections_per_img

    def head_outputs(self, images: Sequence[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """The network on the warped, normalised images: box offsets [N, K, 4], confidence logits [N, K]
        and confidences [N, K]."""
        size = (self.image_size, self.image_size)
        batch = torch.stack(
            [
                F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]
                for image in images
            ]
        )
        offsets, logits, confidences = self.network((batch - self.image_mean) / self.image_std)
        if offsets.shape[1] != len(self.priors):
            raise ValueError(
                f"the network predicts {offsets.shape[1]} boxes but has {len(self.priors)} priors"
            )
        return offsets, logits, confidences

    def forward(
        self, images: Sequence[Tensor], targets: Sequence[Mapping[str, Tensor]] | None = None
    ) -> list[dict[str, Tensor]] | dict[str, Tensor]:
        if self.training and targets is None:
            raise ValueError("a detector in training mode takes targets")
        if targets is not None and len(targets) != len(images):
            raise ValueError(f"{len(images)} images but targets for {len(targets)}")
        sizes = [(int(image.shape[-1]), int(image.shape[-2])) for image in images]  # (width, height)
        offsets, logits, confidences = self.head_outputs(images)
        if self.training:
            assert targets is not None
            return self._losses(offsets, logits, targets, sizes)
        boxes = decode(offsets, self.priors)
        results = []
        for found, scores, (width, height) in zip(boxes, confidences, sizes, strict=True):
            scale = found.new_tensor([width, height, width, height])
            kept, kept_scores = suppress(
                found * scale, scores, score_thresh=self.box_score_thresh,
                nms_thresh=self.box_nms_thresh, detections=self.box_detections_per_img,
            )  # fmt: skip
            labels = torch.full((len(kept),), OBJECT, dtype=torch.int64, device=kept.device)
            results.append({"boxes": kept, "scores": kept_scores, "labels": labels})
        return results

    def _losses(
        self,
        offsets: Tensor,
        logits: Tensor,
        targets: Sequence[Mapping[str, Tensor]],
        sizes: Sequence[tuple[int, int]],
    ) -> dict[str, Tensor]:
        location = logits.new_zeros(())
        confidence = logits.new_zeros(())
        for image_offsets, image_logits, target, (width, height) in zip(
            offsets, logits, targets, sizes, strict=True
        ):
            truth = target["boxes"].to(offsets.dtype).reshape(-1, 4)
            truth = truth / truth.new_tensor([width, height, width, height])
            terms = matching_loss(
                self.priors + image_offsets, image_logits, truth, alpha=self.alpha,
                match_on=self.priors if self.match_priors else None,
            )  # fmt: skip
            location = location + terms.location
            confidence = confidence + terms.confidence
        count = max(len(targets), 1)
        return {"loss_location": location / count, "loss_confidence": confidence / count}


def multibox_detector(
    variant: str = "multibox_alexnet_k100",
    *,
    priors: Any = None,
    device: Any = "cpu",
    **options: Any,
) -> MultiBoxDetector:
    """A MultiBox variant of the registry as a detector. ``priors`` [K, 4] (normalised x1, y1, x2, y2;
    :func:`kmeans_priors` of :func:`training_boxes`) default to :func:`spread_priors`; ``options`` are
    the detector's keyword arguments (``alpha``, ``match_priors``, ``box_score_thresh``, ...) or the
    graph's parameters (``k``, ``image_size``)."""
    import inspect

    import papers

    known = set(inspect.signature(MultiBoxDetector.__init__).parameters) - {
        "self",
        "network",
        "priors",
        "image_size",
    }
    settings = {key: value for key, value in options.items() if key in known}
    graph = {key: value for key, value in options.items() if key not in known}
    flat = papers.expand_variant(variant, **graph)
    (shape,) = flat.inputs.values()
    k = int(flat.node("confidence").args["out_features"])
    table = torch.as_tensor(spread_priors(k) if priors is None else np.asarray(priors), dtype=torch.float32)
    if table.shape != (k, 4):
        raise ValueError(f"{variant} predicts {k} boxes: priors [{k}, 4] expected, got {list(table.shape)}")
    network = papers.build_model(variant, device=device, **graph)
    return MultiBoxDetector(network, table.to(device), image_size=int(shape[-1]), **settings)
