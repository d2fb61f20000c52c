"""SegNet: A Deep Convolutional Encoder-Decoder Architecture for Image Segmentation (TPAMI 2017).

The spec holds the paper. One op here, ``max_unpool_as``: the decoder's max unpooling at the
encoder's ``maxpool2d`` indices, back to the size of the map the encoder pooled (``segnet_layers``,
imported only when a model is built), so that inputs whose side is not a multiple of 2^stages work.
"""

from importlib.resources import files

from papers.hookspecs import hookimpl
from papers.ops import Op


@hookimpl
def papers_specs() -> list:
    return [files("papers_specs") / "segmentation" / "segnet.yaml"]


@hookimpl
def papers_ops() -> list:
    return [
        Op(
            "max_unpool_as",
            "papers_plugins.segmentation.segnet_layers:max_unpool_as",
            "function",
            arity=3,
            counts_macs=False,
            doc="SegNet's upsampling: the first input max-unpooled at the second's pooling indices "
            "(`kernel_size`, `stride` as the pooling's) to the spatial size of the third, the map "
            "that was pooled. No parameters.",
        )
    ]
