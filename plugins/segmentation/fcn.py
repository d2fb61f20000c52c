"""FCN: Fully Convolutional Networks for Semantic Segmentation (CVPR 2015).

The spec holds the paper. One op here: ``fcn_score``, a convolution that scores classes, so that the
spec's init rules can zero-initialise the scoring layers (score_fr, score_pool4, score_pool3) as the
paper does, apart from fc6 and fc7, which are convolutions too.
"""

from importlib.resources import files

from papers.hookspecs import hookimpl


@hookimpl
def papers_specs() -> list:
    return [files("papers_specs") / "segmentation" / "fcn.yaml"]


@hookimpl
def papers_ops() -> list:
    from papers.ops import Op, input_channels

    return [
        Op(
            "fcn_score",
            "torch.nn:Conv2d",
            inferred={"in_channels": input_channels},
            doc="FCN's class scoring convolution (nn.Conv2d), a separate op so that init rules "
            "can zero-initialise it (Section 4.2).",
        )
    ]
