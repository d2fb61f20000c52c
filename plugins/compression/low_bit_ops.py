"""The low-bit layers as ops, for any paper's rewrite: binary convolution and linear layers (the
bit-packed XNOR-popcount kernel, :mod:`papers_plugins.compression.binary`), k-bit ones and an
activation quantizer (:mod:`papers_plugins.compression.quantizers`), and shift-based batch
normalisation. XNOR-Net, the binarized and quantized networks and DoReFa-Net use them; no torch is
imported until a model is built.
"""

from __future__ import annotations

from papers.hookspecs import hookimpl
from papers.ops import Op, input_channels, input_features

_BINARY = "papers_plugins.compression.binary"
_QUANTIZERS = "papers_plugins.compression.quantizers"


@hookimpl
def papers_ops() -> list:
    return [
        Op(
            "binary_conv2d",
            f"{_BINARY}:BinaryConv2d",
            inferred={"in_channels": input_channels},
            doc="conv2d's arguments and weights, binarized: α·sign(W) per filter (`weight_scale`), and with "
            "`inputs: binary` sign(I) times K (`input_scale`), run at inference by the bit-packed "
            "XNOR-popcount kernel (`kernel: packed`) or F.conv2d on the ±1 tensors (`float`); training "
            "uses the straight-through estimator (Rastegari et al. 2016; Courbariaux, Hubara et al. 2016).",
        ),
        Op(
            "binary_linear",
            f"{_BINARY}:BinaryLinear",
            inferred={"in_features": input_features},
            doc="linear's arguments and weights, binarized as binary_conv2d's.",
        ),
        Op(
            "quant_conv2d",
            f"{_QUANTIZERS}:QuantConv2d",
            inferred={"in_channels": input_channels},
            doc="conv2d with `weight_bits`-bit weights, `input_bits`-bit inputs and `gradient_bits`-bit "
            "output gradients (32: float), by DoReFa-Net's or QNN's `quantizer` (dorefa, linear).",
        ),
        Op(
            "quant_linear",
            f"{_QUANTIZERS}:QuantLinear",
            inferred={"in_features": input_features},
            doc="linear with k-bit weights, inputs and gradients, as quant_conv2d.",
        ),
        Op(
            "quant_activation",
            f"{_QUANTIZERS}:QuantActivation",
            doc="An activation at `bits` bits: DoReFa's (clipped to [0, 1]) or QNN's (hard tanh).",
            counts_macs=False,
        ),
        Op(
            "shift_batchnorm",
            f"{_QUANTIZERS}:ShiftBatchNorm",
            inferred={"num_features": input_channels},
            doc="Shift-based batch normalisation (Courbariaux, Hubara et al. 2016, Algorithm 3): the "
            "variance and the scales by powers of two.",
            counts_macs=False,
        ),
    ]
