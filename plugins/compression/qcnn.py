"""Wu, Leng, Wang, Hu and Cheng, "Quantized Convolutional Neural Networks for Mobile Devices" (CVPR
2016, arXiv 1512.06473): product quantization of convolution and fully connected weights, fitted to the
layers' responses, layer by layer with error correction.

The paper's plugin: its spec, its ops (``qcnn_linear``, ``qcnn_conv2d``), its method (``qcnn_quantize``)
and its proxy check. The layers are in :mod:`papers_plugins.compression.qcnn_layers` and the method in
:mod:`papers_plugins.compression.qcnn_method`, imported only when a model is built or the registry asks
for methods or checks, so discovering the plugins imports neither pydantic nor torch.
"""

from __future__ import annotations

from importlib.resources import files

from papers.hookspecs import hookimpl
from papers.ops import Op, input_channels, input_features


@hookimpl
def papers_specs() -> list:
    return [files("papers_specs") / "compression" / "qcnn.yaml"]


@hookimpl
def papers_ops() -> list:
    return [
        Op(
            "qcnn_linear",
            "papers_plugins.compression.qcnn_layers:QLinear",
            inferred={"in_features": input_features},
            doc="A fully connected layer as Q-CNN's sub-codebooks (`codewords` vectors per subspace of "
            "`dim` inputs) and assignments, run by lookup tables (Wu et al. 2016).",
        ),
        Op(
            "qcnn_conv2d",
            "papers_plugins.compression.qcnn_layers:QConv2d",
            inferred={"in_channels": input_channels},
            doc="A convolution as Q-CNN's sub-codebooks over subspaces of `dim` input channels, shared by "
            "the kernel positions, and per-position assignments, run by lookup tables (Wu et al. 2016).",
        ),
    ]


@hookimpl
def papers_methods() -> list:
    from papers_plugins.compression.qcnn_method import QCNN_QUANTIZE

    return [QCNN_QUANTIZE]


@hookimpl
def papers_checks() -> list:
    from papers_plugins.compression.qcnn_method import proxy_checks

    return proxy_checks()
