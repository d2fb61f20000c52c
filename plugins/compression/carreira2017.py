"""Carreira-Perpiñán (2017), "Model compression as constrained optimization, with application to neural
nets", Part I (general framework, arXiv 1707.01209) and Part II (quantization, with Idelbayev, arXiv
1707.04319): the learning-compression (LC) algorithm with pluggable C steps.

One plugin for both parts: their specs, the method (``lc_compress``) and a proxy check each, LC
against direct compression on builtin:mnist5k. The code is in :mod:`papers_plugins.compression.lc`.
"""

from __future__ import annotations

from importlib.resources import files

from papers.hookspecs import hookimpl

_PROXY = (
    "LeNet-300-100 trained 30 epochs on 4,000 of builtin:mnist5k's digits as the reference (not MNIST's "
    "60,000), then {what} directly (the first C step alone) and by the LC algorithm (12 L steps of one "
    "epoch, μ from 0.005 growing 1.8× a step, multipliers updated); test top-1 on its 1,000 test "
    "digits; passes when LC's reaches the direct compression's"
)


@hookimpl
def papers_specs() -> list:
    folder = files("papers_specs") / "compression"
    return [folder / "carreira2017.yaml", folder / "carreira2017_quantization.yaml"]


@hookimpl
def papers_methods() -> list:
    from papers_plugins.compression.lc import LC_COMPRESS

    return [LC_COMPRESS]


@hookimpl
def papers_checks() -> list:
    from papers_plugins.compression.lc import proxy_check

    return [
        proxy_check("carreira2017-lenet300_100-prune", _PROXY.format(what="pruned to 5% of each layer")),
        proxy_check(
            "carreira2017_quantization-lenet300_100-k2",
            _PROXY.format(what="quantized to a 2-value codebook per layer"),
        ),
    ]
