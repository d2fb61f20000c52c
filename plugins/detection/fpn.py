"""Feature Pyramid Networks for Object Detection (CVPR 2017).

Everything about the paper is in its spec: the pyramid on ResNet-50 (reused by reference), the RPN
head shared over P2–P6 and the Fast R-CNN box head; the two-stage task layer is the core's
(``papers.tasks.region``, torchvision's machinery).
"""

from importlib.resources import files

from papers.hookspecs import hookimpl


@hookimpl
def papers_specs() -> list:
    return [files("papers_specs") / "detection" / "fpn.yaml"]
