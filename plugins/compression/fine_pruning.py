"""Tung, Muralidharan and Mori, "Fine-Pruning: Joint Fine-Tuning and Compression of a Convolutional
Network with Bayesian Optimization" (BMVC 2017): per-layer pruning rates searched by Bayesian
optimisation, alternating with fine-tuning.

The paper's plugin: its spec, its method and its proxy check. The method is in
:mod:`papers_plugins.compression.bayes_pruning`, imported only when the registry asks for methods or
checks, so discovering the plugins imports neither pydantic, torch nor bayesian-optimization.
"""

from __future__ import annotations

from importlib.resources import files

from papers.hookspecs import hookimpl


@hookimpl
def papers_specs() -> list:
    return [files("papers_specs") / "compression" / "fine_pruning.yaml"]


@hookimpl
def papers_methods() -> list:
    from papers_plugins.compression.bayes_pruning import FINE_PRUNE

    return [FINE_PRUNE]


@hookimpl
def papers_checks() -> list:
    from papers_plugins.compression.bayes_pruning import proxy_checks

    return proxy_checks()
