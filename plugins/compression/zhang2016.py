"""Zhang, Zou, He and Sun, "Accelerating Very Deep Convolutional Networks for Classification and
Detection" (TPAMI 2016, arXiv 1505.06798): the journal version of the CVPR 2015 channel
decomposition, combined with Jaderberg et al.'s spatial decomposition ("3D").

The paper's plugin: its spec, its method (``channel_decompose_3d``) and its proxy check. The method is
in :mod:`papers_plugins.compression.channel_decomposition_3d`, imported only when the registry asks
for methods or checks, so discovering the plugins imports neither pydantic nor torch.
"""

from __future__ import annotations

from importlib.resources import files

from papers.hookspecs import hookimpl


@hookimpl
def papers_specs() -> list:
    return [files("papers_specs") / "compression" / "zhang2016.yaml"]


@hookimpl
def papers_methods() -> list:
    from papers_plugins.compression.channel_decomposition_3d import CHANNEL_DECOMPOSE_3D

    return [CHANNEL_DECOMPOSE_3D]


@hookimpl
def papers_checks() -> list:
    from papers_plugins.compression.channel_decomposition_3d import proxy_checks

    return proxy_checks()
