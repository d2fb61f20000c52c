"""Huang and Wang, "Data-Driven Sparse Structure Selection for Deep Neural Networks" (ECCV 2018, arXiv
1707.01213, SSS): scaling factors driven to zero by accelerated proximal gradient, then removal.

The paper's plugin: its spec, its method and its proxy check. The method is in
:mod:`papers_plugins.compression.sparse_structure`, imported only when the registry asks for methods
or checks, so discovering the plugins imports neither pydantic nor torch.
"""

from __future__ import annotations

from importlib.resources import files

from papers.hookspecs import hookimpl


@hookimpl
def papers_specs() -> list:
    return [files("papers_specs") / "compression" / "huang2018.yaml"]


@hookimpl
def papers_methods() -> list:
    from papers_plugins.compression.sparse_structure import SPARSE_STRUCTURE

    return [SPARSE_STRUCTURE]


@hookimpl
def papers_checks() -> list:
    from papers_plugins.compression.sparse_structure import proxy_checks

    return proxy_checks()
