"""Yang, Chen and Sze, "Designing Energy-Efficient Convolutional Neural Networks using Energy-Aware
Pruning" (CVPR 2017, arXiv 1611.05128): layers pruned in the order of their estimated energy.

The paper's plugin: its spec, its methods and its proxy check. The energy model is in
:mod:`papers_plugins.compression.energy`, the method in :mod:`papers_plugins.compression.energy_aware`,
imported only when the registry asks for methods or checks, so discovering the plugins imports neither
pydantic nor torch.
"""

from __future__ import annotations

from importlib.resources import files

from papers.hookspecs import hookimpl


@hookimpl
def papers_specs() -> list:
    return [files("papers_specs") / "compression" / "yang2017.yaml"]


@hookimpl
def papers_methods() -> list:
    from papers_plugins.compression.energy_aware import ENERGY_AWARE_PRUNE, ENERGY_ESTIMATE

    return [ENERGY_AWARE_PRUNE, ENERGY_ESTIMATE]


@hookimpl
def papers_checks() -> list:
    from papers_plugins.compression.energy_aware import proxy_checks

    return proxy_checks()
