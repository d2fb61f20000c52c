"""Zagoruyko and Komodakis, "Paying More Attention to Attention: Improving the Performance of
Convolutional Neural Networks via Attention Transfer" (ICLR 2017, arXiv 1612.03928).

The paper's plugin: its spec (wide residual teacher/student pairs), its method and criterion
(``attention_transfer``) and its proxy check. The code is in
:mod:`papers_plugins.compression.attention`.
"""

from __future__ import annotations

from importlib.resources import files

from papers.hookspecs import hookimpl

PROXY_VARIANT = "attention_transfer-wrn_10_1_16px"
PROXY_IMAGES = 2000
"""Training images of the proxy: half of builtin:mnist5k's 4,000 keep the residual networks' runs short."""


@hookimpl
def papers_specs() -> list:
    return [files("papers_specs") / "compression" / "attention_transfer.yaml"]


@hookimpl
def papers_methods() -> list:
    from papers_plugins.compression.attention import ATTENTION_TRANSFER

    return [ATTENTION_TRANSFER]


@hookimpl
def papers_criteria() -> list:
    from papers_plugins.compression.attention import ATTENTION

    return [ATTENTION]


@hookimpl
def papers_checks() -> list:
    from papers_plugins.compression.attention import attention_distil
    from papers_plugins.compression.distillation import alone_and_distilled_runner, proxy_check

    return [
        proxy_check(
            PROXY_VARIANT,
            alone_and_distilled_runner(PROXY_VARIANT, attention_distil, limit=PROXY_IMAGES),
            "WRN-10-1 taught by WRN-10-2 on 2,000 of builtin:mnist5k's training digits at 16×16 (its "
            "1,000 test digits held out), not the paper's WRN pairs on CIFAR-10: the teacher trained 6 "
            "epochs, then the student 5 epochs alone (cross-entropy) and, from the same initial "
            "weights and shuffles, with attention transfer at the three groups' outputs (β = 2); mean "
            "top-1 over seeds 0, 1 and 2; passes when the taught student's mean reaches the student's "
            "alone",
        )
    ]
