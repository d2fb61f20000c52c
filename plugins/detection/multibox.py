"""Scalable Object Detection using Deep Neural Networks (MultiBox; Erhan et al., CVPR 2014).

The network is the spec's graph: the classification spec's AlexNet (to fc7) or GoogLeNet (to its
pooled features) reused by reference, and two linear layers giving K boxes as offsets from K priors
and K sigmoid confidences. What is not a layer is in ``multibox_layers``, imported only when used:
the k-means priors, the bipartite matching loss, the decoding and suppression, and
``multibox_detector``, the variant as a detector with torchvision's contract. One op: the 4K box
coordinates as [K, 4]. ``papers train multibox_... --data ...`` trains it class-agnostic (every object
the one class "object", scored by that class's VOC07 mAP) with priors clustered from the train split's
boxes (``training_options``); ``papers eval`` scores it so.
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


def training_options(variant: str, *, data: str, options: dict[str, Any]) -> dict[str, Any]:
    """What ``papers train`` adds to a MultiBox run's build options from its data: the K priors, the
    k-means centroids of the train split's boxes (Section 3; ``multibox_layers.kmeans_priors``),
    unless ``-o priors=...`` gives them. They are recorded with the run, so ``papers eval`` and
    ``papers detect`` with its weights build the same detector. The run trains and is scored as
    class-agnostic, every object the one class "object" (``papers.detect.class_agnostic``)."""
    from papers.errors import PapersError
    from papers.registry import get_registry
    from papers_plugins.detection.multibox_layers import kmeans_priors, training_boxes

    if "priors" in options:
        return {}
    entry, spec_variant = get_registry().variant(variant)
    k = options.get("k", spec_variant.args.get("k", entry.spec.graphs[spec_variant.graph or ""].params["k"]))
    boxes = training_boxes(data, "train")
    if len(boxes) < k:
        raise PapersError(
            f"{k} k-means priors need at least {k} training boxes; the train split has {len(boxes)} "
            "(a smaller -o k=, or -o priors=)",
            file=data,
            field="k",
        )
    return {"priors": [[round(float(v), 5) for v in row] for row in kmeans_priors(boxes, int(k))]}


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
