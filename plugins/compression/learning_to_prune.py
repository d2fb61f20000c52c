"""Vieira and Eisner, "Learning to Prune: Exploring the Frontier of Fast and Accurate Parsing" (TACL
2017): a chart parser's pruning policy trained by LOLS for accuracy minus λ × runtime.

The paper's model is a parser, not a network of the registry: its method is runnable code in
:mod:`papers_plugins.compression.parsing` (a pruned CKY parser over a small PCFG, the LOLS trainer,
the gold-span baseline, the frontier), imported only when checks are asked for.
"""

from __future__ import annotations

from importlib.resources import files

from papers.hookspecs import hookimpl


@hookimpl
def papers_specs() -> list:
    return [files("papers_specs") / "compression" / "learning_to_prune.yaml"]


@hookimpl
def papers_checks() -> list:
    from papers_plugins.compression.parsing import proxy_checks

    return proxy_checks()
