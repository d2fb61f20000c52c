"""Li, Kadav, Durdanovic, Samet and Graf, "Pruning Filters for Efficient ConvNets" (ICLR 2017, arXiv
1608.08710): filters ranked by their ℓ1 norms and removed for real.

The paper's plugin: its spec, its method and its proxy check. The method is in
:mod:`papers_plugins.compression.l1_filters` (the removal in :mod:`papers_plugins.compression.channels`),
imported only when the registry asks for methods or checks, so discovering the plugins imports
neither pydantic nor torch.
"""

from __future__ import annotations

from importlib.resources import files

from papers.hookspecs import hookimpl


@hookimpl
def papers_specs() -> list:
    return [files("papers_specs") / "compression" / "li2017.yaml"]


@hookimpl
def papers_methods() -> list:
    from papers_plugins.compression.l1_filters import L1_FILTER_PRUNE

    return [L1_FILTER_PRUNE]


@hookimpl
def papers_checks() -> list:
    from papers_plugins.compression.l1_filters import proxy_checks

    return proxy_checks()
