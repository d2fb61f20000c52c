"""Fast R-CNN (ICCV 2015).

The network is the spec's graph (VGG-16 to conv5_3 reused by reference, RoI pooling, fc6/fc7, the
two sibling outputs, fc6/fc7 optionally truncated by SVD). What is not a layer is in
``fast_rcnn_detector``, imported only when used: the multi-task loss, the mini-batch RoI sampling,
the SVD of trained weights, and the detector that takes an image's proposals and gives boxes.
"""

from importlib.resources import files

from papers.hookspecs import hookimpl


@hookimpl
def papers_specs() -> list:
    return [files("papers_specs") / "detection" / "fast_rcnn.yaml"]
