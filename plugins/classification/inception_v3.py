"""Rethinking the Inception Architecture for Computer Vision (CVPR 2016).

Everything about the paper is in its spec.
"""

from importlib.resources import files

from papers.hookspecs import hookimpl


@hookimpl
def papers_specs() -> list:
    return [files("papers_specs") / "classification" / "inception_v3.yaml"]
