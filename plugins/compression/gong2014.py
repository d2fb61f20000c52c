"""Gong, Liu, Yang and Bourdev, "Compressing Deep Convolutional Networks using Vector Quantization"
(arXiv 1412.6115): k-means, product and residual quantization of the fully connected layers.

The paper's plugin: its spec, its op (``vq_linear``), its method (``vector_quantize``) and its proxy
checks. The layer is in :mod:`papers_plugins.compression.vq_linear` and the method in
:mod:`papers_plugins.compression.vector_quantization`, imported only when a model is built or the
registry asks for methods or checks, so discovering the plugins imports neither pydantic nor torch.
"""

from __future__ import annotations

from importlib.resources import files

from papers.hookspecs import hookimpl
from papers.ops import Op, input_features


@hookimpl
def papers_specs() -> list:
    return [files("papers_specs") / "compression" / "gong2014.yaml"]


@hookimpl
def papers_ops() -> list:
    return [
        Op(
            "vq_linear",
            "papers_plugins.compression.vq_linear:VQLinear",
            inferred={"in_features": input_features},
            doc="A fully connected layer stored as codebooks and indices (Gong et al. 2014): `clusters` "
            "code vectors of `dim` weights in each of `groups` codebooks (1, or one per segment of a "
            "row) and `stages` stages summed; the weight is rebuilt from them on each call.",
        )
    ]


@hookimpl
def papers_methods() -> list:
    from papers_plugins.compression.vector_quantization import VECTOR_QUANTIZE

    return [VECTOR_QUANTIZE]


@hookimpl
def papers_checks() -> list:
    from papers_plugins.compression.vector_quantization import proxy_checks

    return proxy_checks()
