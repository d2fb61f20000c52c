"""R-FCN: Object Detection via Region-based Fully Convolutional Networks (NIPS 2016).

Everything about the paper is in its spec: ResNet-101 reused by reference (conv5 à trous, stride 16),
the RPN on conv4, the k²(C + 1) position-sensitive score maps and the 4k² box maps, pooled by the
core's two-stage task layer (``roi_pool: {kind: ps_pool}``, torchvision's ``ps_roi_pool``) and voted
by averaging in a box head graph with no parameters. One op: the voted vector split into class scores
and box deltas (``rfcn_layers``, imported only when a model is built).
"""

from importlib.resources import files

from papers.hookspecs import hookimpl
from papers.ops import Op


@hookimpl
def papers_specs() -> list:
    return [files("papers_specs") / "detection" / "rfcn.yaml"]


@hookimpl
def papers_ops() -> list:
    return [
        Op(
            "scores_and_boxes",
            "papers_plugins.detection.rfcn_layers:scores_and_boxes",
            "function",
            items=("scores", "boxes"),
            doc="R-FCN's voted vector [K, classes + 4] as items `scores` [K, classes] (the class "
            "scores) and `boxes` [K, 4] (the class-agnostic box deltas); `classes` is C + 1. No "
            "parameters.",
        )
    ]
