"""Fast R-CNN's machinery around its graph: the multi-task loss (eq. 1–3), the mini-batch RoI sampling
(Section 2.3), the truncated SVD of fc6 and fc7 (Section 3.1) and a detector that takes proposals.

The graph computes, for an image batch and RoIs [K, 5] (image index, x1, y1, x2, y2 in input pixels),
K class logits and 4 box offsets per class. Sampling is torchvision's Matcher and
BalancedPositiveNegativeSampler set to the paper's numbers; boxes are coded, decoded and suppressed
per class by torchvision (BoxCoder, RoIHeads' post-processing, GeneralizedRCNNTransform). Written
here: the loss as the paper states it (torchvision's ``fastrcnn_loss`` uses a smooth L1 with β = 1/9),
the SVD split of a linear layer, and the glue. Imported only when used.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torchvision.models.detection._utils import BalancedPositiveNegativeSampler, BoxCoder, Matcher
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.transform import GeneralizedRCNNTransform, resize_boxes
from torchvision.ops import box_iou

SVD_LAYERS = ("fc6", "fc7")
"""The layers a truncated SVD splits (Section 3.1); the graph's ``fc6_rank`` and ``fc7_rank``."""


def multitask_loss(
    class_logits: Tensor,
    box_regression: Tensor,
    labels: Tensor,
    regression_targets: Tensor,
    *,
    box_weight: float = 1.0,
) -> dict[str, Tensor]:
    """Eq. 1–3 averaged over the K RoIs: the log loss of the true class u, and ``box_weight`` (λ) times
    the smooth L1 loss (0.5 x² below 1, |x| − 0.5 above) of class u's 4 offsets against the targets,
    counted for foreground RoIs only (u ≥ 1). Logits [K, C], offsets [K, 4C], labels [K] (0 is
    background), targets [K, 4]. Their sum is the paper's L."""
    count = labels.numel()
    if count == 0:
        raise ValueError("the loss needs at least one RoI")
    loss_classifier = F.cross_entropy(class_logits, labels)
    foreground = torch.nonzero(labels > 0).squeeze(1)
    offsets = box_regression.reshape(count, -1, 4)[foreground, labels[foreground]]
    smooth_l1 = F.smooth_l1_loss(offsets, regression_targets[foreground], beta=1.0, reduction="sum")
    return {"loss_classifier": loss_classifier, "loss_box_reg": box_weight * smooth_l1 / count}


def sample_rois(
    proposals: Sequence[Tensor],
    targets: Sequence[Mapping[str, Tensor]],
    box_coder: BoxCoder,
    *,
    rois_per_image: int = 64,
    positive_fraction: float = 0.25,
    fg_iou_thresh: float = 0.5,
    bg_iou_low: float = 0.1,
) -> tuple[list[Tensor], Tensor, Tensor]:
    """Section 2.3's mini-batch: per image ``rois_per_image`` RoIs, up to ``positive_fraction`` of them
    foreground (IoU ≥ 0.5 with a ground-truth box; the ground truth joins the proposals, as the
    authors' code has it), the rest
    background (IoU in [0.1, 0.5)); RoIs below 0.1 are never sampled. Gives the sampled boxes per
    image, their labels [K] and their regression targets [K, 4] (to the matched box)."""
    matcher = Matcher(fg_iou_thresh, bg_iou_low, allow_low_quality_matches=False)
    sampler = BalancedPositiveNegativeSampler(rois_per_image, positive_fraction)
    boxes_out, labels_out, matched_out = [], [], []
    for boxes, target in zip(proposals, targets, strict=True):
        truth = target["boxes"].to(boxes.dtype)
        if truth.numel() == 0:
            raise ValueError("each training image needs at least one ground-truth box")
        boxes = torch.cat([boxes, truth])
        matched = matcher(box_iou(truth, boxes))
        labels = target["labels"][matched.clamp(min=0)].to(torch.int64)
        labels[matched == Matcher.BETWEEN_THRESHOLDS] = 0
        labels[matched == Matcher.BELOW_LOW_THRESHOLD] = -1
        positive, negative = sampler([labels])
        keep = torch.nonzero(positive[0] | negative[0]).squeeze(1)
        boxes_out.append(boxes[keep])
        labels_out.append(labels[keep])
        matched_out.append(truth[matched[keep].clamp(min=0)])
    targets_out = box_coder.encode(matched_out, boxes_out)
    return boxes_out, torch.cat(labels_out), torch.cat(targets_out)


def truncated_svd(linear: nn.Linear, rank: int) -> tuple[Tensor, Tensor]:
    """A u × v layer's weights W ≈ U_t Σ_t V_tᵀ as two weights (Section 3.1): the first layer's Σ_t V_tᵀ
    [t, v] (no biases) and the second's U_t [u, t] (which keeps the layer's biases)."""
    weight = linear.weight.detach()
    if not 0 < rank <= min(weight.shape):
        raise ValueError(
            f"a rank from 1 to {min(weight.shape)} for a {tuple(weight.shape)} layer, got {rank}"
        )
    u, s, vh = torch.linalg.svd(weight.float(), full_matrices=False)
    return (s[:rank, None] * vh[:rank]).to(weight.dtype), u[:, :rank].contiguous().to(weight.dtype)


def svd_state_dict(full: nn.Module, ranks: Mapping[str, int]) -> dict[str, Tensor]:
    """A trained full model's state_dict for its SVD variant (``fc6_rank``/``fc7_rank`` set to ``ranks``):
    each named layer's ``weight`` and ``bias`` become ``L.weight``, ``U.weight`` and ``U.bias``."""
    state = dict(full.state_dict())
    for name, rank in ranks.items():
        layer = full.get_submodule(name)
        if not isinstance(layer, nn.Linear):
            raise ValueError(f"{name!r} is not a linear layer of the model")
        first, second = truncated_svd(layer, rank)
        del state[f"{name}.weight"]
        state[f"{name}.L.weight"] = first
        state[f"{name}.U.weight"] = second
        if layer.bias is not None:
            state[f"{name}.U.bias"] = state.pop(f"{name}.bias")
    return state


class FastRCNNDetector(nn.Module):
    """The graph as a detector: ``model(images, proposals, targets=None)``, images of any sizes and each
    image's proposals [P, 4] in its pixels; eval gives torchvision's ``[{boxes, scores, labels}]``,
    training ``{loss_classifier, loss_box_reg}`` on the sampled RoIs. Images are normalised and
    rescaled (shorter side ``min_size``, longer at most ``max_size``; Section 5.2: 600 and 1000) with
    their proposals; detections are scored and suppressed per class by torchvision's RoIHeads (NMS
    at IoU 0.3 by default, the test setting of the authors' code). Box offsets are coded with fixed
    weights (torchvision's 10, 10, 5, 5) where the paper normalises the targets to zero mean and
    unit variance over the training set."""

    def __init__(
        self,
        network: nn.Module,
        *,
        min_size: int = 600,
        max_size: int = 1000,
        box_score_thresh: float = 0.05,
        box_nms_thresh: float = 0.3,
        box_detections_per_img: int = 100,
        bbox_reg_weights: Sequence[float] = (10.0, 10.0, 5.0, 5.0),
        box_batch_size_per_image: int = 64,
        box_positive_fraction: float = 0.25,
        box_fg_iou_thresh: float = 0.5,
        box_bg_iou_low: float = 0.1,
        box_loss_weight: float = 1.0,
    ):
        super().__init__()
        self.network = network
        self.transform = GeneralizedRCNNTransform(
            min_size, max_size, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
        )
        self.box_coder = BoxCoder(tuple(bbox_reg_weights))
        self.sampling: dict[str, Any] = {
            "rois_per_image": box_batch_size_per_image,
            "positive_fraction": box_positive_fraction,
            "fg_iou_thresh": box_fg_iou_thresh,
            "bg_iou_low": box_bg_iou_low,
        }
        self.box_loss_weight = box_loss_weight
        # torchvision's per-class decoding, score threshold and NMS; it holds no layers here
        scorer = RoIHeads(
            None, None, None, box_fg_iou_thresh, box_bg_iou_low, box_batch_size_per_image,
            box_positive_fraction, tuple(bbox_reg_weights), box_score_thresh, box_nms_thresh,
            box_detections_per_img,
        )  # fmt: skip
        object.__setattr__(self, "scorer", scorer)

    def forward(
        self,
        images: Sequence[Tensor],
        proposals: Sequence[Tensor],
        targets: Sequence[Mapping[str, Tensor]] | None = None,
    ) -> list[dict[str, Tensor]] | dict[str, Tensor]:
        if len(proposals) != len(images):
            raise ValueError(f"{len(images)} images but proposals for {len(proposals)}")
        if self.training and targets is None:
            raise ValueError("a detector in training mode takes targets")
        original = [(int(image.shape[-2]), int(image.shape[-1])) for image in images]
        batch, batch_targets = self.transform(list(images), [dict(t) for t in targets] if targets else None)
        boxes = [
            resize_boxes(p.to(batch.tensors.dtype), size, new)
            for p, size, new in zip(proposals, original, batch.image_sizes, strict=True)
        ]
        if self.training:
            assert batch_targets is not None
            boxes, labels, regression = sample_rois(boxes, batch_targets, self.box_coder, **self.sampling)
        rois = torch.cat([torch.cat([b.new_full((len(b), 1), i), b], 1) for i, b in enumerate(boxes)])
        class_logits, box_regression = self.network(batch.tensors, rois)
        if self.training:
            return multitask_loss(
                class_logits, box_regression, labels, regression, box_weight=self.box_loss_weight
            )
        found, scores, classes = self.scorer.postprocess_detections(
            class_logits, box_regression, boxes, batch.image_sizes
        )
        detections = [
            {"boxes": b, "scores": s, "labels": c} for b, s, c in zip(found, scores, classes, strict=True)
        ]
        return self.transform.postprocess(detections, batch.image_sizes, original)


def fast_rcnn_detector(
    variant: str = "fast_rcnn_vgg16", *, device: Any = "cpu", **options: Any
) -> FastRCNNDetector:
    """A Fast R-CNN variant of the registry as a detector; ``options`` are the detector's keyword
    arguments (``box_score_thresh``, ``min_size``, ...) or the graph's parameters (``num_classes``)."""
    import inspect

    import papers

    known = set(inspect.signature(FastRCNNDetector.__init__).parameters) - {"self", "network"}
    settings = {k: v for k, v in options.items() if k in known}
    graph = {k: v for k, v in options.items() if k not in known}
    return FastRCNNDetector(papers.build_model(variant, device=device, **graph), **settings)
