"""VGG: Very Deep Convolutional Networks for Large-Scale Image Recognition (ICLR 2015).

Everything about the paper is in its spec; the graph needs only catalogue ops.
"""

from importlib.resources import files

from papers.hookspecs import hookimpl


@hookimpl
def papers_specs() -> list:
    return [files("papers_specs") / "classification" / "vgg.yaml"]
