"""Hinton, Vinyals and Dean, "Distilling the Knowledge in a Neural Network" (NIPS 2014 Deep Learning
Workshop, arXiv 1503.02531): a small student trained on a large teacher's soft targets.

The paper's plugin: its spec (the MNIST teacher and student of Section 3), its method
(``knowledge_distillation``), its criterion (``soft_targets``) and its proxy check. The code is in
:mod:`papers_plugins.compression.distillation`, imported only when the registry asks for it.
"""

from __future__ import annotations

from importlib.resources import files

from papers.hookspecs import hookimpl

PROXY_VARIANT = "hinton2015-lenet300_100"


@hookimpl
def papers_specs() -> list:
    return [files("papers_specs") / "compression" / "hinton2015.yaml"]


@hookimpl
def papers_methods() -> list:
    from papers_plugins.compression.distillation import KNOWLEDGE_DISTILLATION

    return [KNOWLEDGE_DISTILLATION]


@hookimpl
def papers_criteria() -> list:
    from papers_plugins.compression.distillation import SOFT_TARGETS

    return [SOFT_TARGETS]


@hookimpl
def papers_checks() -> list:
    from papers_plugins.compression.distillation import (
        alone_and_distilled_runner,
        proxy_check,
        soft_target_distil,
    )

    return [
        proxy_check(
            PROXY_VARIANT,
            alone_and_distilled_runner(PROXY_VARIANT, soft_target_distil),
            "LeNet-300-100 on 5,000 of MNIST's digits (4,000 training, 1,000 test images), not the "
            "paper's 800-unit net on all 60,000: the 1200-unit teacher (dropout 0.5) trained 20 "
            "epochs, then the student 20 epochs alone (cross-entropy) and, from the same initial "
            "weights and shuffles, distilled at the variant's T and alpha; mean top-1 over seeds 0, "
            "1 and 2; passes when the distilled student's mean reaches the student's alone",
        )
    ]
