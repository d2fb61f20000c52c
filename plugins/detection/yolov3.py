"""YOLOv3: An Incremental Improvement (arXiv 2018).

The spec holds the paper: Darknet-53 (Table 1) and the three-scale detector on it. Decoding with
logistic class scores is ``yolo_layers.decode_yolov3``.
"""

from importlib.resources import files
from typing import Any

from papers.hookspecs import hookimpl


@hookimpl
def papers_specs() -> list:
    return [files("papers_specs") / "detection" / "yolov3.yaml"]


DETECTOR_VARIANTS = ("yolov3_416", "yolov3_608", "yolov3_320")
"""The variants `papers detect` runs (the others are classifiers)."""


def detector(variant: str, *, weights: str | None, options: dict[str, Any]) -> Any:
    """``papers detect``'s YOLO: the network's raw output decoded by the paper's rule
    (``yolo_layers.yolo_detector``)."""
    from papers_plugins.detection.yolo_layers import yolo_detector

    return yolo_detector(variant, 3, weights=weights, options=options)
