"""Lin, Xing, Zhao, Zhang, Srivastava, Tu and Gupta, "Binarized Convolutional Neural Networks with
Separable Filters for Efficient Hardware Acceleration" (CVPR 2017 workshops, arXiv 1707.04693).

The paper's plugin: its spec, its op (``sf_binary_conv2d``), its method (``separable_binarize``) and
its proxy check, in :mod:`papers_plugins.compression.separable_binary` (the layer in
``separable_binary_layers``), imported only when a model is built or the registry asks for methods or
checks.
"""

from __future__ import annotations

from importlib.resources import files

from papers.hookspecs import hookimpl
from papers.ops import Op, input_channels


@hookimpl
def papers_specs() -> list:
    return [files("papers_specs") / "compression" / "separable_filters.yaml"]


@hookimpl
def papers_ops() -> list:
    return [
        Op(
            "sf_binary_conv2d",
            "papers_plugins.compression.separable_binary_layers:SeparableBinaryConv2d",
            inferred={"in_channels": input_channels},
            doc="conv2d's arguments and latent weights, run with each k × k filter replaced by the signs "
            "of the rank-one SVD factors of its sign pattern (2k bits), times the output channel's mean "
            "magnitude; straight-through gradients (Lin et al. 2017).",
        )
    ]


@hookimpl
def papers_methods() -> list:
    from papers_plugins.compression.separable_binary import SEPARABLE_BINARIZE

    return [SEPARABLE_BINARIZE]


@hookimpl
def papers_checks() -> list:
    from papers_plugins.compression.separable_binary import proxy_checks

    return proxy_checks()
