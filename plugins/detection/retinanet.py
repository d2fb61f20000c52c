"""Focal Loss for Dense Object Detection (RetinaNet, ICCV 2017).

Everything about the paper is in its spec: ResNet reused by reference, the pyramid P3–P7, the class
and box subnets shared across levels, and the dense task layer's anchors, matching, focal loss
(``torchvision.ops.sigmoid_focal_loss``) and inference (``papers.tasks.detection``). The two ops are
torch's ``Conv2d`` under names of their own, so the spec's init rules can give the subnets the paper's
N(0, 0.01) weights and the class subnet's last layer its prior bias without touching the backbone's
convolutions.
"""

from importlib.resources import files

from papers.hookspecs import hookimpl
from papers.ops import Op, input_channels


@hookimpl
def papers_specs() -> list:
    return [files("papers_specs") / "detection" / "retinanet.yaml"]


@hookimpl
def papers_ops() -> list:
    return [
        Op(
            "retinanet_conv2d",
            "torch.nn:Conv2d",
            inferred={"in_channels": input_channels},
            doc="A convolution of RetinaNet's class and box subnets (torch's Conv2d; in_channels "
            "inferred), a name of its own for the init rule N(0, 0.01), bias 0 (Lin et al. 2017, "
            "Section 4.1).",
        ),
        Op(
            "retinanet_prior_conv2d",
            "torch.nn:Conv2d",
            inferred={"in_channels": input_channels},
            doc="The class subnet's last convolution (torch's Conv2d; in_channels inferred), a name of "
            "its own for the init rule bias = −log((1 − π)/π), π = 0.01 (Lin et al. 2017, Section 4.1).",
        ),
    ]
