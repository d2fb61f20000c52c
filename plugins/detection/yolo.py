"""You Only Look Once: Unified, Real-Time Object Detection (CVPR 2016).

The spec holds the paper: the 24-convolution network of Figure 3 and Fast YOLO's nine, giving the
S × S × (5B + C) grid. One op reshapes the last fully connected layer into that grid; the loss and the
decoding are functions of ``yolo_layers`` (imported only when a model is built or they are called).
"""

from importlib.resources import files
from typing import Any

from papers.hookspecs import hookimpl
from papers.ops import Op


@hookimpl
def papers_specs() -> list:
    return [files("papers_specs") / "detection" / "yolo.yaml"]


@hookimpl
def papers_ops() -> list:
    return [
        Op(
            "yolo_v1_grid",
            "papers_plugins.detection.yolo_layers:yolo_v1_grid",
            "function",
            doc="YOLO v1's output [N, S·S·(5B + C)] as its grid [N, S, S, 5B + C] (`grid` is S, "
            "`boxes` B): per cell B × (x, y, √w, √h, confidence), then C class probabilities; "
            "`layout: darknet` reads them where Darknet's detection layer does. No parameters.",
            counts_macs=False,
        )
    ]


DETECTOR_VARIANTS = ("yolo_v1", "fast_yolo")
"""The variants `papers detect` runs (the others are classifiers)."""


def detector(variant: str, *, weights: str | None, options: dict[str, Any]) -> Any:
    """``papers detect``'s YOLO: the network's raw output decoded by the paper's rule
    (``yolo_layers.yolo_detector``)."""
    from papers_plugins.detection.yolo_layers import yolo_detector

    return yolo_detector(variant, 1, weights=weights, options=options)
