"""Faster R-CNN: Towards Real-Time Object Detection with Region Proposal Networks (NIPS 2015).

Everything about the paper is in its spec: the RPN on VGG-16's conv5_3 (reused by reference) and on
ZF-5 (owned here), the Fast R-CNN heads, and the training as data. The task layer is the core's
(``papers.tasks.region``, torchvision's machinery). One op: the RPN's 2k two-class scores as k logits
(``faster_rcnn_layers``), imported only when a model is built.
"""

from importlib.resources import files

from papers.hookspecs import hookimpl
from papers.ops import Op

_LAYERS = "papers_plugins.detection.faster_rcnn_layers"


@hookimpl
def papers_specs() -> list:
    return [files("papers_specs") / "detection" / "faster_rcnn.yaml"]


@hookimpl
def papers_ops() -> list:
    return [
        Op(
            "rpn_object_logit",
            f"{_LAYERS}:ObjectLogit",
            doc="The RPN's 2k scores (k background, then k object) as k logits o − b: "
            "softmax(b, o)[o] = sigmoid(o − b) (Ren et al. 2015, Section 3.1). No parameters.",
        )
    ]
