"""Romero et al., "FitNets: Hints for Thin Deep Nets" (ICLR 2015, arXiv 1412.6550): a thin, deep
student guided by a teacher's hidden layer, then distilled.

The paper's plugin: its spec, its method (``fitnet_hints``), its criteria (``fitnet_hints``,
``fitnet_kd``) and its proxy check. The code is in :mod:`papers_plugins.compression.hints`.
"""

from __future__ import annotations

from importlib.resources import files

from papers.hookspecs import hookimpl

PROXY_VARIANT = "fitnets-thin_cnn"


@hookimpl
def papers_specs() -> list:
    return [files("papers_specs") / "compression" / "fitnets.yaml"]


@hookimpl
def papers_methods() -> list:
    from papers_plugins.compression.hints import FITNET_HINTS

    return [FITNET_HINTS]


@hookimpl
def papers_criteria() -> list:
    from papers_plugins.compression.hints import FITNET_KD, HINTS

    return [HINTS, FITNET_KD]


@hookimpl
def papers_checks() -> list:
    from papers_plugins.compression.distillation import alone_and_distilled_runner, proxy_check
    from papers_plugins.compression.hints import fitnet_distil

    return [
        proxy_check(
            PROXY_VARIANT,
            alone_and_distilled_runner(PROXY_VARIANT, fitnet_distil),
            "a thin 4-layer CNN (8 and 16 maps) on 5,000 of MNIST's digits (4,000 training, 1,000 test), "
            "not the paper's maxout FitNets on CIFAR-10: Caffe's LeNet trained 10 epochs as the teacher, "
            "then the student 10 epochs alone (cross-entropy) and, from the same initial weights and "
            "shuffles, 3 epochs of hints (LeNet's conv2 regressed from the student's block2.conv1) and "
            "10 of distillation at τ = 3, λ = 1; mean top-1 over seeds 0, 1 and 2; passes when the "
            "FitNet's mean reaches the student's alone",
        )
    ]
