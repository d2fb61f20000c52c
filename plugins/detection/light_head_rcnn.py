"""Light-Head R-CNN: In Defense of Two-Stage Object Detector (arXiv 2017).

Everything about the paper is in its spec: ResNet-101 reused by reference (conv5 à trous), the RPN on
conv4, the large separable convolution to a thin 490-channel map, position-sensitive RoIAlign in the
core's two-stage task layer (``roi_pool: {kind: ps_align}``, torchvision's ``ps_roi_align``), and the
R-CNN subnet of one 2048-d fully connected layer. Every layer is a built-in op; the RPN's two-class
scores reuse Faster R-CNN's ``rpn_object_logit``.
"""

from importlib.resources import files

from papers.hookspecs import hookimpl


@hookimpl
def papers_specs() -> list:
    return [files("papers_specs") / "detection" / "light_head_rcnn.yaml"]
