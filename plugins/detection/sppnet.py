"""Spatial Pyramid Pooling in Deep Convolutional Networks for Visual Recognition (ECCV 2014, TPAMI 2015).

The spec holds the paper: ZF-5 (Faster R-CNN's variant, reused by reference) with the pyramid pooling
layer, for classification at any input size and for detection from one conv5 map. Two ops, the
pyramid on an image and on its windows (``sppnet_layers``), imported only when a model is built.
"""

from importlib.resources import files
from typing import Any

from papers.hookspecs import hookimpl
from papers.ops import Op

_LAYERS = "papers_plugins.detection.sppnet_layers"


@hookimpl
def papers_specs() -> list:
    return [files("papers_specs") / "detection" / "sppnet.yaml"]


@hookimpl
def papers_ops() -> list:
    return [
        Op(
            "spatial_pyramid_pool",
            f"{_LAYERS}:SpatialPyramidPool",
            doc="Spatial pyramid pooling (He et al. 2014, Section 2.3): [N, C, H, W] max-pooled into n × n "
            "bins per level of `levels` (default 6, 3, 2, 1), concatenated to [N, C · Σ n²] at any H, W. "
            "No parameters.",
            counts_macs=False,
        ),
        Op(
            "spatial_pyramid_roi_pool",
            f"{_LAYERS}:SpatialPyramidRoIPool",
            doc="Spatial pyramid pooling of windows (He et al. 2014, Section 4 and Appendix): features "
            "[N, C, H, W] and windows [K, 5] (image index, x1, y1, x2, y2 in input pixels), each window "
            "projected onto the map of total `stride` and pooled per level with torchvision's roi_pool, "
            "giving [K, C · Σ n²]. No parameters.",
            arity=2,
            counts_macs=False,
        ),
    ]


PROPOSAL_VARIANTS = ("sppnet_zf5_detector",)
"""The variant ``papers detect`` runs on proposals (``sppnet_zf5`` is the classifier)."""
SINGLE_SCALE = 688
"""Section 4.1: single-scale detection resizes the image so that min(w, h) = 688."""


def proposal_detector(variant: str, *, weights: str | None, options: dict[str, Any]) -> Any:
    """``papers detect``'s SPP-net: the detection variant on proposals (selective search's or a file's,
    :mod:`papers.proposals`), its windows pooled from one conv5 map of the image at the paper's single
    scale and scored by the fine-tuned fc8 (the paper's SVMs on fc7 are R-CNN's, in ``rcnn``); the
    windows are the boxes, suppressed per class (NMS at 0.3)."""
    import papers
    from papers.evaluate import fit_weights, load_weights
    from papers_plugins.detection.fast_rcnn_detector import FastRCNNDetector
    from papers_plugins.detection.sppnet_layers import WindowScores

    settings = {"min_size": SINGLE_SCALE, "max_size": 2000} | {
        k: v for k, v in options.items() if k.startswith(("min_", "max_", "box_"))
    }
    graph = {k: v for k, v in options.items() if k not in settings}
    network = papers.build_model(variant, **graph)
    if weights is not None:
        fit_weights(network, load_weights(weights), file=weights)
    return FastRCNNDetector(WindowScores(network), **settings)
