"""Guo, Yao and Chen, "Dynamic Network Surgery for Efficient DNNs" (NIPS 2016, arXiv 1608.04493):
pruning and splicing connections while the network trains.

The paper's plugin: its spec, its method and its proxy checks. The method is in
:mod:`papers_plugins.compression.surgery`, imported only when the registry asks for methods or checks,
so discovering the plugins (``papers list`` answering from its index) imports neither pydantic nor torch.
"""

from __future__ import annotations

from importlib.resources import files

from papers.hookspecs import hookimpl


@hookimpl
def papers_specs() -> list:
    return [files("papers_specs") / "compression" / "dns.yaml"]


@hookimpl
def papers_methods() -> list:
    from papers_plugins.compression.surgery import NETWORK_SURGERY

    return [NETWORK_SURGERY]


@hookimpl
def papers_checks() -> list:
    from papers_plugins.compression.surgery import proxy_checks

    return proxy_checks()
