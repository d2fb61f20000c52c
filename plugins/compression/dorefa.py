"""Zhou, Wu, Ni, Zhou, Wen and Zou, "DoReFa-Net: Training Low Bitwidth Convolutional Neural Networks
with Low Bitwidth Gradients" (arXiv 1606.06160).

The paper's plugin: its spec, its method (``dorefa_quantize``, in
:mod:`papers_plugins.compression.low_bit`) and its proxy check; the quantized layers are ops of
:mod:`papers_plugins.compression.low_bit_ops`.
"""

from __future__ import annotations

from importlib.resources import files

from papers.hookspecs import hookimpl

PROXY_BAR = 2.0
"""Points of top-1 below the float model that pass, set before the first run: binary weights and
2-bit activations, as XNOR's binary inputs, within two."""


@hookimpl
def papers_specs() -> list:
    return [files("papers_specs") / "compression" / "dorefa.yaml"]


@hookimpl
def papers_methods() -> list:
    from papers_plugins.compression.low_bit import DOREFA_QUANTIZE

    return [DOREFA_QUANTIZE]


@hookimpl
def papers_checks() -> list:
    from papers_plugins.compression.low_bit import proxy_check

    what = "conv2 and fc1 at 1-bit weights, relu1 at 2 bits, 6-bit gradients (DoReFa 1-2-6)"
    return [proxy_check("dorefa-lenet5_caffe-1-2-6", "dorefa_quantize", "Caffe's LeNet-5", what, PROXY_BAR)]
