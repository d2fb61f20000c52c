"""Han, Pool, Tran and Dally, "Learning both Weights and Connections for Efficient Neural Networks"
(NIPS 2015, arXiv 1506.02626): magnitude pruning with retraining.

The paper's plugin: its spec, its method and its proxy checks. The method is in
:mod:`papers_plugins.compression.pruning`, imported only when the registry asks for methods or checks,
so discovering the plugins (``papers list`` answering from its index) imports neither pydantic nor torch.
"""

from __future__ import annotations

from importlib.resources import files

from papers.hookspecs import hookimpl


@hookimpl
def papers_specs() -> list:
    return [files("papers_specs") / "compression" / "han2015.yaml"]


@hookimpl
def papers_methods() -> list:
    from papers_plugins.compression.pruning import MAGNITUDE_PRUNE

    return [MAGNITUDE_PRUNE]


@hookimpl
def papers_checks() -> list:
    from papers_plugins.compression.pruning import proxy_checks

    return proxy_checks()
