"""SSD: Single Shot MultiBox Detector (ECCV 2016).

Everything about the paper is in its spec: VGG-16 with pool5 3×3/1 and fc6/fc7 as a dilated 3×3 and
a 1×1 convolution of 1,024 channels, the extra layers, the 3×3 class and box predictors on six maps
(seven for SSD512), and the ``kind: ssd`` task layer (default boxes, matching, hard negative mining,
the loss and post-processing: ``papers.tasks.detection.SingleShotDetector``, torchvision's SSD
machinery). One op: conv4_3's L2 normalisation with a learned scale (``ssd_layers``), imported only
when a model is built.
"""

from importlib.resources import files

from papers.hookspecs import hookimpl
from papers.ops import Op, input_channels


@hookimpl
def papers_specs() -> list:
    return [files("papers_specs") / "detection" / "ssd.yaml"]


@hookimpl
def papers_ops() -> list:
    return [
        Op(
            "ssd_l2norm",
            "papers_plugins.detection.ssd_layers:L2Norm",
            inferred={"channels": input_channels},
            counts_macs=False,
            doc="Every position's channel vector scaled to unit L2 norm, then channel c multiplied by a "
            "learned γ_c (parameter `scale_weight`, initialised to `scale`, 20): SSD's conv4_3 "
            "normalisation (Liu et al. 2016, Section 3.1, after ParseNet); channels inferred.",
        )
    ]
