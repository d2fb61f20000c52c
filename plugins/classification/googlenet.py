"""GoogLeNet: Going Deeper with Convolutions (CVPR 2015).

Everything about the paper is in its spec.
"""

from importlib.resources import files

from papers.hookspecs import hookimpl


@hookimpl
def papers_specs() -> list:
    return [files("papers_specs") / "classification" / "googlenet.yaml"]
