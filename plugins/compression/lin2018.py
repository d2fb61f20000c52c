"""Lin, Ji, Li, Wu, Huang and Zhang, "Accelerating Convolutional Networks via Global & Dynamic Filter
Pruning" (IJCAI 2018, GDP): a global filter mask revised while training, then removal.

The paper's plugin: its spec, its method and its proxy check. The method is in
:mod:`papers_plugins.compression.dynamic_pruning`, imported only when the registry asks for methods or
checks, so discovering the plugins imports neither pydantic nor torch.
"""

from __future__ import annotations

from importlib.resources import files

from papers.hookspecs import hookimpl


@hookimpl
def papers_specs() -> list:
    return [files("papers_specs") / "compression" / "lin2018.yaml"]


@hookimpl
def papers_methods() -> list:
    from papers_plugins.compression.dynamic_pruning import DYNAMIC_PRUNE

    return [DYNAMIC_PRUNE]


@hookimpl
def papers_checks() -> list:
    from papers_plugins.compression.dynamic_pruning import proxy_checks

    return proxy_checks()
