"""Identity Mappings in Deep Residual Networks (ECCV 2016).

Everything about the paper is in its spec.
"""

from importlib.resources import files

from papers.hookspecs import hookimpl


@hookimpl
def papers_specs() -> list:
    return [files("papers_specs") / "classification" / "preact_resnet.yaml"]
