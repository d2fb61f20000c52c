"""Denton, Zaremba, Bruna, LeCun and Fergus, "Exploiting Linear Structure Within Convolutional Networks
for Efficient Evaluation" (NIPS 2014, arXiv 1404.0736): monochromatic and biclustered approximations.

The paper's plugin: its spec, its op (``channel_permute``), its methods (``monochromatic``,
``bicluster_svd``) and its proxy check. The methods are in
:mod:`papers_plugins.compression.linear_structure`, imported only when the registry asks for methods
or checks, so discovering the plugins imports neither pydantic nor torch.
"""

from __future__ import annotations

from importlib.resources import files

from papers.hookspecs import hookimpl
from papers.ops import Op, input_channels


@hookimpl
def papers_specs() -> list:
    return [files("papers_specs") / "compression" / "denton2014.yaml"]


@hookimpl
def papers_ops() -> list:
    return [
        Op(
            "channel_permute",
            "papers_plugins.compression.channel_permute:ChannelPermute",
            inferred={"channels": input_channels},
            counts_macs=False,
            doc="x[:, order]: the channels in the order its `order` buffer holds (a weight a method sets; "
            "the identity until then), for clusters of channels made contiguous (Denton et al. 2014).",
        )
    ]


@hookimpl
def papers_methods() -> list:
    from papers_plugins.compression.linear_structure import BICLUSTER_SVD, MONOCHROMATIC

    return [MONOCHROMATIC, BICLUSTER_SVD]


@hookimpl
def papers_checks() -> list:
    from papers_plugins.compression.linear_structure import proxy_checks

    return proxy_checks()
