"""Rastegari, Ordonez, Redmon and Farhadi, "XNOR-Net: ImageNet Classification Using Binary
Convolutional Neural Networks" (ECCV 2016, arXiv 1603.05279).

The paper's plugin: its spec, its method (``binarize``, in :mod:`papers_plugins.compression.low_bit`)
and its proxy checks. The binary layers it rewrites into are ops of
:mod:`papers_plugins.compression.low_bit_ops`; none of them is imported until a model is built or the
registry asks for methods or checks.
"""

from __future__ import annotations

from importlib.resources import files

from papers.hookspecs import hookimpl

PROXY_BARS = {"xnor_net-lenet5_caffe-bwn": 1.0, "xnor_net-lenet5_caffe-xnor": 2.0}
"""Points of top-1 below the float model that pass, set before the first run: binary weights alone
(BWN) within a point, as the registry's other compression proxies; binary inputs too (XNOR), which
the paper finds costlier (ImageNet), within two."""


@hookimpl
def papers_specs() -> list:
    return [files("papers_specs") / "compression" / "xnor_net.yaml"]


@hookimpl
def papers_methods() -> list:
    from papers_plugins.compression.low_bit import BINARIZE

    return [BINARIZE]


@hookimpl
def papers_checks() -> list:
    from papers_plugins.compression.low_bit import proxy_check

    return [
        proxy_check(variant, "binarize", "Caffe's LeNet-5", what, PROXY_BARS[variant])
        for variant, what in (
            ("xnor_net-lenet5_caffe-bwn", "conv2 and fc1 binarized, α·sign(W) per filter (BWN)"),
            (
                "xnor_net-lenet5_caffe-xnor",
                "conv2 and fc1 binarized with binary inputs scaled by K after a batch normalisation (XNOR)",
            ),
        )
    ]
