"""Multi-Scale Context Aggregation by Dilated Convolutions (Yu & Koltun, ICLR 2016).

The spec holds the paper: the front end (VGG-16 without its last two poolings, dilated) and the
context module, basic and large. One op here, ``context_conv``: the context module's convolution,
an ``nn.Conv2d`` that starts from the paper's identity initialisation (``dilated_conv_layers``,
imported only when a model is built).
"""

from importlib.resources import files

from papers.hookspecs import hookimpl
from papers.ops import Op, input_channels


@hookimpl
def papers_specs() -> list:
    return [files("papers_specs") / "segmentation" / "dilated_conv.yaml"]


@hookimpl
def papers_ops() -> list:
    return [
        Op(
            "context_conv",
            "papers_plugins.segmentation.dilated_conv_layers:IdentityConv2d",
            inferred={"in_channels": input_channels},
            doc="The context module's convolution (nn.Conv2d's state) with Yu & Koltun's identity "
            "initialisation (Section 3): `base` is the module's channel count C, `noise` the initial "
            "noise as a fraction of C / out_channels.",
        )
    ]
