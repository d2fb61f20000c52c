"""DeepLabv3: Rethinking Atrous Convolution for Semantic Image Segmentation (arXiv 1706.05587).

Everything about the paper is in its spec.
"""

from importlib.resources import files

from papers.hookspecs import hookimpl


@hookimpl
def papers_specs() -> list:
    return [files("papers_specs") / "segmentation" / "deeplabv3.yaml"]
