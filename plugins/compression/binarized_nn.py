"""Courbariaux, Hubara, Soudry, El-Yaniv and Bengio, "Binarized Neural Networks: Training Deep Neural
Networks with Weights and Activations Constrained to +1 or -1" (arXiv 1602.02830).

The paper's plugin: its spec and its method (``quantize_qnn``, in
:mod:`papers_plugins.compression.low_bit`, at one bit; Hubara et al.'s Quantized Neural Networks use
it at k bits). Its layers are ops of :mod:`papers_plugins.compression.low_bit_ops`.
"""

from __future__ import annotations

from importlib.resources import files

from papers.hookspecs import hookimpl


@hookimpl
def papers_specs() -> list:
    return [files("papers_specs") / "compression" / "binarized_nn.yaml"]


@hookimpl
def papers_methods() -> list:
    from papers_plugins.compression.low_bit import QUANTIZE_QNN

    return [QUANTIZE_QNN]
