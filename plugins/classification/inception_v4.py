"""Inception-v4, Inception-ResNet and the Impact of Residual Connections on Learning (AAAI 2017).

Everything about the paper is in its spec.
"""

from importlib.resources import files

from papers.hookspecs import hookimpl


@hookimpl
def papers_specs() -> list:
    return [files("papers_specs") / "classification" / "inception_v4.yaml"]
