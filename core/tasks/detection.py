"""The task layer of single-stage detectors: what turns a graph's raw maps into boxes and losses.

A spec's graph computes the pyramid maps, the class logits of every anchor and its box deltas; the
spec's ``detection`` section says how anchors are laid, coded, matched and scored. This module does
that with torchvision's detection utilities (GeneralizedRCNNTransform, AnchorGenerator, BoxCoder,
Matcher, ``batched_nms``, ``sigmoid_focal_loss``), under torchvision's contract:
``model(images, targets=None)``; in eval a list of ``{boxes, scores, labels}`` in input pixels, in
training a dict of losses. :class:`DenseDetector` scores as RetinaNet does (focal loss, per-level
top-k, class-wise NMS); :class:`SingleShotDetector` (``kind: ssd``) as SSD does (default boxes,
matching with each ground truth's best box, hard negative mining, softmax), with torchvision's SSD
loss and post-processing themselves. Only the glue is ours.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.anchor_utils import AnchorGenerator, DefaultBoxGenerator
from torchvision.models.detection.ssd import SSD
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import boxes as box_ops
from torchvision.ops import sigmoid_focal_loss

from papers.spec import DenseDetection, SingleShotDetection

OPTIONS = (
    "score_thresh",
    "nms_thresh",
    "detections_per_img",
    "topk_candidates",
    "fg_iou_thresh",
    "bg_iou_thresh",
    "focal_alpha",
    "focal_gamma",
)
"""Build options that change the task layer, with torchvision's keyword names (as RetinaNet's); the
focal loss's α and γ as the spec names them (the paper's Table 1a varies both; γ = 0 is the
α-balanced cross entropy)."""
TRANSFORM_OPTIONS = ("min_size", "max_size", "image_mean", "image_std")
SSD_OPTIONS = (
    "score_thresh",
    "nms_thresh",
    "detections_per_img",
    "topk_candidates",
    "iou_thresh",
    "positive_fraction",
)
"""Build options of ``kind: ssd``, with the keyword names of torchvision's SSD."""
SSD_TRANSFORM_OPTIONS = ("image_mean", "image_std")
"""SSD resizes every image to its fixed ``size``: only the normalisation is a build option."""


class DenseDetector(nn.Module):
    """A graph (image batch → pyramid maps, class logits, box deltas) as a torchvision detector.

    The graph's layers are this module's own children, so its ``state_dict`` has the graph's names
    (those of torchvision's detector where the spec chose them).
    """

    def __init__(self, network: nn.Module, task: DenseDetection):
        super().__init__()
        for name, child in network.named_children():
            self.add_module(name, child)
        object.__setattr__(self, "network", network)  # the generated forward, sharing those children
        self.task = task
        sizes = tuple(tuple(int(size) for size in level) for level in task.anchors.sizes)
        ratios = task.anchors.aspect_ratios
        ratios = ratios * len(sizes) if len(ratios) == 1 else ratios
        self.anchor_generator = AnchorGenerator(sizes, tuple(tuple(level) for level in ratios))
        self.box_coder = det_utils.BoxCoder(weights=tuple(task.box_weights))
        self.proposal_matcher = det_utils.Matcher(
            task.fg_iou_thresh, task.bg_iou_thresh, allow_low_quality_matches=task.allow_low_quality_matches
        )
        t = task.transform
        self.transform = GeneralizedRCNNTransform(
            t.min_size, t.max_size, t.image_mean, t.image_std, size_divisible=t.size_divisible
        )

    def forward(
        self, images: Sequence[Tensor], targets: Sequence[Mapping[str, Tensor]] | None = None
    ) -> list[dict[str, Tensor]] | dict[str, Tensor]:
        if self.training and targets is None:
            raise ValueError("a detector in training mode takes targets")
        original_sizes = [tuple(image.shape[-2:]) for image in images]
        batch, targets = self.transform(list(images), [dict(t) for t in targets] if targets else None)
        outputs = _as_dict(self.network(batch.tensors))
        features = [outputs[name] for name in self.task.levels]
        scores, deltas = outputs[self.task.scores], outputs[self.task.boxes]
        anchors = self.anchor_generator(batch, features)
        if self.training:
            assert targets is not None
            return self.losses(targets, scores, deltas, anchors)
        per_level = [level.shape[-2] * level.shape[-1] for level in features]
        per_anchor = scores.shape[1] // sum(per_level)
        split = [count * per_anchor for count in per_level]
        detections = self.detect(
            list(scores.split(split, dim=1)),
            list(deltas.split(split, dim=1)),
            [list(a.split(split)) for a in anchors],
            batch.image_sizes,
        )
        return self.transform.postprocess(detections, batch.image_sizes, original_sizes)

    # -- training ----------------------------------------------------------------------------

    def losses(
        self, targets: Sequence[Mapping[str, Tensor]], scores: Tensor, deltas: Tensor, anchors: list[Tensor]
    ) -> dict[str, Tensor]:
        """Focal loss over the anchors that are not ignored, box loss over the matched ones, each
        divided by the image's matched anchors and averaged over images."""
        classification, regression = [], []
        for index, (target, image_anchors) in enumerate(zip(targets, anchors, strict=True)):
            matched = self._match(target["boxes"], image_anchors)
            foreground = matched >= 0
            count = max(1, int(foreground.sum()))
            wanted = torch.zeros_like(scores[index])
            wanted[foreground, target["labels"][matched[foreground]]] = 1.0
            valid = matched != det_utils.Matcher.BETWEEN_THRESHOLDS
            focal = sigmoid_focal_loss(
                scores[index][valid],
                wanted[valid],
                alpha=self.task.focal_alpha,
                gamma=self.task.focal_gamma,
                reduction="sum",
            )
            classification.append(focal / count)
            box = det_utils._box_loss(
                self.task.box_loss,
                self.box_coder,
                image_anchors[foreground],
                target["boxes"][matched[foreground]],
                deltas[index][foreground],
            )
            regression.append(box / count)
        return {
            "classification": torch.stack(classification).mean(),
            "bbox_regression": torch.stack(regression).mean(),
        }

    def _match(self, boxes: Tensor, anchors: Tensor) -> Tensor:
        if boxes.numel() == 0:  # no object: every anchor is background
            return torch.full((anchors.size(0),), -1, dtype=torch.int64, device=anchors.device)
        return self.proposal_matcher(box_ops.box_iou(boxes, anchors))

    # -- inference ---------------------------------------------------------------------------

    def detect(
        self,
        scores: list[Tensor],
        deltas: list[Tensor],
        anchors: list[list[Tensor]],
        image_sizes: list[tuple[int, int]],
    ) -> list[dict[str, Tensor]]:
        """Per image and level the top-k anchor-class pairs above the score threshold, decoded and
        clipped; then class-wise NMS over all levels and the best ``detections_per_img``."""
        task = self.task
        results = []
        for index, size in enumerate(image_sizes):
            boxes, kept_scores, labels = [], [], []
            for level_scores, level_deltas, level_anchors in zip(scores, deltas, anchors[index], strict=True):
                classes = level_scores.shape[-1]
                probabilities = torch.sigmoid(level_scores[index]).flatten()
                candidates = torch.where(probabilities > task.score_thresh)[0]
                top = min(task.topk_candidates, candidates.numel())
                best, order = probabilities[candidates].topk(top)
                chosen = candidates[order]
                rows = torch.div(chosen, classes, rounding_mode="floor")
                decoded = self.box_coder.decode_single(level_deltas[index][rows], level_anchors[rows])
                boxes.append(box_ops.clip_boxes_to_image(decoded, size))
                kept_scores.append(best)
                labels.append(chosen % classes)
            all_boxes, all_scores, all_labels = torch.cat(boxes), torch.cat(kept_scores), torch.cat(labels)
            keep = box_ops.batched_nms(all_boxes, all_scores, all_labels, task.nms_thresh)
            keep = keep[: task.detections_per_img]
            results.append({"boxes": all_boxes[keep], "scores": all_scores[keep], "labels": all_labels[keep]})
        return results


class SingleShotDetector(nn.Module):
    """A graph (image batch → feature maps, per-box class logits with background first, box deltas) as
    torchvision's SSD: the same transform (a fixed square size), default boxes, matching, loss and
    post-processing, the last two torchvision's own methods."""

    compute_loss = SSD.compute_loss
    """Smooth L1 over the matched boxes and softmax cross-entropy over them and the hardest negatives
    (``neg_to_pos_ratio`` per positive), both divided by the number of matched boxes."""
    postprocess_detections = SSD.postprocess_detections
    """Per class the boxes above ``score_thresh``, the best ``topk_candidates``; NMS per class; the
    best ``detections_per_img``."""

    def __init__(self, network: nn.Module, task: SingleShotDetection):
        super().__init__()
        for name, child in network.named_children():
            self.add_module(name, child)
        object.__setattr__(self, "network", network)  # the generated forward, sharing those children
        self.task = task
        boxes = task.default_boxes
        self.anchor_generator = DefaultBoxGenerator(
            boxes.aspect_ratios,
            min_ratio=boxes.min_ratio,
            max_ratio=boxes.max_ratio,
            scales=boxes.scales,
            steps=boxes.steps,
            clip=boxes.clip,
        )
        self.box_coder = det_utils.BoxCoder(weights=tuple(task.box_weights))
        self.proposal_matcher = det_utils.SSDMatcher(task.iou_thresh)
        t = task.transform
        self.transform = GeneralizedRCNNTransform(
            task.size,
            task.size,
            t.image_mean,
            t.image_std,
            size_divisible=1,
            fixed_size=(task.size, task.size),
        )
        self.score_thresh = task.score_thresh
        self.nms_thresh = task.nms_thresh
        self.detections_per_img = task.detections_per_img
        self.topk_candidates = task.topk_candidates
        self.neg_to_pos_ratio = (1.0 - task.positive_fraction) / task.positive_fraction

    def forward(
        self, images: Sequence[Tensor], targets: Sequence[Mapping[str, Tensor]] | None = None
    ) -> list[dict[str, Tensor]] | dict[str, Tensor]:
        if self.training and targets is None:
            raise ValueError("a detector in training mode takes targets")
        original_sizes = [tuple(image.shape[-2:]) for image in images]
        batch, targets = self.transform(list(images), [dict(t) for t in targets] if targets else None)
        outputs = _as_dict(self.network(batch.tensors))
        features = [outputs[name] for name in self.task.levels]
        head_outputs = {"cls_logits": outputs[self.task.scores], "bbox_regression": outputs[self.task.boxes]}
        anchors = self.anchor_generator(batch, features)
        if self.training:
            assert targets is not None
            matched = [
                self._match(target["boxes"], image_anchors)
                for target, image_anchors in zip(targets, anchors, strict=True)
            ]
            return self.compute_loss(targets, head_outputs, anchors, matched)
        detections = self.postprocess_detections(head_outputs, anchors, batch.image_sizes)
        return self.transform.postprocess(detections, batch.image_sizes, original_sizes)

    def _match(self, boxes: Tensor, anchors: Tensor) -> Tensor:
        """Each default box's ground truth: IoU ≥ ``iou_thresh``, and every ground truth its best box."""
        if boxes.numel() == 0:  # no object: every default box is background
            return torch.full((anchors.size(0),), -1, dtype=torch.int64, device=anchors.device)
        return self.proposal_matcher(box_ops.box_iou(boxes, anchors))


def _as_dict(outputs: Any) -> dict[str, Tensor]:
    if isinstance(outputs, Mapping):
        return dict(outputs)
    if isinstance(outputs, tuple) and hasattr(outputs, "_fields"):
        return dict(zip(outputs._fields, outputs, strict=True))
    raise TypeError(f"a detector's graph returns named outputs, not {type(outputs).__name__}")
