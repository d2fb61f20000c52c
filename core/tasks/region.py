"""The task layer of two-stage (region-based) detectors: Faster R-CNN's proposals and second stage.

A spec's detector graph computes the feature maps and, per level, the RPN's objectness logits and
box deltas; a second graph of the spec (``detection.box_head``) classifies the pooled proposals.
Everything between is torchvision's, configured by the spec's ``detection`` section
(``kind: two_stage``) with FasterRCNN's keyword names: GeneralizedRCNNTransform, AnchorGenerator,
RegionProposalNetwork (its proposal filtering, matching, sampling and losses), MultiScaleRoIAlign
or, on one map, ``roi_pool``, ``ps_roi_pool`` or ``ps_roi_align``, and RoIHeads (sampling, losses,
per-class NMS). The contract is torchvision's: ``model(images, targets=None)``; in eval a list of
``{boxes, scores, labels}`` in input pixels, in training ``{loss_objectness, loss_rpn_box_reg,
loss_classifier, loss_box_reg}``.

Only the glue is ours: the RPN's forward is torchvision's with the head's outputs taken from the
graph (which computes them in the same pass as the maps), pooling on one map infers its scale as
MultiScaleRoIAlign does, and a box head's class-agnostic 4 deltas are given to RoIHeads per class.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor, nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork, concat_box_prediction_layers
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import MultiScaleRoIAlign, ps_roi_align, ps_roi_pool, roi_pool

from papers.errors import GraphError
from papers.spec import RegionDetection
from papers.tasks.detection import _as_dict

OPTIONS = tuple(
    name
    for name in RegionDetection.model_fields
    if name.startswith(("rpn_", "box_", "bbox_")) and name not in ("rpn_deltas", "box_head")
)
"""Build options that change the task layer: torchvision's FasterRCNN keyword names."""


class RegionDetector(nn.Module):
    """A detector graph (images → maps, RPN objectness and deltas) and a box-head graph (pooled RoIs →
    class logits, box deltas) as a torchvision two-stage detector.

    Both graphs' layers are this module's own children, under the names the specs give them, so the
    ``state_dict`` is the graphs' (torchvision's where the spec chose its names). torchvision's RPN and
    RoIHeads hold no weights here; they run the proposal and second-stage machinery. Each proposal is
    pooled to ``pooled_size`` squared, the box head graph's input size.
    """

    def __init__(self, network: nn.Module, box_head: nn.Module, task: RegionDetection, *, pooled_size: int):
        super().__init__()
        for graph in (network, box_head):
            for name, child in graph.named_children():
                if name in self._modules:
                    raise GraphError(
                        f"the detector graph and the box head graph both name a layer {name!r}",
                        field="detection.box_head.graph",
                    )
                self.add_module(name, child)
        object.__setattr__(self, "network", network)  # the generated forwards, sharing those children
        self.task = task
        sizes = tuple(tuple(int(size) for size in level) for level in task.anchors.sizes)
        ratios = task.anchors.aspect_ratios
        ratios = ratios * len(sizes) if len(ratios) == 1 else ratios
        rpn = RegionProposalNetwork(
            AnchorGenerator(sizes, tuple(tuple(level) for level in ratios)),
            nn.Identity(),  # the graph computes the head's outputs
            task.rpn_fg_iou_thresh,
            task.rpn_bg_iou_thresh,
            task.rpn_batch_size_per_image,
            task.rpn_positive_fraction,
            {"training": task.rpn_pre_nms_top_n_train, "testing": task.rpn_pre_nms_top_n_test},
            {"training": task.rpn_post_nms_top_n_train, "testing": task.rpn_post_nms_top_n_test},
            task.rpn_nms_thresh,
            score_thresh=task.rpn_score_thresh,
        )
        pool = task.roi_pool
        pooler: nn.Module = (
            MultiScaleRoIAlign(pool.levels, pooled_size, pool.sampling_ratio)
            if pool.kind == "align"
            else _OneMapPool(pool.levels[0], pooled_size, pool.kind, pool.sampling_ratio)
        )
        second = task.box_head
        roi_heads = RoIHeads(
            pooler,
            _GraphHead(box_head, second.class_logits, second.box_regression),
            _Passed(),  # the box head graph gives the predictor's outputs too
            task.box_fg_iou_thresh,
            task.box_bg_iou_thresh,
            task.box_batch_size_per_image,
            task.box_positive_fraction,
            tuple(task.bbox_reg_weights),
            task.box_score_thresh,
            task.box_nms_thresh,
            task.box_detections_per_img,
        )
        # torchvision's machinery, kept out of the module tree (it has no weights; its names are not ours)
        object.__setattr__(self, "rpn_layer", rpn)
        object.__setattr__(self, "roi_heads_layer", roi_heads)
        t = task.transform
        self.transform = GeneralizedRCNNTransform(
            t.min_size, t.max_size, t.image_mean, t.image_std, size_divisible=t.size_divisible
        )

    def forward(
        self, images: Sequence[Tensor], targets: Sequence[Mapping[str, Tensor]] | None = None
    ) -> list[dict[str, Tensor]] | dict[str, Tensor]:
        if self.training and targets is None:
            raise ValueError("a detector in training mode takes targets")
        original_sizes = [(int(image.shape[-2]), int(image.shape[-1])) for image in images]
        batch, batch_targets = self.transform(list(images), [dict(t) for t in targets] if targets else None)
        outputs = self.head_outputs(batch)
        proposals, losses = self.propose(batch, outputs, batch_targets)
        maps = OrderedDict((name, outputs[name]) for name in self.task.roi_pool.levels)
        roi_heads = self.roi_heads_layer
        roi_heads.training = self.training
        detections, box_losses = roi_heads(maps, proposals, batch.image_sizes, batch_targets)
        if self.training:
            return {**losses, **box_losses}
        return self.transform.postprocess(detections, batch.image_sizes, original_sizes)

    def head_outputs(self, batch: ImageList) -> dict[str, Tensor]:
        """The detector graph's named outputs (maps, RPN objectness and deltas) on a transformed batch."""
        return _as_dict(self.network(batch.tensors))

    def propose(
        self,
        batch: ImageList,
        outputs: Mapping[str, Tensor],
        targets: list[dict[str, Tensor]] | None = None,
    ) -> tuple[list[Tensor], dict[str, Tensor]]:
        """Proposals per image, and in training the RPN's losses: torchvision's RegionProposalNetwork
        forward, the head's outputs read from the graph's."""
        rpn = self.rpn_layer
        rpn.training = self.training
        features = [outputs[name] for name in self.task.levels]
        objectness = [outputs[name] for name in self.task.objectness]
        deltas = [outputs[name] for name in self.task.rpn_deltas]
        anchors = rpn.anchor_generator(batch, features)
        per_level = [int(math.prod(level.shape[1:])) for level in objectness]
        scores, flat_deltas = concat_box_prediction_layers(objectness, deltas)
        proposals = rpn.box_coder.decode(flat_deltas.detach(), anchors).view(len(anchors), -1, 4)
        boxes, _ = rpn.filter_proposals(proposals, scores, batch.image_sizes, per_level)
        if not self.training:
            return boxes, {}
        assert targets is not None
        labels, matched = rpn.assign_targets_to_anchors(anchors, targets)
        wanted = rpn.box_coder.encode(matched, anchors)
        loss_objectness, loss_box = rpn.compute_loss(scores, flat_deltas, labels, wanted)
        return boxes, {"loss_objectness": loss_objectness, "loss_rpn_box_reg": loss_box}


class _GraphHead(nn.Module):
    """RoIHeads' ``box_head``: the box-head graph on the pooled features, giving (logits, deltas)."""

    def __init__(self, graph: nn.Module, logits: str, deltas: str):
        super().__init__()
        object.__setattr__(self, "graph", graph)  # registered on the detector, not here
        self.names = (logits, deltas)

    def forward(self, pooled: Tensor) -> tuple[Tensor, Tensor]:
        outputs = _as_dict(self.graph(pooled))
        logits, deltas = outputs[self.names[0]], outputs[self.names[1]]
        if deltas.shape[-1] == 4 and logits.shape[-1] > 1:
            # class-agnostic regression (R-FCN, Light-Head R-CNN): RoIHeads reads 4 deltas per class,
            # and the same 4 for every class decode and train exactly as the paper's one box
            deltas = deltas.repeat(1, logits.shape[-1])
        return logits, deltas


class _Passed(nn.Module):
    """RoIHeads' ``box_predictor``: what the box-head graph already predicted."""

    def forward(self, predicted: Any) -> Any:
        return predicted


class _OneMapPool(nn.Module):
    """RoI pooling on one map, its scale the map's size over the image's rounded to a power of two, as
    MultiScaleRoIAlign infers it: max pooling (Fast R-CNN's RoI pooling layer, ``roi_pool``), or
    position-sensitive average pooling (R-FCN's, ``ps_roi_pool``) or RoIAlign (Light-Head R-CNN's,
    ``ps_roi_align``), which read the channels c·s² + i·s + j for bin (i, j) of output channel c."""

    def __init__(self, level: str, output_size: int, kind: str = "pool", sampling_ratio: int = 2):
        super().__init__()
        self.level, self.output_size, self.kind = level, output_size, kind
        self.sampling_ratio = sampling_ratio if sampling_ratio > 0 else -1  # torchvision's adaptive

    def forward(
        self, maps: Mapping[str, Tensor], boxes: list[Tensor], image_shapes: list[tuple[int, int]]
    ) -> Tensor:
        feature = maps[self.level]
        largest = max(size[0] for size in image_shapes), max(size[1] for size in image_shapes)
        scale = 2.0 ** round(math.log2(feature.shape[-2] / largest[0]))
        rois = [b.to(feature.dtype) for b in boxes]
        if self.kind == "ps_pool":
            return ps_roi_pool(feature, rois, self.output_size, scale)
        if self.kind == "ps_align":
            return ps_roi_align(feature, rois, self.output_size, scale, self.sampling_ratio)
        return roi_pool(feature, rois, self.output_size, scale)
