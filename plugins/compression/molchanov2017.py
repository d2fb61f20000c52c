"""Molchanov, Tyree, Karras, Aila and Kautz, "Pruning Convolutional Neural Networks for Resource
Efficient Inference" (ICLR 2017, arXiv 1611.06440): feature maps pruned by a first-order Taylor
criterion, iteratively with fine-tuning.

The paper's plugin: its spec, its method and its proxy check. The method is in
:mod:`papers_plugins.compression.taylor`, imported only when the registry asks for methods or checks,
so discovering the plugins imports neither pydantic nor torch.
"""

from __future__ import annotations

from importlib.resources import files

from papers.hookspecs import hookimpl


@hookimpl
def papers_specs() -> list:
    return [files("papers_specs") / "compression" / "molchanov2017.yaml"]


@hookimpl
def papers_methods() -> list:
    from papers_plugins.compression.taylor import TAYLOR_PRUNE

    return [TAYLOR_PRUNE]


@hookimpl
def papers_checks() -> list:
    from papers_plugins.compression.taylor import proxy_checks

    return proxy_checks()
