"""Fast R-CNN (ICCV 2015).

The network is the spec's graph (VGG-16 to conv5_3 reused by reference, RoI pooling, fc6/fc7, the
two sibling outputs, fc6/fc7 optionally truncated by SVD). What is not a layer is in
``fast_rcnn_detector``, imported only when used: the multi-task loss, the mini-batch RoI sampling,
the SVD of trained weights, and the detector that takes an image's proposals and gives boxes.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Any

from papers.hookspecs import hookimpl


@hookimpl
def papers_specs() -> list:
    return [files("papers_specs") / "detection" / "fast_rcnn.yaml"]


def proposal_detector(variant: str, *, weights: str | None, options: dict[str, Any]) -> Any:
    """``papers detect``'s Fast R-CNN: the variant as a detector on proposals (selective search's or a
    file's, :mod:`papers.proposals`), with ``weights`` loaded into its network."""
    from papers.evaluate import fit_weights, load_weights
    from papers_plugins.detection.fast_rcnn_detector import fast_rcnn_detector

    detector = fast_rcnn_detector(variant, **options)
    if weights is not None:
        fit_weights(detector.network, load_weights(weights), file=weights)
    return detector
