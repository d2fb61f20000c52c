"""The registry: every paper, variant and op that the loaded plugins contribute.

Building it reads YAML and validates specs; it never imports torch, so ``papers list`` stays fast.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from papers.checks import TrainingCheck
from papers.errors import PapersError, PluginError, SpecError, UnknownIdError
from papers.load import load_spec_file, load_spec_text
from papers.ops import Catalogue, Op
from papers.plugins import PluginInfo, PluginManager, spec_label, strict
from papers.spec import Spec, Variant


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
        for info, ops in manager.call("papers_ops"):
            for op in ops:
                self._add_op(info, op)
        for info, items in manager.call("papers_specs"):
            for item in items:
                self._add_spec(info, item)
        self.checks: dict[str, tuple[str, TrainingCheck]] = {}
        """Training checks by name, each with the plugin (and distribution) that contributed it."""
        for info, items in manager.call("papers_checks"):
            for item in items:
                self._add_check(info, item)

    @classmethod
    def discover(cls) -> Registry:
        manager = PluginManager()
        manager.load_entry_points()
        return cls(manager)

    # -- contributions ------------------------------------------------------------------------

    def _refuse(self, info: PluginInfo, error: PapersError) -> None:
        if strict():
            raise error
        self.manager.refuse(info, str(error))

    def _add_op(self, info: PluginInfo, op: Any) -> None:
        if not isinstance(op, Op):
            self._refuse(info, PluginError(f"papers_ops() returned {type(op).__name__}, not papers.ops.Op"))
            return
        try:
            self.catalogue.add(op, origin=f"{info.name} ({info.distribution})")
        except PluginError as error:
            self._refuse(info, error)
            return
        info.contributes.setdefault("ops", []).append(op.name)

    def _add_spec(self, info: PluginInfo, item: Any) -> None:
        try:
            spec, file = _load(item)
        except PapersError as error:
            self._refuse(info, error)
            return
        where = f"{info.name} ({info.distribution})"
        if spec.id in self.papers:
            other = self.papers[spec.id]
            self._refuse(
                info,
                PluginError(
                    f"paper id {spec.id!r} is claimed by both {other.plugin} ({other.distribution}) "
                    f"and {where}",
                    file=file,
                ),
            )
            return
        for variant in spec.variants:
            if variant.id in self.variants:
                other = self.variants[variant.id][0]
                self._refuse(
                    info,
                    PluginError(
                        f"variant id {variant.id!r} is claimed by both {other.plugin} ({other.distribution}) "
                        f"and {where}",
                        file=file,
                    ),
                )
                return
        entry = Entry(spec=spec, file=file, plugin=info.name, distribution=info.distribution)
        self.papers[spec.id] = entry
        for variant in spec.variants:
            self.variants[variant.id] = (entry, variant)
        info.contributes.setdefault("specs", []).append(spec.id)

    def _add_check(self, info: PluginInfo, check: Any) -> None:
        if not isinstance(check, TrainingCheck):
            self._refuse(
                info,
                PluginError(f"papers_checks() returned {type(check).__name__}, not a TrainingCheck"),
            )
            return
        where = f"{info.name} ({info.distribution})"
        if check.name in self.checks:
            other = self.checks[check.name][0]
            self._refuse(info, PluginError(f"check {check.name!r} is claimed by both {other} and {where}"))
            return
        if check.variant not in self.variants:
            self._refuse(info, PluginError(f"check {check.name!r} names no variant {check.variant!r}"))
            return
        self.checks[check.name] = (where, check)
        info.contributes.setdefault("checks", []).append(check.name)

    def training_checks(self, paper: str) -> list[TrainingCheck]:
        """The training checks of a paper's variants."""
        return [c for _, c in self.checks.values() if self.variants[c.variant][0].spec.id == paper]

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
    if isinstance(item, Spec):
        return item, f"<{item.id}>"
    if isinstance(item, (str, Path)):
        return load_spec_file(item), str(item)
    if hasattr(item, "read_bytes"):  # an importlib.resources Traversable
        label = spec_label(item)
        try:
            text = item.read_bytes()
        except OSError as exc:
            raise SpecError(f"cannot read: {exc}", file=label) from None
        return load_spec_text(text, file=label), label
    raise PluginError(f"papers_specs() returned {type(item).__name__}, not a path or a Spec")


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
