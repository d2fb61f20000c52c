"""What the YOLO papers need besides layers: v1's grid and loss, the three decodings, anchor clustering.

No library has these, so they are written here on ``torchvision.ops`` (``box_iou``, ``batched_nms``):

- ``yolo_v1_grid``: YOLO v1's last fully connected output [N, S·S·(5B + C)] as its S × S × (5B + C)
  tensor (Redmon et al. 2016, Section 2). Each cell's row is B × (x, y, √w, √h, confidence), then C
  class probabilities. The paper fixes the tensor, not where each value sits in the fully connected
  output: the spec takes Darknet's (all class probabilities first, then all confidences, then all
  boxes), so that the authors' weights decode as trained.
- ``yolo_v1_loss``: the sum-squared error of equation 3 (λcoord = 5, λnoobj = 0.5, square roots of
  width and height, the responsible predictor the one of highest IoU in the object's cell).
- ``decode_yolo_v1``, ``decode_yolo_v2``, ``decode_yolov3``: raw maps to torchvision's
  ``[{boxes (x1, y1, x2, y2 in input pixels), scores, labels}]`` with per-class non-maximum
  suppression. v1 scores a class by Pr(class | object) · confidence; v2 by a softmax over classes
  times the sigmoid objectness, with boxes σ(t) offsets in their cell and anchor priors scaled by
  exp(t) (YOLO9000 Section 2, "Direct location prediction"); v3 the same boxes with independent
  logistic class scores (YOLOv3 Section 2.2).
- ``wordtree_softmax``, ``wordtree_probabilities``: YOLO9000's hierarchical classification, a softmax
  over each set of WordTree siblings and the product of conditional probabilities down a path
  (YOLO9000 Section 4); ``decode_yolo_v2(..., tree=parents)`` scores detections with it.
- ``yolo_v2_loss``: YOLOv2's training loss from what YOLO9000's Section 2 states (one prior per
  object, σ(to) trained to the IoU of its box, softmax classes), the rest from YOLO v1 and YOLOv3 as
  its docstring says.
- ``kmeans_anchors``: YOLO9000's dimension clusters, k-means on box widths and heights with the
  distance 1 − IoU (boxes compared as if they shared a centre). scikit-learn's k-means takes only
  Euclidean distances, so this is numpy.

Imported only when a model is built or a function is called (the plugin module does not import torch).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torchvision.ops import batched_nms, box_iou

# --- YOLO v1 -----------------------------------------------------------------------------------


def yolo_v1_grid(x: Tensor, grid: int, boxes: int = 2, layout: str = "cell") -> Tensor:
    """[N, S·S·V] as [N, S, S, V]: one row of V = 5B + C values per cell, B × (x, y, √w, √h,
    confidence) then C class probabilities. ``layout`` says how ``x`` holds them: ``cell``, row by
    row already; ``darknet``, as Darknet's ``[detection]`` layer reads its input (all S·S·C class
    probabilities, then the S·S·B confidences, then the S·S·B boxes), so that the authors' weights
    decode as they were trained."""
    n, features = x.shape
    cells = grid * grid
    if features % cells:
        raise ValueError(f"{features} values do not split into a {grid} × {grid} grid")
    values = features // cells
    if layout == "cell":
        return x.reshape(n, grid, grid, values)
    if layout != "darknet":
        raise ValueError(f"layout is 'cell' or 'darknet', not {layout!r}")
    classes = values - 5 * boxes
    probabilities = x[:, : cells * classes].reshape(n, cells, classes)
    confidences = x[:, cells * classes : cells * (classes + boxes)].reshape(n, cells, boxes, 1)
    coordinates = x[:, cells * (classes + boxes) :].reshape(n, cells, boxes, 4)
    predictions = torch.cat((coordinates, confidences), dim=-1).reshape(n, cells, 5 * boxes)
    return torch.cat((predictions, probabilities), dim=-1).reshape(n, grid, grid, values)


def _cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), dim=-1)


def yolo_v1_loss(
    output: Tensor,
    targets: Sequence[dict[str, Tensor]],
    image_size: tuple[int, int],
    *,
    boxes: int = 2,
    lambda_coord: float = 5.0,
    lambda_noobj: float = 0.5,
    rescore: bool = True,
) -> Tensor:
    """Equation 3 of YOLO v1, summed over the grid and averaged over the batch.

    ``output`` [N, S, S, 5B + C] (``yolo_v1_grid``); ``targets`` per image ``boxes`` [K, 4] (x1, y1,
    x2, y2 in input pixels) and ``labels`` [K] (0 to C − 1); ``image_size`` (height, width). An
    object belongs to the cell holding its centre; of that cell's B predictors the one whose box has
    the highest IoU with it is responsible. The confidence target is that IoU (``rescore``, Section
    2: "the IOU between the predicted box and the ground truth"), or 1. Where two objects fall in one
    cell, the paper is silent: the first in ``targets`` wins, the rest are not learned. The batch
    mean is ours; the paper writes the sum for one image.
    """
    n, grid, _, values = output.shape
    classes = values - 5 * boxes
    height, width = image_size
    total = output.new_zeros(())
    for b, target in enumerate(targets):
        predicted = output[b, :, :, : 5 * boxes].reshape(grid, grid, boxes, 5)
        class_probs = output[b, :, :, 5 * boxes :]
        responsible = torch.zeros(grid, grid, boxes, dtype=torch.bool, device=output.device)
        taken = torch.zeros(grid, grid, dtype=torch.bool, device=output.device)
        for box, label in zip(target["boxes"], target["labels"], strict=True):
            x1, y1, x2, y2 = box.tolist()
            cx, cy = (x1 + x2) / 2 / width, (y1 + y2) / 2 / height
            w, h = (x2 - x1) / width, (y2 - y1) / height
            row, col = min(int(cy * grid), grid - 1), min(int(cx * grid), grid - 1)
            if taken[row, col]:
                continue
            taken[row, col] = True
            cell = predicted[row, col]
            # the B boxes in image fractions: centre from the cell's offset, size from its square root
            centres_x = (col + cell[:, 0]) / grid
            centres_y = (row + cell[:, 1]) / grid
            sizes_w, sizes_h = cell[:, 2] ** 2, cell[:, 3] ** 2
            guesses = _cxcywh_to_xyxy(torch.stack((centres_x, centres_y, sizes_w, sizes_h), dim=-1))
            truth = output.new_tensor([[cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]])
            ious = box_iou(guesses.detach(), truth)[:, 0]
            j = int(ious.argmax())
            responsible[row, col, j] = True
            offset_x, offset_y = cx * grid - col, cy * grid - row
            total = total + lambda_coord * ((cell[j, 0] - offset_x) ** 2 + (cell[j, 1] - offset_y) ** 2)
            total = total + lambda_coord * ((cell[j, 2] - w**0.5) ** 2 + (cell[j, 3] - h**0.5) ** 2)
            confidence_target = ious[j] if rescore else output.new_ones(())
            total = total + (cell[j, 4] - confidence_target) ** 2
            one_hot = torch.zeros(classes, device=output.device, dtype=output.dtype)
            one_hot[int(label)] = 1.0
            total = total + ((class_probs[row, col] - one_hot) ** 2).sum()
        confidences = predicted[..., 4]
        total = total + lambda_noobj * (confidences[~responsible] ** 2).sum()
    return total / max(n, 1)


def decode_yolo_v1(
    output: Tensor,
    image_size: tuple[int, int],
    *,
    boxes: int = 2,
    score_thresh: float = 0.05,
    nms_thresh: float = 0.5,
    detections_per_img: int = 100,
) -> list[dict[str, Tensor]]:
    """YOLO v1's grid [N, S, S, 5B + C] as detections: class-specific scores Pr(class | object) ·
    confidence (Section 2, equation 2) for every box and class, those above ``score_thresh`` kept,
    per-class NMS at ``nms_thresh``. The paper gives neither threshold: torchvision's defaults."""
    n, grid, _, values = output.shape
    classes = values - 5 * boxes
    height, width = image_size
    predicted = output[..., : 5 * boxes].reshape(n, grid, grid, boxes, 5)
    rows = torch.arange(grid, device=output.device, dtype=output.dtype).view(1, grid, 1, 1)
    cols = torch.arange(grid, device=output.device, dtype=output.dtype).view(1, 1, grid, 1)
    cx = (cols + predicted[..., 0]) / grid * width
    cy = (rows + predicted[..., 1]) / grid * height
    w = predicted[..., 2] ** 2 * width
    h = predicted[..., 3] ** 2 * height
    xyxy = _cxcywh_to_xyxy(torch.stack((cx, cy, w, h), dim=-1)).reshape(n, -1, 4)
    confidence = predicted[..., 4]
    class_probs = output[..., 5 * boxes :].unsqueeze(3)
    scores = (class_probs * confidence.unsqueeze(-1)).reshape(n, -1, classes)
    return [
        _select(xyxy[i], scores[i], (height, width), score_thresh, nms_thresh, detections_per_img)
        for i in range(n)
    ]


# --- YOLOv2 and YOLOv3 -------------------------------------------------------------------------


def _anchor_boxes(raw: Tensor, anchors: Tensor, stride: float) -> tuple[Tensor, Tensor, Tensor]:
    """A head's map [N, A·(5 + C), H, W] as boxes [N, H·W·A, 4] (x1, y1, x2, y2 in input pixels),
    objectness logits [N, H·W·A] and class logits [N, H·W·A, C]; ``anchors`` [A, 2] the priors'
    widths and heights in input pixels. bx = (σ(tx) + cx) · stride, bw = pw · exp(tw)."""
    n, channels, height, width = raw.shape
    count = anchors.shape[0]
    if channels % count:
        raise ValueError(f"{channels} channels do not split into {count} anchors")
    values = channels // count
    per_anchor = raw.view(n, count, values, height, width).permute(0, 3, 4, 1, 2)  # N, H, W, A, 5 + C
    rows = torch.arange(height, device=raw.device, dtype=raw.dtype).view(1, height, 1, 1)
    cols = torch.arange(width, device=raw.device, dtype=raw.dtype).view(1, 1, width, 1)
    cx = (torch.sigmoid(per_anchor[..., 0]) + cols) * stride
    cy = (torch.sigmoid(per_anchor[..., 1]) + rows) * stride
    priors = anchors.to(raw)
    w = priors[:, 0] * torch.exp(per_anchor[..., 2])
    h = priors[:, 1] * torch.exp(per_anchor[..., 3])
    boxes = _cxcywh_to_xyxy(torch.stack((cx, cy, w, h), dim=-1)).reshape(n, -1, 4)
    return boxes, per_anchor[..., 4].reshape(n, -1), per_anchor[..., 5:].reshape(n, -1, values - 5)


def decode_yolo_v2(
    raw: Tensor,
    anchors: Sequence[Sequence[float]],
    image_size: tuple[int, int],
    *,
    score_thresh: float = 0.05,
    nms_thresh: float = 0.5,
    detections_per_img: int = 100,
    tree: Sequence[int] | None = None,
) -> list[dict[str, Tensor]]:
    """YOLOv2's map [N, A·(5 + C), H, W] as detections. ``anchors``: the priors' (width, height) in
    grid cells, as Darknet's cfg gives them (the cell is the map's stride). A class scores
    softmax(classes) · σ(objectness) (YOLO9000 Section 2). With ``tree`` (each class's parent, as
    :func:`wordtree_softmax` takes it), YOLO9000's head: a node scores its WordTree probability, the
    product of the conditional ones down its path, times σ(objectness) (Section 4)."""
    stride = image_size[0] / raw.shape[-2]
    priors = torch.as_tensor(anchors, dtype=torch.float32) * stride
    boxes, objectness, class_logits = _anchor_boxes(raw, priors, stride)
    if tree is None:
        probabilities = torch.softmax(class_logits, dim=-1)
    else:
        probabilities = wordtree_probabilities(wordtree_softmax(class_logits, tree), tree)
    scores = probabilities * torch.sigmoid(objectness).unsqueeze(-1)
    return [
        _select(boxes[i], scores[i], image_size, score_thresh, nms_thresh, detections_per_img)
        for i in range(raw.shape[0])
    ]


def decode_yolov3(
    maps: Sequence[Tensor],
    anchors: Sequence[Sequence[Sequence[float]]],
    image_size: tuple[int, int],
    *,
    score_thresh: float = 0.05,
    nms_thresh: float = 0.5,
    detections_per_img: int = 100,
) -> list[dict[str, Tensor]]:
    """YOLOv3's maps, one per scale [N, A·(5 + C), H, W], as detections. ``anchors``: per scale the
    priors' (width, height) in input pixels. A class scores σ(class) · σ(objectness): independent
    logistic classifiers (YOLOv3 Section 2.2), so one box may carry several labels."""
    height, _ = image_size
    parts = [
        _anchor_boxes(raw, torch.as_tensor(priors, dtype=torch.float32), height / raw.shape[-2])
        for raw, priors in zip(maps, anchors, strict=True)
    ]
    boxes = torch.cat([p[0] for p in parts], dim=1)
    objectness = torch.cat([p[1] for p in parts], dim=1)
    class_logits = torch.cat([p[2] for p in parts], dim=1)
    scores = torch.sigmoid(class_logits) * torch.sigmoid(objectness).unsqueeze(-1)
    return [
        _select(boxes[i], scores[i], image_size, score_thresh, nms_thresh, detections_per_img)
        for i in range(boxes.shape[0])
    ]


def yolov3_loss(
    maps: Sequence[Tensor],
    anchors: Sequence[Sequence[Sequence[float]]],
    targets: Sequence[dict[str, Tensor]],
    image_size: tuple[int, int],
    *,
    ignore_thresh: float = 0.5,
) -> dict[str, Tensor]:
    """YOLOv3's training loss (Section 2), each term summed over the batch's predictions and averaged
    over its images.

    ``maps`` per scale [N, A·(5 + C), H, W]; ``anchors`` per scale the priors' (width, height) in input
    pixels; ``targets`` per image ``boxes`` [K, 4] (x1, y1, x2, y2 in input pixels) and ``labels`` [K]
    (0 to C − 1). Each object is given to one prior, the one of the nine whose shape overlaps it most
    (centres aligned), in the cell of that prior's scale holding its centre (Section 2.1: "only
    assigns one bounding box prior for each ground truth object"); where two objects fall on one prior
    and cell, the paper is silent and the later one is learned. Terms:

    - ``loss_box``: sum-squared error of the coordinates, σ(tx), σ(ty) against the centre's offset in
      its cell and tw, th against log(w / pw), log(h / ph) (Section 2.1, "sum of squared error loss");
    - ``loss_objectness``: binary cross-entropy of the objectness logit, 1 for the assigned priors and 0
      for the others, except that a prediction whose box overlaps an object by more than
      ``ignore_thresh`` without being assigned to it is left out (Section 2.1: "we ignore the
      prediction", threshold .5);
    - ``loss_classifier``: binary cross-entropy of each class's logit for the assigned priors
      (Section 2.2: independent logistic classifiers, no softmax).
    """
    height, width = image_size
    n = maps[0].shape[0]
    shapes = torch.tensor([list(prior) for scale in anchors for prior in scale], dtype=torch.float32)
    owner = [(s, a) for s, scale in enumerate(anchors) for a in range(len(scale))]
    box_loss = maps[0].new_zeros(())
    objectness_loss = maps[0].new_zeros(())
    class_loss = maps[0].new_zeros(())
    for s, raw in enumerate(maps):
        _, channels, rows, cols = raw.shape
        count = len(anchors[s])
        values = channels // count
        stride_y, stride_x = height / rows, width / cols
        per_anchor = raw.view(n, count, values, rows, cols).permute(0, 1, 3, 4, 2)  # N, A, H, W, 5 + C
        priors = torch.as_tensor(anchors[s], dtype=raw.dtype, device=raw.device)
        with torch.no_grad():
            predicted, _, _ = _anchor_boxes(raw.detach(), priors, stride_y)  # N, H·W·A, 4 (H, W, A order)
        objectness_target = torch.zeros(n, count, rows, cols, dtype=raw.dtype, device=raw.device)
        counted = torch.ones(n, count, rows, cols, dtype=torch.bool, device=raw.device)
        for b, target in enumerate(targets):
            truth = target["boxes"].to(raw)
            if truth.numel() == 0:
                continue
            overlap = box_iou(predicted[b], truth).amax(dim=1).view(rows, cols, count).permute(2, 0, 1)
            counted[b] &= overlap <= ignore_thresh
            sizes = torch.stack((truth[:, 2] - truth[:, 0], truth[:, 3] - truth[:, 1]), dim=1)
            best = centred_iou(sizes.detach().cpu().numpy(), shapes.numpy()).argmax(axis=1)
            for k, index in enumerate(best.tolist()):
                scale, a = owner[index]
                if scale != s:
                    continue
                x1, y1, x2, y2 = truth[k].tolist()
                cx, cy = (x1 + x2) / 2 / stride_x, (y1 + y2) / 2 / stride_y
                col, row = min(int(cx), cols - 1), min(int(cy), rows - 1)
                objectness_target[b, a, row, col] = 1.0
                counted[b, a, row, col] = True
                cell = per_anchor[b, a, row, col]
                goal = raw.new_tensor(
                    [
                        cx - col,
                        cy - row,
                        math.log(max(x2 - x1, 1e-6) / float(priors[a, 0])),
                        math.log(max(y2 - y1, 1e-6) / float(priors[a, 1])),
                    ]
                )
                guess = torch.cat((torch.sigmoid(cell[:2]), cell[2:4]))
                box_loss = box_loss + ((guess - goal) ** 2).sum()
                one_hot = torch.zeros_like(cell[5:])
                one_hot[int(target["labels"][k])] = 1.0
                class_loss = class_loss + F.binary_cross_entropy_with_logits(
                    cell[5:], one_hot, reduction="sum"
                )
        logits = per_anchor[..., 4]
        objectness_loss = objectness_loss + F.binary_cross_entropy_with_logits(
            logits[counted], objectness_target[counted], reduction="sum"
        )
    return {
        "loss_box": box_loss / max(n, 1),
        "loss_objectness": objectness_loss / max(n, 1),
        "loss_classifier": class_loss / max(n, 1),
    }


def yolo_v2_loss(
    raw: Tensor,
    anchors: Sequence[Sequence[float]],
    targets: Sequence[dict[str, Tensor]],
    image_size: tuple[int, int],
    *,
    lambda_coord: float = 5.0,
    lambda_noobj: float = 0.5,
    ignore_thresh: float | None = 0.5,
) -> dict[str, Tensor]:
    """YOLOv2's training loss, each term summed over the batch's predictions and averaged over its
    images.

    ``raw`` [N, A·(5 + C), H, W]; ``anchors`` [A] the priors' (width, height) in grid cells, as
    :func:`decode_yolo_v2` takes them; ``targets`` per image ``boxes`` [K, 4] (x1, y1, x2, y2 in input
    pixels) and ``labels`` [K] (0 to C − 1). What YOLO9000 (Section 2, "Better") states:

    - boxes are bx = σ(tx) + cx, by = σ(ty) + cy, bw = pw·e^tw, bh = ph·e^th in grid cells ("Direct
      location prediction");
    - an object belongs to the cell holding its centre and, in it, to the one prior whose shape
      overlaps it most (centres aligned: the IoU of the "Dimension Clusters" distance), as YOLO v1
      gives an object to one predictor ("Convolutional With Anchor Boxes": objectness and class are
      predicted per anchor, "following YOLO");
    - σ(to) = Pr(object) · IOU(b, object): the objectness target of the responsible prior is the IoU
      of its predicted box (not back-propagated through) with the object, 0 for the others;
    - class probabilities are a softmax over the classes, conditional on an object.

    The paper prints no formula for the loss; what it leaves out is taken so:

    - every term is a sum-squared error, as in YOLO v1's equation 3 (Section 2 of YOLO9000 says the
      objectness "still predicts the IOU", "following YOLO"): ``loss_box`` on σ(tx), σ(ty) against the
      centre's offset in its cell and tw, th against log(w / pw), log(h / ph) (the targets of the
      parametrisation above), weighted by YOLO v1's λcoord = 5; ``loss_objectness`` on σ(to), the
      priors without an object weighted by YOLO v1's λnoobj = 0.5; ``loss_classifier`` on the softmax
      probabilities against the one-hot class;
    - a prior without an object whose predicted box overlaps an object by more than
      ``ignore_thresh`` is not told it is background: YOLOv3's rule (its Section 2.1, threshold .5),
      which YOLO9000 does not state; ``None`` counts every one;
    - Darknet's early term pulling every prediction towards its prior's shape is not in the paper and
      is left out; where two objects fall on one prior and cell, the first in ``targets`` is learned.
    """
    n, channels, rows, cols = raw.shape
    count = len(anchors)
    if channels % count:
        raise ValueError(f"{channels} channels do not split into {count} anchors")
    values = channels // count
    height, width = image_size
    stride_y, stride_x = height / rows, width / cols
    shapes = np.asarray(anchors, dtype=np.float64)  # in cells
    per_anchor = raw.view(n, count, values, rows, cols).permute(0, 1, 3, 4, 2)  # N, A, H, W, 5 + C
    priors = torch.as_tensor(shapes, dtype=raw.dtype, device=raw.device)
    with torch.no_grad():
        # the predicted boxes in input pixels, [N, H·W·A, 4] in (H, W, A) order
        pixels = priors * priors.new_tensor([stride_x, stride_y])
        predicted, _, _ = _anchor_boxes(raw.detach(), pixels, stride_y)
    objectness = torch.sigmoid(per_anchor[..., 4])
    objectness_target = torch.zeros_like(objectness)
    responsible = torch.zeros(n, count, rows, cols, dtype=torch.bool, device=raw.device)
    counted = torch.ones_like(responsible)
    box_loss = raw.new_zeros(())
    class_loss = raw.new_zeros(())
    for b, target in enumerate(targets):
        truth = target["boxes"].to(raw)
        if truth.numel() == 0:
            continue
        ious = box_iou(predicted[b], truth)  # [H·W·A, K]
        if ignore_thresh is not None:
            overlap = ious.amax(dim=1).view(rows, cols, count).permute(2, 0, 1)
            counted[b] &= overlap <= ignore_thresh
        sizes = torch.stack(
            ((truth[:, 2] - truth[:, 0]) / stride_x, (truth[:, 3] - truth[:, 1]) / stride_y), dim=1
        )
        best = centred_iou(sizes.detach().cpu().double().numpy(), shapes).argmax(axis=1)
        for k, a in enumerate(best.tolist()):
            x1, y1, x2, y2 = truth[k].tolist()
            cx, cy = (x1 + x2) / 2 / stride_x, (y1 + y2) / 2 / stride_y
            col, row = min(int(cx), cols - 1), min(int(cy), rows - 1)
            if responsible[b, a, row, col]:
                continue
            responsible[b, a, row, col] = True
            counted[b, a, row, col] = True
            objectness_target[b, a, row, col] = ious[(row * cols + col) * count + a, k]
            cell = per_anchor[b, a, row, col]
            goal = raw.new_tensor(
                [
                    cx - col,
                    cy - row,
                    math.log(max(float(sizes[k, 0]), 1e-6) / shapes[a, 0]),
                    math.log(max(float(sizes[k, 1]), 1e-6) / shapes[a, 1]),
                ]
            )
            guess = torch.cat((torch.sigmoid(cell[:2]), cell[2:4]))
            box_loss = box_loss + lambda_coord * ((guess - goal) ** 2).sum()
            one_hot = torch.zeros_like(cell[5:])
            one_hot[int(target["labels"][k])] = 1.0
            class_loss = class_loss + ((torch.softmax(cell[5:], dim=0) - one_hot) ** 2).sum()
    errors = (objectness - objectness_target) ** 2
    empty = counted & ~responsible
    objectness_loss = errors[responsible].sum() + lambda_noobj * errors[empty].sum()
    return {
        "loss_box": box_loss / max(n, 1),
        "loss_objectness": objectness_loss / max(n, 1),
        "loss_classifier": class_loss / max(n, 1),
    }


def _sibling_groups(parents: Sequence[int]) -> list[tuple[int, int]]:
    """(start, end) of each run of nodes with one parent: the groups WordTree's softmaxes cover."""
    groups, start = [], 0
    for i in range(1, len(parents) + 1):
        if i == len(parents) or parents[i] != parents[start]:
            groups.append((start, i))
            start = i
    return groups


def wordtree_softmax(logits: Tensor, parents: Sequence[int]) -> Tensor:
    """YOLO9000's hierarchical classification (Section 4): a softmax over each set of siblings, giving
    every WordTree node's probability given its parent. ``parents``: per node its parent's index (−1
    for the roots); siblings are consecutive and a parent comes before its children, as in Darknet's
    tree files. ``logits`` [..., nodes]."""
    if logits.shape[-1] != len(parents):
        raise ValueError(f"{logits.shape[-1]} class logits for a tree of {len(parents)} nodes")
    if any(not -1 <= p < i for i, p in enumerate(parents)):
        raise ValueError("every node's parent must come before it (or be -1 for a root)")
    groups = _sibling_groups(parents)
    if len({parents[start] for start, _ in groups}) != len(groups):
        raise ValueError("the children of one parent must be consecutive")
    return torch.cat([torch.softmax(logits[..., a:b], dim=-1) for a, b in groups], dim=-1)


def wordtree_probabilities(conditional: Tensor, parents: Sequence[int]) -> Tensor:
    """Each node's absolute probability: its conditional probability times its parent's, down from
    the roots (Section 4: Pr(Norfolk terrier) = Pr(Norfolk terrier | terrier) · Pr(terrier | hunting
    dog) · ... ). ``conditional`` [..., nodes] from :func:`wordtree_softmax`."""
    depth = [0] * len(parents)
    for i, parent in enumerate(parents):
        depth[i] = 0 if parent < 0 else depth[parent] + 1
    absolute = conditional.clone()
    parent_index = torch.as_tensor(parents)
    for level in range(1, max(depth, default=0) + 1):
        nodes = torch.as_tensor([i for i, d in enumerate(depth) if d == level])
        absolute[..., nodes] = conditional[..., nodes] * absolute[..., parent_index[nodes]]
    return absolute


def _select(
    boxes: Tensor,
    scores: Tensor,
    image_size: tuple[int, int],
    score_thresh: float,
    nms_thresh: float,
    detections_per_img: int,
) -> dict[str, Tensor]:
    """Boxes [B, 4] with class scores [B, C] as one image's detections: every (box, class) above the
    threshold, clipped to the image, suppressed per class, the best ``detections_per_img`` kept."""
    height, width = image_size
    box_index, labels = torch.nonzero(scores > score_thresh, as_tuple=True)
    kept_scores = scores[box_index, labels]
    kept_boxes = boxes[box_index].clone()
    kept_boxes[:, 0::2] = kept_boxes[:, 0::2].clamp(0, width)
    kept_boxes[:, 1::2] = kept_boxes[:, 1::2].clamp(0, height)
    keep = batched_nms(kept_boxes, kept_scores, labels, nms_thresh)[:detections_per_img]
    return {"boxes": kept_boxes[keep], "scores": kept_scores[keep], "labels": labels[keep]}


# --- anchors -----------------------------------------------------------------------------------


def centred_iou(sizes: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """IoU of every (width, height) in ``sizes`` [N, 2] with every one in ``centroids`` [K, 2], the
    boxes sharing a centre: [N, K]."""
    overlap = np.minimum(sizes[:, None, 0], centroids[None, :, 0]) * np.minimum(
        sizes[:, None, 1], centroids[None, :, 1]
    )
    areas = sizes[:, 0] * sizes[:, 1]
    return overlap / (areas[:, None] + (centroids[:, 0] * centroids[:, 1])[None, :] - overlap)


def kmeans_anchors(
    sizes: np.ndarray, k: int = 5, *, iterations: int = 300, seed: int = 0
) -> tuple[np.ndarray, float]:
    """YOLO9000's dimension clusters (Section 2): k-means over the training boxes' (width, height)
    [N, 2] with d(box, centroid) = 1 − IoU(box, centroid). Gives the k centroids sorted by area and
    the mean IoU of each box with its nearest one (the paper's Table 1 "Avg IOU"). Centroids start at
    ``k`` distinct boxes drawn with ``seed`` and move to their cluster's mean; the paper says neither."""
    sizes = np.asarray(sizes, dtype=np.float64)
    if sizes.ndim != 2 or sizes.shape[1] != 2:
        raise ValueError(f"anchors cluster (width, height) pairs, not an array of shape {sizes.shape}")
    if (sizes <= 0).any():
        raise ValueError("box widths and heights must be positive")
    distinct = np.unique(sizes, axis=0)
    if len(distinct) < k:
        raise ValueError(f"{k} clusters need at least {k} distinct box sizes, got {len(distinct)}")
    rng = np.random.default_rng(seed)
    centroids = distinct[rng.choice(len(distinct), size=k, replace=False)]
    assignment = np.full(len(sizes), -1)
    for _ in range(iterations):
        nearest = np.argmax(centred_iou(sizes, centroids), axis=1)
        if np.array_equal(nearest, assignment):
            break
        assignment = nearest
        for cluster in range(k):
            members = sizes[assignment == cluster]
            if len(members):
                centroids[cluster] = members.mean(axis=0)
    centroids = centroids[np.argsort(centroids[:, 0] * centroids[:, 1])]
    mean_iou = float(centred_iou(sizes, centroids).max(axis=1).mean())
    return centroids, mean_iou


# --- the detectors `papers detect` runs --------------------------------------------------------


class YoloDetector(nn.Module):
    """A YOLO network as a detector with torchvision's contract: ``model(images)`` (each [3, H, W] in
    [0, 1], any size) gives ``[{boxes, scores, labels}]`` in each image's pixels, labels from 1 (0 is
    torchvision's background). Each image is resized to the network's square input, as Darknet's
    detector resizes it (no letterbox; the boxes are scaled back), run, and decoded by ``decode``
    (``decode(outputs, (size, size))`` → per image ``{boxes, scores, labels}``, labels from 0).

    In training mode with ``loss`` (``loss(outputs, targets, (size, size))`` → a dict of losses,
    targets' boxes in the square input's pixels and labels from 0), ``model(images, targets)`` gives
    that dict, the boxes and labels of torchvision's targets moved to the network's frame. Its classes
    do not count a background (``num_classes`` is the objects'), and its weights are the network's
    (``papers detect --weights`` loads a run's ``model.safetensors`` into it).

    ``scales`` (input sizes in pixels) makes training multi-scale as YOLO9000's Section 2 does: every
    ``scale_every`` training batches (the paper's 10) one of them is drawn (torch's global generator)
    and the batch is resized to it; evaluation stays at ``size``."""

    counts_background = False

    def __init__(
        self,
        network: nn.Module,
        decode: Any,
        size: int,
        label_names: Sequence[str] | None = None,
        loss: Any = None,
        scales: Sequence[int] | None = None,
        scale_every: int = 10,
    ):
        super().__init__()
        self.network, self.size = network, size
        self.scales, self.scale_every = (list(scales) if scales else None), scale_every
        self._batches, self._scale = 0, size
        object.__setattr__(self, "decode", decode)
        object.__setattr__(self, "loss", loss)
        if label_names is not None:
            self.label_names = list(label_names)

    def _square(self, image: Tensor, size: int | None = None) -> Tensor:
        side = size or self.size
        return F.interpolate(image[None], size=(side, side), mode="bilinear", align_corners=False)

    def _training_size(self) -> int:
        if self.scales is None:
            return self.size
        if self._batches % self.scale_every == 0:
            self._scale = self.scales[int(torch.randint(len(self.scales), ()))]
        self._batches += 1
        return self._scale

    def forward(self, images: Sequence[Tensor], targets: Sequence[dict[str, Tensor]] | None = None) -> Any:
        if self.training and targets is not None:
            if self.loss is None:
                raise NotImplementedError("this YOLO has no training loss in the registry")
            size = self._training_size()
            moved = []
            for image, target in zip(images, targets, strict=True):
                height, width = image.shape[-2:]
                scale = target["boxes"].new_tensor([width, height, width, height]) / size
                moved.append({"boxes": target["boxes"] / scale, "labels": target["labels"] - 1})
            batch = torch.cat([self._square(image, size) for image in images])
            return self.loss(self.network(batch), moved, (size, size))
        found = []
        for image in images:
            height, width = image.shape[-2:]
            (one,) = self.decode(self.network(self._square(image)), (self.size, self.size))
            scale = one["boxes"].new_tensor([width, height, width, height]) / self.size
            found.append(
                {"boxes": one["boxes"] * scale, "scores": one["scores"], "labels": one["labels"] + 1}
            )
        return found


def graph_value(variant: str, name: str, options: Mapping[str, Any]) -> Any:
    """A graph parameter of ``variant`` as it is built: the build option, else the variant's argument,
    else the graph's default."""
    from papers.registry import get_registry

    if name in options:
        return options[name]
    entry, spec_variant = get_registry().variant(variant)
    if name in spec_variant.args:
        return spec_variant.args[name]
    return entry.spec.graphs[spec_variant.graph or ""].params[name]


def class_names(classes: int) -> list[str] | None:
    """Background, then VOC's 20 or COCO's 80 class names (torchvision's COCO list without its gaps)."""
    from papers.detection_data import BACKGROUND, VOC_CLASSES

    if classes == len(VOC_CLASSES):
        return [BACKGROUND, *VOC_CLASSES]
    if classes == 80:
        from torchvision.models.detection import FasterRCNN_ResNet50_FPN_Weights

        named = FasterRCNN_ResNet50_FPN_Weights.COCO_V1.meta["categories"]
        return [BACKGROUND, *(name for name in named[1:] if name != "N/A")]
    return None


def yolo_detector(
    variant: str, version: int, *, weights: str | None, options: Mapping[str, Any]
) -> YoloDetector:
    """``papers detect``'s YOLO ``version`` (1, 2 or 3) variant, ``weights`` loaded into the network;
    ``score_thresh``, ``nms_thresh`` and ``detections_per_img`` are the decoder's options,
    ``multiscale`` training's (:func:`multiscale_sizes`), the rest the graph's parameters."""
    import functools

    import papers
    from papers.evaluate import fit_weights, load_weights

    decoding = {k: options[k] for k in ("score_thresh", "nms_thresh", "detections_per_img") if k in options}
    scales = multiscale_sizes(options["multiscale"]) if "multiscale" in options else None
    graph = {k: v for k, v in options.items() if k not in decoding and k != "multiscale"}
    network = papers.build_model(variant, **graph)
    if weights is not None:
        fit_weights(network, load_weights(weights), file=weights)
    size = int(graph_value(variant, "image_size", graph))
    classes = int(graph_value(variant, "num_classes", graph))
    loss = None
    if version == 1:
        boxes = int(graph_value(variant, "boxes", graph))
        decode = functools.partial(_decode_v1, boxes=boxes, **decoding)
        loss = functools.partial(_loss_v1, boxes=boxes)
    else:
        anchors = graph_value(variant, "anchors", graph)
        decode = functools.partial(_decode_v2 if version == 2 else _decode_v3, anchors=anchors, **decoding)
        loss = functools.partial(_loss_v2 if version == 2 else _loss_v3, anchors=anchors)
    return YoloDetector(network.eval(), decode, size, class_names(classes), loss, scales)


MULTISCALE_STEP = 32
"""YOLO9000 Section 2: "Since our model downsamples by a factor of 32, we pull from the following
multiples of 32: {320, 352, ..., 608}"."""


def multiscale_sizes(bounds: Any) -> list[int]:
    """The input sizes of multi-scale training from ``-o multiscale=[LOW, HIGH]``: the multiples of 32
    from LOW to HIGH (the paper's [320, 608] at 416)."""
    from papers.errors import PapersError

    if (
        not isinstance(bounds, list | tuple)
        or len(bounds) != 2
        or not all(isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in bounds)
        or any(b % MULTISCALE_STEP for b in bounds)
        or bounds[0] > bounds[1]
    ):
        raise PapersError(
            f"multi-scale training takes [LOW, HIGH], two multiples of {MULTISCALE_STEP} with LOW <= HIGH "
            f"(the paper's [320, 608]), not {bounds!r}",
            field="-o multiscale",
        )
    return list(range(bounds[0], bounds[1] + 1, MULTISCALE_STEP))


def _first(outputs: Any) -> Tensor:
    return outputs[0] if isinstance(outputs, tuple) else outputs


def _decode_v1(outputs: Any, size: tuple[int, int], **options: Any) -> list[dict[str, Tensor]]:
    return decode_yolo_v1(_first(outputs), size, **options)


def _decode_v2(
    outputs: Any, size: tuple[int, int], *, anchors: Any, **options: Any
) -> list[dict[str, Tensor]]:
    return decode_yolo_v2(_first(outputs), anchors, size, **options)


def _decode_v3(
    outputs: Any, size: tuple[int, int], *, anchors: Any, **options: Any
) -> list[dict[str, Tensor]]:
    return decode_yolov3([outputs.scale1, outputs.scale2, outputs.scale3], anchors, size, **options)


def _loss_v1(outputs: Any, targets: Any, size: tuple[int, int], *, boxes: int) -> dict[str, Tensor]:
    return {"loss_yolo": yolo_v1_loss(_first(outputs), targets, size, boxes=boxes)}


def _loss_v2(outputs: Any, targets: Any, size: tuple[int, int], *, anchors: Any) -> dict[str, Tensor]:
    return yolo_v2_loss(_first(outputs), anchors, targets, size)


def _loss_v3(outputs: Any, targets: Any, size: tuple[int, int], *, anchors: Any) -> dict[str, Tensor]:
    return yolov3_loss([outputs.scale1, outputs.scale2, outputs.scale3], anchors, targets, size)
