"""Hubara, Courbariaux, Soudry, El-Yaniv and Bengio, "Quantized Neural Networks: Training Neural
Networks with Low Precision Weights and Activations" (arXiv 1609.07061).

The paper's plugin: its spec. Its method is the binarized networks' ``quantize_qnn`` at k bits
(contributed by :mod:`papers_plugins.compression.binarized_nn`).
"""

from __future__ import annotations

from importlib.resources import files

from papers.hookspecs import hookimpl


@hookimpl
def papers_specs() -> list:
    return [files("papers_specs") / "compression" / "qnn.yaml"]
