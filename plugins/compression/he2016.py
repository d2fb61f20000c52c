"""He, Wen, Zhou, Wu, Yao, Zhou and Zou, "Effective Quantization Methods for Recurrent Neural Networks"
(arXiv 1611.10176): balanced quantization of LSTM and GRU weights.

The paper's models are recurrent language models, not networks of the registry's graph language: its
quantizers and the registry's proxy (a small LSTM and GRU language model on sentences sampled from
Learning to Prune's grammar) are runnable code in :mod:`papers_plugins.compression.rnn_quantization`,
imported only when checks are asked for.
"""

from __future__ import annotations

from importlib.resources import files

from papers.hookspecs import hookimpl


@hookimpl
def papers_specs() -> list:
    return [files("papers_specs") / "compression" / "he2016.yaml"]


@hookimpl
def papers_checks() -> list:
    from papers_plugins.compression.rnn_quantization import proxy_checks

    return proxy_checks()
