"""AlexNet: ImageNet Classification with Deep Convolutional Neural Networks (NIPS 2012).

Everything about the paper is in its spec.
"""

from importlib.resources import files

from papers.hookspecs import hookimpl


@hookimpl
def papers_specs() -> list:
    return [files("papers_specs") / "classification" / "alexnet.yaml"]
