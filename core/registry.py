"""The registry: every paper, variant and op that the loaded plugins contribute.

Building it reads YAML and validates specs; it never imports torch, so ``papers list`` stays fast.

Nothing a plugin returns is trusted: each contribution is checked under the same guard as the hooks
(see :mod:`papers.plugins`), so one that raises anything while it is read is refused, not fatal. A
``Spec`` object is validated again from its JSON (``Spec.model_construct`` skips validation, and a
subclass may change anything), a file-like object must give ``bytes``, and ops, checks, criteria and
optimizers must have the types they declare.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from papers.checks import TrainingCheck
from papers.errors import PapersError, PluginError, SpecError, UnknownIdError
from papers.load import load_spec_file, load_spec_text
from papers.methods import Method, check_method, check_method_variant
from papers.ops import Catalogue, Op
from papers.plugins import PluginInfo, PluginManager, describe, spec_label
from papers.recipe import (
    BUILTIN_CRITERIA,
    BUILTIN_OPTIMIZERS,
    Criterion,
    Optimizer,
    check_criterion,
    check_optimizer,
)
from papers.spec import Spec, Variant, validate_spec_json


@dataclass(frozen=True)
class Entry:
    """A paper in the registry, with where it came from."""

    spec: Spec
    file: str
    plugin: str
    distribution: str


class Registry:
    """Papers by id, variants by id, and the op catalogue, from one set of plugins."""

    def __init__(self, manager: PluginManager):
        self.manager = manager
        self.catalogue = Catalogue()
        self.papers: dict[str, Entry] = {}
        self.variants: dict[str, tuple[Entry, Variant]] = {}
        self.expanded: dict[str, Any] = {}
        """Expanded graphs by variant and options (see ``papers.api.expand_variant``)."""
        self.checks: dict[str, tuple[str, TrainingCheck]] = {}
        """Training checks by name, each with the plugin (and distribution) that contributed it."""
        self.methods: dict[str, tuple[str, Method]] = {}
        """Methods by name, each with the plugin (and distribution) that contributed it."""
        self.criteria: dict[str, tuple[str, Criterion]] = {c.name: (_CORE, c) for c in BUILTIN_CRITERIA}
        """Training criteria (losses) by name: the core's and the plugins', each with its origin."""
        self.optimizers: dict[str, tuple[str, Optimizer]] = {o.name: (_CORE, o) for o in BUILTIN_OPTIMIZERS}
        """Optimizers by name: the core's and the plugins', each with its origin."""
        for hook, add in (
            ("papers_ops", self._add_op),
            ("papers_methods", self._add_method),
            ("papers_criteria", self._add_criterion),
            ("papers_optimizers", self._add_optimizer),
            ("papers_specs", self._add_spec),
            ("papers_checks", self._add_check),
        ):
            for info, items in manager.call(hook):
                for item in items:
                    self._contribute(info, hook, add, item)
            if hook == "papers_specs":  # every base and method is known now
                self._check_method_variants()

    @classmethod
    def discover(cls) -> Registry:
        manager = PluginManager()
        manager.load_entry_points()
        return cls(manager)

    # -- contributions ------------------------------------------------------------------------

    def _contribute(
        self, info: PluginInfo, hook: str, add: Callable[[PluginInfo, Any], None], item: Any
    ) -> None:
        """Add one contribution; anything it raises (SystemExit included) refuses it, not the process."""
        try:
            add(info, item)
        except KeyboardInterrupt:
            raise
        except PapersError as error:
            self.manager.refuse(info, error)
        except BaseException as exc:  # reading a plugin's object runs the plugin's code
            self.manager.refuse(
                info, PluginError(f"{hook}() gave a bad contribution: {describe(exc)}"), cause=exc
            )

    def _add_op(self, info: PluginInfo, op: Any) -> None:
        if not isinstance(op, Op):
            raise PluginError(f"papers_ops() returned {type(op).__name__}, not papers.ops.Op")
        for name in ("name", "target", "doc"):
            if type(getattr(op, name)) is not str:
                raise PluginError(f"op {name} is {type(getattr(op, name)).__name__}, not str")
        self.catalogue.add(op, origin=info.label)
        info.contributes.setdefault("ops", []).append(op.name)

    def _add_spec(self, info: PluginInfo, item: Any) -> None:
        spec, file = _load(item)
        where = info.label
        if spec.id in self.papers:
            other = self.papers[spec.id]
            raise PluginError(
                f"paper id {spec.id!r} is claimed by both {other.plugin} ({other.distribution}) and {where}",
                file=file,
            )
        for variant in spec.variants:
            if variant.id in self.variants:
                other = self.variants[variant.id][0]
                raise PluginError(
                    f"variant id {variant.id!r} is claimed by both {other.plugin} ({other.distribution}) "
                    f"and {where}",
                    file=file,
                )
        entry = Entry(spec=spec, file=file, plugin=info.name, distribution=info.distribution)
        self.papers[spec.id] = entry
        for variant in spec.variants:
            self.variants[variant.id] = (entry, variant)
        info.contributes.setdefault("specs", []).append(spec.id)

    def _add_method(self, info: PluginInfo, method: Any) -> None:
        check_method(method)
        if method.name in self.methods:
            other = self.methods[method.name][0]
            raise PluginError(f"method {method.name!r} is claimed by both {other} and {info.label}")
        self.methods[method.name] = (info.label, method)
        info.contributes.setdefault("methods", []).append(method.name)

    def _check_method_variants(self) -> None:
        """Refuse each paper with a method variant whose base or methods do not resolve (a base may
        be any paper's variant, so this runs once every spec is in); a refused paper's variants go,
        and so does every method variant built on them."""
        refused = True
        while refused:
            refused = False
            variants = {variant_id: variant for variant_id, (_, variant) in self.variants.items()}
            for entry in list(self.papers.values()):
                try:
                    for index, variant in enumerate(entry.spec.variants):
                        if variant.base is not None:
                            check_method_variant(variant, index, variants, self.methods)
                except PapersError as error:
                    del self.papers[entry.spec.id]
                    for variant in entry.spec.variants:
                        del self.variants[variant.id]
                    info = self.manager.plugins[entry.plugin]
                    info.contributes["specs"].remove(entry.spec.id)
                    self.manager.refuse(info, error.located(file=entry.file))
                    refused = True

    def _add_criterion(self, info: PluginInfo, criterion: Any) -> None:
        self._claim(info, "criterion", "criteria", self.criteria, check_criterion(criterion))

    def _add_optimizer(self, info: PluginInfo, optimizer: Any) -> None:
        self._claim(info, "optimizer", "optimizers", self.optimizers, check_optimizer(optimizer))

    def _claim(self, info: PluginInfo, kind: str, plural: str, pool: dict[str, Any], item: Any) -> None:
        """Add a named training piece; a name the core or another plugin has is refused, naming both."""
        if item.name in pool:
            other = pool[item.name][0]
            raise PluginError(f"{kind} {item.name!r} is claimed by both {other} and {info.label}")
        pool[item.name] = (info.label, item)
        info.contributes.setdefault(plural, []).append(item.name)

    def _add_check(self, info: PluginInfo, check: Any) -> None:
        if not isinstance(check, TrainingCheck):
            raise PluginError(f"papers_checks() returned {type(check).__name__}, not a TrainingCheck")
        for name in ("name", "variant", "data", "proxy"):
            if type(getattr(check, name)) is not str:
                raise PluginError(f"check {name} is {type(getattr(check, name)).__name__}, not str")
        where = info.label
        if check.name in self.checks:
            other = self.checks[check.name][0]
            raise PluginError(f"check {check.name!r} is claimed by both {other} and {where}")
        if check.variant not in self.variants and check.variant not in self.papers:
            raise PluginError(f"check {check.name!r} names no variant {check.variant!r}")
        self.checks[check.name] = (where, check)
        info.contributes.setdefault("checks", []).append(check.name)

    def training_checks(self, paper: str) -> list[TrainingCheck]:
        """The training checks of a paper's variants."""
        return [c for _, c in self.checks.values() if self.paper(c.variant).spec.id == paper]

    # -- queries ------------------------------------------------------------------------------

    def list(self, topic: str | None = None) -> list[Entry]:
        entries = sorted(self.papers.values(), key=lambda e: (e.spec.citation.year, e.spec.id))
        if topic is None:
            return entries
        return [e for e in entries if topic in e.spec.topics or e.spec.kind == topic]

    def library(self, spec: Spec) -> dict[str, Spec]:
        """The specs whose blocks ``spec`` reuses (those of its ``uses`` that are registered)."""
        return {paper: self.papers[paper].spec for paper in spec.uses if paper in self.papers}

    def paper(self, identifier: str) -> Entry:
        """A paper by its id, or the paper a variant id belongs to (the paper wins a tie)."""
        if identifier in self.papers:
            return self.papers[identifier]
        if identifier in self.variants:
            return self.variants[identifier][0]
        raise UnknownIdError(
            f"no paper or variant {identifier!r}{_suggest(identifier, self.papers, self.variants)}"
        )

    def variant(self, identifier: str) -> tuple[Entry, Variant]:
        if identifier in self.variants:
            return self.variants[identifier]
        if identifier in self.papers and self.papers[identifier].spec.variants:
            ids = ", ".join(v.id for v in self.papers[identifier].spec.variants)
            raise UnknownIdError(f"{identifier!r} is a paper; name one of its variants: {ids}")
        raise UnknownIdError(f"no variant {identifier!r}{_suggest(identifier, self.variants)}")


def _suggest(identifier: str, *pools: dict[str, Any]) -> str:
    import difflib

    names = [name for pool in pools for name in pool]
    close = difflib.get_close_matches(identifier, names, n=3)
    return f"; did you mean {', '.join(close)}?" if close else ""


def _load(item: Any) -> tuple[Spec, str]:
    if isinstance(item, Spec):  # validated again: model_construct skips validation
        label = "<Spec object>"
        try:
            document = item.model_dump_json(by_alias=True, exclude_unset=True, warnings=False)
        except (ValueError, TypeError, AttributeError) as exc:  # pydantic cannot serialise what it holds
            raise PluginError(f"a Spec that cannot be serialised: {describe(exc)}", file=label) from None
        spec = validate_spec_json(document.encode(), file=label)
        if spec is None:
            raise PluginError("a Spec that cannot be serialised", file=label)
        return spec, f"<{spec.id}>"
    if isinstance(item, (str, Path)):
        path = os.fspath(item)
        if not isinstance(path, str):
            raise PluginError(f"papers_specs() returned a path of {type(path).__name__}, not str")
        path = str.__str__(path)  # a plain str, whatever subclass the plugin used
        return load_spec_file(path), path
    if hasattr(item, "read_bytes"):  # an importlib.resources Traversable
        label = spec_label(item)
        try:
            text = item.read_bytes()
        except OSError as exc:
            raise SpecError(f"cannot read: {describe(exc)}", file=label) from None
        if not isinstance(text, bytes):
            raise PluginError(f"read_bytes() returned {type(text).__name__}, not bytes", file=label)
        return load_spec_text(bytes(text), file=label), label
    raise PluginError(f"papers_specs() returned {type(item).__name__}, not a path or a Spec")


_CORE = "the core (papers)"
_lock = threading.Lock()
_current: Registry | None = None


def get_registry() -> Registry:
    """The registry of the plugins installed in this environment, discovered once per process."""
    global _current
    with _lock:
        if _current is None:
            _current = Registry.discover()
        return _current


def reset_registry() -> None:
    """Forget the discovered registry (tests that change plugins or the environment)."""
    global _current
    with _lock:
        _current = None
