"""YOLO9000: Better, Faster, Stronger (CVPR 2017).

The spec holds the paper: Darknet-19 (Table 6) and YOLOv2's detector on it, with the passthrough from
the 26 × 26 map (Darknet's reorg, a built-in op) and anchor priors. Decoding and the k-means of the
priors are functions of ``yolo_layers`` (``decode_yolo_v2``, ``kmeans_anchors``), and so is the
training loss (``yolo_v2_loss``: Section 2's assignment, IoU objectness and softmax classes, the terms
the paper leaves out taken from YOLO v1 and YOLOv3 as its docstring says), with which ``papers train
yolov2_voc --data ...`` trains; ``-o stages=... -o head_filters=...`` narrow Darknet-19 and the head
for quick runs, and ``-o multiscale=[320,608]`` trains at a size drawn every 10 batches
from the multiples of 32 between them (Section 2, "Multi-Scale Training"; ``YoloDetector``).
"""

from importlib.resources import files
from typing import Any

from papers.hookspecs import hookimpl


@hookimpl
def papers_specs() -> list:
    return [files("papers_specs") / "detection" / "yolo9000.yaml"]


DETECTOR_VARIANTS = ("yolov2_voc", "yolov2_voc_544", "yolov2_coco", "yolov2_voc_darknet")
"""The variants `papers detect` runs (the others are classifiers or need a WordTree)."""


def detector(variant: str, *, weights: str | None, options: dict[str, Any]) -> Any:
    """``papers detect``'s YOLO: the network's raw output decoded by the paper's rule
    (``yolo_layers.yolo_detector``)."""
    from papers_plugins.detection.yolo_layers import yolo_detector

    return yolo_detector(variant, 2, weights=weights, options=options)
