"""Rich feature hierarchies for accurate object detection and semantic segmentation (R-CNN, CVPR 2014).

The spec holds the network: AlexNet or VGG-16 reused by reference up to fc7, with pool5 as a second
output. What is not a layer is in ``rcnn_detector``, imported only when used: the warping of each
proposal with 16 pixels of context, the per-class linear SVMs and box regressors fitted on the
network's features, and the detector that runs them on an image's proposals
(:mod:`papers.proposals`: selective search, or a proposals file).
"""

from __future__ import annotations

from importlib.resources import files
from typing import Any

from papers.hookspecs import hookimpl


@hookimpl
def papers_specs() -> list:
    return [files("papers_specs") / "detection" / "rcnn.yaml"]


def proposal_detector(variant: str, *, weights: str | None, options: dict[str, Any]) -> Any:
    """``papers detect``'s R-CNN: the variant's network with the SVMs and regressors saved beside
    ``weights`` (see ``rcnn_detector.load_rcnn``)."""
    from papers_plugins.detection.rcnn_detector import load_rcnn

    return load_rcnn(variant, weights, **options)
