"""Detection metrics: PASCAL VOC's mAP at IoU 0.5 and COCO's AP through pycocotools.

Names, as results files and specs write them: ``voc07_map`` (VOC 2007's 11-point interpolated AP),
``voc_map`` (VOC 2010 onwards: the area under the interpolated precision-recall curve), ``coco_ap``
(AP averaged over IoU 0.50:0.05:0.95), ``ap50``, ``ap75``, ``ap_s``, ``ap_m``, ``ap_l`` (COCO's AP of
small, medium and large objects). Values are fractions in [0, 1], as the devkits give them.

The VOC metric is written here, a small function following VOC's devkit (``VOCevaldet.m``, and
``voc_eval.py`` of py-faster-rcnn that ports it), since no maintained library computes it:
per class, detections of every image sorted by score; each is matched to the ground-truth box of
its image with the highest IoU; at IoU ≥ 0.5 it is a true positive if that box is not yet matched
and not ``difficult``, ignored (neither true nor false) if the box is ``difficult``, else a false
positive. ``difficult`` boxes do not count among the positives. The mean is over the classes that
have a positive. Boxes are (x1, y1, x2, y2) in continuous pixels (see :mod:`papers.detection_data`
for VOC's +1). COCO's metrics are pycocotools' ``COCOeval``, never a rewrite; on VOC-style data the
``difficult`` boxes become crowd regions, which COCO's evaluation ignores likewise.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

VOC_METRICS = ("voc07_map", "voc_map")
COCO_METRICS = ("coco_ap", "ap50", "ap75", "ap_s", "ap_m", "ap_l")
DETECTION_METRICS = VOC_METRICS + COCO_METRICS
"""Every detection metric's name, as results files and specs write them."""
_COCO_AREAS = {"ap_s": (0.0, 32.0**2), "ap_m": (32.0**2, 96.0**2), "ap_l": (96.0**2, 1e10)}


def voc_ap(recall: Sequence[float], precision: Sequence[float], *, use_07_metric: bool) -> float:
    """VOC's average precision of one precision-recall curve (points in detection order).

    VOC 2007: the mean over recall 0, 0.1, ..., 1 of the highest precision at that recall or above.
    VOC 2010+: the area under the curve made monotone (precision at each recall the highest at it
    or beyond).
    """
    import numpy as np

    rec = np.asarray(recall, dtype=np.float64)
    prec = np.asarray(precision, dtype=np.float64)
    if use_07_metric:
        total = 0.0
        for threshold in np.arange(11) / 10.0:  # the devkit's 0:0.1:1, each the double nearest
            above = prec[rec >= threshold]
            total += float(above.max()) if above.size else 0.0
        return total / 11.0
    rec = np.concatenate(([0.0], rec, [1.0]))
    prec = np.concatenate(([0.0], prec, [0.0]))
    prec = np.maximum.accumulate(prec[::-1])[::-1]
    steps = np.flatnonzero(rec[1:] != rec[:-1])
    return float(np.sum((rec[steps + 1] - rec[steps]) * prec[steps + 1]))


def voc_map(
    detections: Sequence[Mapping[str, Any]],
    targets: Sequence[Mapping[str, Any]],
    *,
    use_07_metric: bool,
    iou_threshold: float = 0.5,
) -> tuple[float, dict[int, float]]:
    """VOC's mean AP over classes and each class's AP (by label) of per-image ``detections``
    (``boxes``, ``scores``, ``labels``) against ``targets`` (``boxes``, ``labels``, optional
    ``difficult``)."""
    import numpy as np

    if len(detections) != len(targets):
        raise ValueError(f"{len(detections)} images of detections, {len(targets)} of targets")
    truth = [_arrays(t, ("boxes", "labels")) | {"difficult": _difficult(t)} for t in targets]
    found = [_arrays(d, ("boxes", "scores", "labels")) for d in detections]
    labels = sorted({int(label) for t in truth for label in t["labels"][~t["difficult"]]})
    per_class = {}
    for label in labels:
        per_class[label] = _class_ap(found, truth, label, use_07_metric, iou_threshold)
    mean = float(np.mean(list(per_class.values()))) if per_class else 0.0
    return mean, per_class


def _class_ap(
    found: list[dict[str, np.ndarray]],
    truth: list[dict[str, np.ndarray]],
    label: int,
    use_07_metric: bool,
    iou_threshold: float,
) -> float:
    import numpy as np

    gt_boxes = [t["boxes"][t["labels"] == label] for t in truth]
    gt_difficult = [t["difficult"][t["labels"] == label] for t in truth]
    positives = int(sum((~d).sum() for d in gt_difficult))
    images, scores, boxes = [], [], []
    for index, d in enumerate(found):
        mine = d["labels"] == label
        images.extend([index] * int(mine.sum()))
        scores.append(d["scores"][mine])
        boxes.append(d["boxes"][mine])
    if not images:
        return 0.0
    all_scores = np.concatenate(scores)
    all_boxes = np.concatenate(boxes).reshape(-1, 4)
    order = np.argsort(-all_scores, kind="stable")
    taken = [np.zeros(len(b), dtype=bool) for b in gt_boxes]
    true_positive = np.zeros(len(order))
    false_positive = np.zeros(len(order))
    for rank, which in enumerate(order):
        image = images[which]
        candidates = gt_boxes[image]
        if len(candidates) == 0:
            false_positive[rank] = 1
            continue
        overlaps = _iou(all_boxes[which], candidates)
        best = int(overlaps.argmax())
        if overlaps[best] < iou_threshold:
            false_positive[rank] = 1
        elif gt_difficult[image][best]:
            continue  # a detection of a difficult object counts for nothing
        elif not taken[image][best]:
            true_positive[rank] = 1
            taken[image][best] = True
        else:
            false_positive[rank] = 1
    tp, fp = np.cumsum(true_positive), np.cumsum(false_positive)
    recall = tp / max(positives, 1)
    precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return voc_ap(recall, precision, use_07_metric=use_07_metric)


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    import numpy as np

    width = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    height = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = width * height
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, np.finfo(np.float64).eps)


def coco_metrics(
    detections: Sequence[Mapping[str, Any]],
    targets: Sequence[Mapping[str, Any]] | None = None,
    *,
    coco: Any = None,
    image_ids: Sequence[int] | None = None,
    classes: Sequence[str] | None = None,
) -> dict[str, float | None]:
    """COCO's AP, AP50, AP75 and AP of small, medium and large objects, by pycocotools' ``COCOeval``.

    The ground truth is ``coco`` (pycocotools' object of a COCO file, with ``image_ids`` the id of
    each image of ``detections``) or built from ``targets`` (box areas as areas, ``difficult`` boxes
    as crowd regions). A metric with no ground truth in its range (no small object) is ``None``.
    """
    from pycocotools.cocoeval import COCOeval

    if coco is None:
        if targets is None:
            raise ValueError("coco_metrics takes the targets or a pycocotools COCO object")
        coco = _ground_truth(targets, classes)
        image_ids = list(range(len(targets)))
    elif image_ids is None:
        raise ValueError("detections against a COCO file need each image's id")
    assert image_ids is not None
    results = []
    for image_id, d in zip(image_ids, detections, strict=True):
        arrays = _arrays(d, ("boxes", "scores", "labels"))
        for box, score, label in zip(arrays["boxes"], arrays["scores"], arrays["labels"], strict=True):
            x1, y1, x2, y2 = (float(v) for v in box)
            results.append(
                {
                    "image_id": int(image_id),
                    "category_id": int(label),
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": float(score),
                }
            )
    known = set(coco.getCatIds())
    results = [r for r in results if r["category_id"] in known]
    if not results:  # pycocotools cannot load no detections: AP is 0 wherever there is ground truth
        return _no_detections(coco, image_ids)
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress and summary
        found = coco.loadRes(results)
        evaluation = COCOeval(coco, found, "bbox")
        evaluation.params.imgIds = sorted(set(int(i) for i in image_ids))
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return {
        name: (float(value) if value >= 0 else None)
        for name, value in zip(COCO_METRICS, evaluation.stats[:6], strict=True)
    }


def _ground_truth(targets: Sequence[Mapping[str, Any]], classes: Sequence[str] | None) -> Any:
    from pycocotools.coco import COCO

    images, annotations = [], []
    labels: set[int] = set()
    for index, target in enumerate(targets):
        arrays = _arrays(target, ("boxes", "labels"))
        images.append({"id": index})
        for box, label, hard in zip(arrays["boxes"], arrays["labels"], _difficult(target), strict=True):
            x1, y1, x2, y2 = (float(v) for v in box)
            labels.add(int(label))
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": index,
                    "category_id": int(label),
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": int(bool(hard)),
                }
            )
    numbers = range(1, len(classes)) if classes is not None else sorted(labels)
    categories = [
        {"id": int(n), "name": classes[n] if classes is not None else str(n)}
        for n in numbers
        if classes is None or classes[n] != "N/A"
    ]
    coco = COCO()
    coco.dataset = {"images": images, "annotations": annotations, "categories": categories}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _no_detections(coco: Any, image_ids: Sequence[int]) -> dict[str, float | None]:
    wanted = set(int(i) for i in image_ids)
    areas = [
        float(a["area"])
        for a in coco.dataset["annotations"]
        if a["image_id"] in wanted and not a.get("iscrowd", 0)
    ]
    measured: dict[str, float | None] = {name: 0.0 if areas else None for name in ("coco_ap", "ap50", "ap75")}
    for name, (low, high) in _COCO_AREAS.items():
        measured[name] = 0.0 if any(low <= area < high for area in areas) else None
    return measured


def _arrays(data: Mapping[str, Any], keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    import numpy as np

    out = {}
    for key in keys:
        value = data[key]
        value = value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)
        out[key] = value.reshape(-1, 4).astype(np.float64) if key == "boxes" else value.reshape(-1)
    return out


def _difficult(target: Mapping[str, Any]) -> np.ndarray:
    import numpy as np

    count = len(_arrays(target, ("labels",))["labels"])
    if "difficult" not in target:
        return np.zeros(count, dtype=bool)
    value = target["difficult"]
    value = value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)
    return value.reshape(-1).astype(bool)
