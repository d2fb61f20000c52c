"""Scalable Object Detection using Deep Neural Networks (MultiBox; Erhan et al., CVPR 2014).

The network is the spec's graph: the classification spec's AlexNet (to fc7) or GoogLeNet (to its
pooled features) reused by reference, and two linear layers giving K boxes as offsets from K priors
and K sigmoid confidences. What is not a layer is in ``multibox_layers``, imported only when used:
the k-means priors, the bipartite matching loss, the decoding and suppression, and
``multibox_detector``, the variant as a detector with torchvision's contract. One op: the 4K box
coordinates as [K, 4].
"""

from __future__ import annotations

from importlib.resources import files
from typing import Any

from papers.hookspecs import hookimpl
from papers.ops import Op


@hookimpl
def papers_specs() -> list:
    return [files("papers_specs") / "detection" / "multibox.yaml"]


@hookimpl
def papers_ops() -> list:
    return [
        Op(
            "multibox_boxes",
            "papers_plugins.detection.multibox_layers:box_corners",
            "function",
            counts_macs=False,
            doc="MultiBox's box layer [N, 4K] as K boxes [N, K, 4] (x1, y1, x2, y2 per box, in that "
            "order). No parameters.",
        )
    ]


def multibox_detector(variant: str = "multibox_alexnet_k100", **options: Any) -> Any:
    """A MultiBox variant as a detector (``multibox_layers.multibox_detector``): ``model(images)`` gives
    torchvision's ``[{boxes, scores, labels}]``, ``model(images, targets)`` the matching loss."""
    from papers_plugins.detection.multibox_layers import multibox_detector as build

    return build(variant, **options)


def detector(variant: str, *, weights: str | None, options: dict[str, Any]) -> Any:
    """``papers detect``'s MultiBox: the variant as a detector, with ``weights`` (the detector's own
    state, priors included, or the network's alone) loaded."""
    from papers.evaluate import fit_weights, load_weights

    model = multibox_detector(variant, **options)
    model.label_names = ("background", "object")  # class-agnostic: every box is label 1
    if weights is not None:
        state = load_weights(weights)
        fit_weights(
            model if any(key.startswith("network.") for key in state) else model.network, state, file=weights
        )
    return model
