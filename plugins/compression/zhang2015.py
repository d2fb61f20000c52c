"""Zhang, Zou, Ming, He and Sun, "Efficient and Accurate Approximations of Nonlinear Convolutional
Networks" (CVPR 2015, arXiv 1411.4229): channel decomposition with a nonlinear, asymmetric
reconstruction and whole-model rank selection by energy.

The paper's plugin: its spec, its method (``channel_decompose``) and its proxy check. The method is in
:mod:`papers_plugins.compression.channel_decomposition`, imported only when the registry asks for
methods or checks, so discovering the plugins imports neither pydantic nor torch.
"""

from __future__ import annotations

from importlib.resources import files

from papers.hookspecs import hookimpl


@hookimpl
def papers_specs() -> list:
    return [files("papers_specs") / "compression" / "zhang2015.yaml"]


@hookimpl
def papers_methods() -> list:
    from papers_plugins.compression.channel_decomposition import CHANNEL_DECOMPOSE

    return [CHANNEL_DECOMPOSE]


@hookimpl
def papers_checks() -> list:
    from papers_plugins.compression.channel_decomposition import proxy_checks

    return proxy_checks()
