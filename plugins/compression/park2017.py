"""Park, Li, Wen, Tang, Li, Chen and Dubey, "Faster CNNs with Direct Sparse Convolutions and Guided
Pruning" (ICLR 2017, arXiv 1608.01409): a direct sparse convolution, its measured speed, and pruning
guided by it.

The paper's plugin: its spec, its op (``sparse_conv2d``), its method (``guided_prune``) and its proxy
check. The kernel is in :mod:`papers_plugins.compression.sparse_conv` and the method in
:mod:`papers_plugins.compression.guided_pruning`, imported only when a model is built or the registry
asks for methods or checks, so discovering the plugins imports neither pydantic nor torch.
"""

from __future__ import annotations

from importlib.resources import files

from papers.hookspecs import hookimpl
from papers.ops import Op, input_channels


@hookimpl
def papers_specs() -> list:
    return [files("papers_specs") / "compression" / "park2017.yaml"]


@hookimpl
def papers_ops() -> list:
    return [
        Op(
            "sparse_conv2d",
            "papers_plugins.compression.sparse_conv:SparseConv2d",
            inferred={"in_channels": input_channels},
            doc="conv2d's arguments and weights, run by the direct sparse convolution (CSR weights × "
            "the input's shifted slices, no im2col) where that measured faster here on its weights and "
            "input, else by F.conv2d (Park et al. 2017, Section 2); `kernel`: auto, sparse or dense.",
        )
    ]


@hookimpl
def papers_methods() -> list:
    from papers_plugins.compression.guided_pruning import GUIDED_PRUNE

    return [GUIDED_PRUNE]


@hookimpl
def papers_checks() -> list:
    from papers_plugins.compression.guided_pruning import proxy_checks

    return proxy_checks()
