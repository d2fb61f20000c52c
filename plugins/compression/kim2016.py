"""Kim, Park, Yoo, Choi, Yang and Shin, "Compression of Deep Convolutional Neural Networks for Fast
and Low Power Mobile Applications" (ICLR 2016, arXiv 1511.06530): Tucker-2 with VBMF's ranks.

The paper's plugin: its spec (with VGG-S, one of the networks it compresses), its method
(``tucker2``) and its proxy check. The method is in :mod:`papers_plugins.compression.tucker`,
imported only when the registry asks for methods or checks, so discovering the plugins imports
neither pydantic nor torch.
"""

from __future__ import annotations

from importlib.resources import files

from papers.hookspecs import hookimpl


@hookimpl
def papers_specs() -> list:
    return [files("papers_specs") / "compression" / "kim2016.yaml"]


@hookimpl
def papers_methods() -> list:
    from papers_plugins.compression.tucker import TUCKER2

    return [TUCKER2]


@hookimpl
def papers_checks() -> list:
    from papers_plugins.compression.tucker import proxy_checks

    return proxy_checks()
