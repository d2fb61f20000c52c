"""Juefei-Xu, Boddeti and Savvides, "Local Binary Convolutional Neural Networks" (CVPR 2017, arXiv
1608.06049): fixed sparse ternary anchor filters and learned 1×1 combinations.

The paper's plugin: its spec, its op (``lbc_conv2d``), its method (``local_binary_conv``) and its
proxy check. The layer is in :mod:`papers_plugins.compression.lbc_conv` and the method in
:mod:`papers_plugins.compression.local_binary`, imported only when a model is built or the registry
asks for methods or checks, so discovering the plugins imports neither pydantic nor torch.
"""

from __future__ import annotations

from importlib.resources import files

from papers.hookspecs import hookimpl
from papers.ops import Op, input_channels


@hookimpl
def papers_specs() -> list:
    return [files("papers_specs") / "compression" / "lbcnn.yaml"]


@hookimpl
def papers_ops() -> list:
    return [
        Op(
            "lbc_conv2d",
            "papers_plugins.compression.lbc_conv:LBConv2d",
            inferred={"in_channels": input_channels},
            doc="Local binary convolution (Juefei-Xu et al. 2017): `intermediate` fixed sparse ternary "
            "anchor filters of `kernel_size` (a `nonzero` fraction of ±1, drawn from `seed`, a buffer), a "
            "ReLU, and a learned 1×1 convolution to `out_channels`; stride and padding as conv2d's.",
        )
    ]


@hookimpl
def papers_methods() -> list:
    from papers_plugins.compression.local_binary import LOCAL_BINARY_CONV

    return [LOCAL_BINARY_CONV]


@hookimpl
def papers_checks() -> list:
    from papers_plugins.compression.local_binary import proxy_checks

    return proxy_checks()
