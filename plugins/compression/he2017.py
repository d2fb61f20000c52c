"""He, Zhang and Sun, "Channel Pruning for Accelerating Very Deep Neural Networks" (ICCV 2017, arXiv
1707.06168): LASSO channel selection and least-squares reconstruction, layer by layer.

The paper's plugin: its spec, its method and its proxy check. The method is in
:mod:`papers_plugins.compression.channel_pruning`, imported only when the registry asks for methods or
checks, so discovering the plugins imports neither pydantic, torch nor scikit-learn.
"""

from __future__ import annotations

from importlib.resources import files

from papers.hookspecs import hookimpl


@hookimpl
def papers_specs() -> list:
    return [files("papers_specs") / "compression" / "he2017.yaml"]


@hookimpl
def papers_methods() -> list:
    from papers_plugins.compression.channel_pruning import CHANNEL_PRUNE

    return [CHANNEL_PRUNE]


@hookimpl
def papers_checks() -> list:
    from papers_plugins.compression.channel_pruning import proxy_checks

    return proxy_checks()
