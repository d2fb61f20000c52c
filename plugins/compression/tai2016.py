"""Tai, Xiao, Zhang, Wang and E, "Convolutional Neural Networks with Low-rank Regularization" (ICLR
2016, arXiv 1511.06067): vertical and horizontal filters in closed form, and low-rank training.

The paper's plugin: its spec, its method (``vh_decompose``) and its proxy check. The method is in
:mod:`papers_plugins.compression.vh_decomposition`, imported only when the registry asks for methods
or checks, so discovering the plugins imports neither pydantic nor torch.
"""

from __future__ import annotations

from importlib.resources import files

from papers.hookspecs import hookimpl


@hookimpl
def papers_specs() -> list:
    return [files("papers_specs") / "compression" / "tai2016.yaml"]


@hookimpl
def papers_methods() -> list:
    from papers_plugins.compression.vh_decomposition import VH_DECOMPOSE

    return [VH_DECOMPOSE]


@hookimpl
def papers_checks() -> list:
    from papers_plugins.compression.vh_decomposition import proxy_checks

    return proxy_checks()
