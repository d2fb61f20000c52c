"""Ullrich, Meeds and Welling, "Soft Weight-Sharing for Neural Network Compression" (ICLR 2017, arXiv
1702.04008): retraining under a learned Gaussian-mixture prior, then quantizing to its means.

The paper's plugin: its spec, its method and its proxy checks. The method is in
:mod:`papers_plugins.compression.mixture_prior`, imported only when the registry asks for methods or
checks, so discovering the plugins (``papers list`` answering from its index) imports neither pydantic
nor torch.
"""

from __future__ import annotations

from importlib.resources import files

from papers.hookspecs import hookimpl


@hookimpl
def papers_specs() -> list:
    return [files("papers_specs") / "compression" / "soft_weight_sharing.yaml"]


@hookimpl
def papers_methods() -> list:
    from papers_plugins.compression.mixture_prior import SOFT_WEIGHT_SHARING

    return [SOFT_WEIGHT_SHARING]


@hookimpl
def papers_checks() -> list:
    from papers_plugins.compression.mixture_prior import proxy_checks

    return proxy_checks()
