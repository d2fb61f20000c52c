"""He, Wen, Zhou, Wu, Yao, Zhou and Zou, "Effective Quantization Methods for Recurrent Neural Networks"
(arXiv 1611.10176): balanced quantization of LSTM and GRU weights.

The paper's models are recurrent language models, not networks of the registry's graph language: its
quantizers and the registry's proxy (a small LSTM and GRU language model on sentences sampled from
Learning to Prune's grammar) are runnable code in :mod:`papers_plugins.compression.rnn_quantization`,
imported only when a check runs: its settings and the checks themselves are here, so that discovering
them imports no torch.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Any

from papers.hookspecs import hookimpl


@hookimpl
def papers_specs() -> list:
    return [files("papers_specs") / "compression" / "he2016.yaml"]


@hookimpl
def papers_checks() -> list:
    return proxy_checks()


PROXY = {"train": 2000, "test": 400, "epochs": 8, "bits": (2, 3, 4), "margin": 1.0}
"""The proxy's corpus (sentences), float training epochs, bit widths and bar: the registry's choice."""


def _runner(cell: str) -> Any:
    def run(progress: bool) -> tuple[float, float]:
        from papers_plugins.compression.rnn_quantization import proxy

        measured = proxy(cell)
        top = max(PROXY["bits"])
        if progress:
            import click

            rows = [
                f"{key}: perplexity {value['perplexity']:.3f}, next-word top-1 {value['accuracy']:.2f}%"
                for key, value in measured.items()
            ]
            click.echo(f"{cell} language model (held-out):\n  " + "\n  ".join(rows), err=True)
        return round(measured[f"balanced-{top}"]["accuracy"], 2), round(
            measured["float"]["accuracy"] - PROXY["margin"], 2
        )

    return run


def proxy_checks() -> list:
    """The paper's proxy checks, one per cell."""
    from papers.checks import TrainingCheck

    top = max(PROXY["bits"])
    return [
        TrainingCheck(
            name=f"he2016-{cell}-synthetic",
            variant="he2016",
            data=f"{PROXY['train']} training and {PROXY['test']} held-out sentences sampled from Learning to "
            "Prune's fixed grammar",
            min_accuracy=0.0,
            max_seconds=300.0,
            metric="next_word_accuracy",
            runner=_runner(cell),
            proxy=f"a one-layer {cell.upper()} language model (64 units) on sentences of a 14-symbol PCFG, "
            "not the Penn Treebank; trained in float, then its recurrent weights quantized by balanced "
            "(percentile) quantization and its hidden states uniformly, at "
            f"{', '.join(map(str, PROXY['bits']))} bits, beside uniform weight quantization; perplexities "
            f"printed with --run; passes when the {top}-bit balanced model's next-word top-1 is within "
            f"{PROXY['margin']:g} point of float's",
        )
        for cell in ("lstm", "gru")
    ]
