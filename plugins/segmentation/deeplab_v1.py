"""DeepLab v1: Semantic Image Segmentation with Deep Convolutional Nets and Fully Connected CRFs
(ICLR 2015).

Everything about the network is in its spec; the fully connected CRF is not part of this entry.
"""

from importlib.resources import files

from papers.hookspecs import hookimpl


@hookimpl
def papers_specs() -> list:
    return [files("papers_specs") / "segmentation" / "deeplab_v1.yaml"]
