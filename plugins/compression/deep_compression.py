"""Han, Mao and Dally, "Deep Compression: Compressing Deep Neural Networks with Pruning, Trained
Quantization and Huffman Coding" (ICLR 2016, arXiv 1510.00149).

The paper's plugin: its spec, its method and its proxy checks. The method is in
:mod:`papers_plugins.compression.quantization`, imported only when the registry asks for methods or checks,
so discovering the plugins (``papers list`` answering from its index) imports neither pydantic nor torch.
"""

from __future__ import annotations

from importlib.resources import files

from papers.hookspecs import hookimpl


@hookimpl
def papers_specs() -> list:
    return [files("papers_specs") / "compression" / "deep_compression.yaml"]


@hookimpl
def papers_methods() -> list:
    from papers_plugins.compression.quantization import KMEANS_QUANTIZE

    return [KMEANS_QUANTIZE]


@hookimpl
def papers_checks() -> list:
    from papers_plugins.compression.quantization import proxy_checks

    return proxy_checks()
