"""DeepLab v2: Semantic Image Segmentation with Deep Convolutional Nets, Atrous Convolution, and Fully
Connected CRFs (TPAMI 2018).

Everything about the network is in its spec (ASPP on ResNet-101 and on DeepLab v1's VGG-16); the
fully connected CRF is :mod:`papers.crf`, run by ``papers segment --crf``.
"""

from importlib.resources import files

from papers.hookspecs import hookimpl


@hookimpl
def papers_specs() -> list:
    return [files("papers_specs") / "segmentation" / "deeplab_v2.yaml"]
