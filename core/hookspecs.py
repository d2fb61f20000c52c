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


@hookspec
def papers_criteria() -> list:  # type: ignore[empty-body]
    """Contribute training criteria (losses) that a recipe names with ``criterion: NAME``.

    Return a list of :class:`papers.recipe.Criterion`: a name, a doc, how predictions are read
    (``scores``: the model's output as class scores, the highest wins) and, unless the loss is
    cross-entropy on those scores, a ``build(model, config)`` factory of the loss. A name may be
    contributed once in the whole registry, the core's ``cross_entropy`` included.
    """


@hookspec
def papers_optimizers() -> list:  # type: ignore[empty-body]
    """Contribute optimizers that a recipe names with ``optimizer: {name: NAME}``.

    Return a list of :class:`papers.recipe.Optimizer`: a name, a ``build(parameters, config)``
    factory of the torch optimizer, a doc, the default learning rate (or none) and, where what runs
    departs from the method the name stands for, that ``deviation`` in words. A name may be
    contributed once in the whole registry, the core's (sgd, adam, adamw, rmsprop, adagrad) included.
    """


@hookspec
def papers_methods() -> list:  # type: ignore[empty-body]
    """Contribute methods: transforms of a built model that method variants apply to a base variant.

    Return a list of :class:`papers.methods.Method`: a name, a :class:`papers.methods.Settings`
    model that types the settings a spec gives it, and a static ``rewrite`` of the expanded graph
    (measurable without weights), an ``apply`` step on a model with weights, or both. A method name
    may be contributed once in the whole registry; a second claim is refused naming both plugins.
    """
