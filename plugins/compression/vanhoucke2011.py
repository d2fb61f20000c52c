"""Vanhoucke, Senior and Mao, "Improving the speed of neural networks on CPUs" (NIPS 2011 Deep Learning
workshop): 8-bit linear quantization of weights and activations, run by int8 kernels.

The paper's plugin: its spec, its ops (``int8_linear``, ``int8_conv2d``), its method
(``int8_quantize``) and its proxy check. The layers are in :mod:`papers_plugins.compression.int8_kernels`
and the method in :mod:`papers_plugins.compression.int8`, imported only when a model is built or the
registry asks for methods or checks, so discovering the plugins imports neither pydantic nor torch.
"""

from __future__ import annotations

from importlib.resources import files

from papers.hookspecs import hookimpl
from papers.ops import Op, input_channels, input_features

_INT8 = (
    "`granularity` (layer: one scale, the largest magnitude, as the paper; channel: one per output "
    "channel), `bits` (2-8: signed codes in [-(2^(bits-1)-1), 2^(bits-1)-1]) and `reduce_range` (7-bit "
    "activations); in training, on the meta device or off the CPU it runs in float."
)


@hookimpl
def papers_specs() -> list:
    return [files("papers_specs") / "compression" / "vanhoucke2011.yaml"]


@hookimpl
def papers_ops() -> list:
    return [
        Op(
            "int8_linear",
            "papers_plugins.compression.int8_kernels:Int8Linear",
            inferred={"in_features": input_features},
            doc="linear's arguments and weights, run by torch's int8 kernel: weights as int8 codes with "
            "scales, activations quantized to unsigned 8 bits on each call, 32-bit accumulation "
            f"(Vanhoucke et al. 2011, Section 4); {_INT8}",
        ),
        Op(
            "int8_conv2d",
            "papers_plugins.compression.int8_kernels:Int8Conv2d",
            inferred={"in_channels": input_channels},
            doc="conv2d's arguments and weights, lowered by im2col onto int8_linear's kernel (one group, "
            f"zero padding given as numbers; otherwise float); {_INT8}",
        ),
    ]


@hookimpl
def papers_methods() -> list:
    from papers_plugins.compression.int8 import INT8_QUANTIZE

    return [INT8_QUANTIZE]


@hookimpl
def papers_checks() -> list:
    from papers_plugins.compression.int8 import proxy_checks

    return proxy_checks()
