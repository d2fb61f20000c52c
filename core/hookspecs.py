"""The hooks a paper plugin implements. Every hook is optional; each returns a list.

A plugin module imports torch only inside the functions that need it: plugins are imported when
the registry is discovered, and ``papers list`` must stay fast.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("papers")
hookimpl = pluggy.HookimplMarker("papers")


@hookspec
def papers_specs() -> list:  # type: ignore[empty-body]
    """Contribute paper specs.

    Return a list whose items are paths to YAML spec files (``str``, :class:`pathlib.Path` or an
    :mod:`importlib.resources` ``Traversable``) or ready :class:`papers.spec.Spec` objects.
    """


@hookspec
def papers_ops() -> list:  # type: ignore[empty-body]
    """Contribute graph ops (paper-specific layers).

    Return a list of :class:`papers.ops.Op`. An op name may be contributed once in the whole
    registry; a second claim is reported naming both plugins.
    """


@hookspec
def papers_checks() -> list:  # type: ignore[empty-body]
    """Contribute empirical checks: small-scale reproductions that train a variant on data a package ships.

    Return a list of :class:`papers.checks.TrainingCheck`. Each names a variant of one of the
    plugin's papers, the data (``builtin:digits``), the recipe overrides that make the run small, and
    the accuracy it must reach; ``papers check PAPER --run`` runs it. A check name may be contributed
    once in the whole registry.
    """
