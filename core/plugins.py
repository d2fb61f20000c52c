"""Discovering paper plugins: one entry point at a time, every contribution validated.

Plugins come from the ``papers`` entry-point group, the built-in papers included. Each entry point
is loaded on its own, so a plugin that fails to import is recorded with the reason and skipped;
``PAPERS_STRICT_PLUGINS=1`` re-raises instead (CI, tests). ``PAPERS_PLUGINS`` (comma-separated
distribution names; empty for none) chooses which third-party distributions load besides the
built-ins, and ``PAPERS_DISABLE_PLUGINS`` names plugins or distributions to skip.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy

from papers import hookspecs
from papers.errors import PapersError, PluginError

GROUP = "papers"
BUILTIN_DISTRIBUTION = "papers"


@dataclass
class PluginInfo:
    """One loaded (or failed) plugin, as ``papers plugins`` shows it."""

    name: str
    distribution: str
    version: str
    module: str
    hooks: list[str] = field(default_factory=list)
    contributes: dict[str, list[str]] = field(default_factory=dict)
    error: str | None = None
    """Why the plugin was skipped entirely (it failed to import or register)."""
    refused: list[str] = field(default_factory=list)
    """Contributions that were refused (an invalid spec, a claimed id), each with the reason."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "module": self.module,
            "hooks": self.hooks,
            "contributes": self.contributes,
            "error": self.error,
            "refused": self.refused,
        }


def strict() -> bool:
    return os.environ.get("PAPERS_STRICT_PLUGINS", "") not in ("", "0")


def _split(variable: str) -> set[str] | None:
    value = os.environ.get(variable)
    if value is None:
        return None
    return {part.strip() for part in value.split(",") if part.strip()}


def _entry_points() -> list[metadata.EntryPoint]:
    wanted = _split("PAPERS_PLUGINS")
    disabled = _split("PAPERS_DISABLE_PLUGINS") or set()
    chosen = []
    for entry_point in metadata.entry_points(group=GROUP):
        distribution = entry_point.dist.name if entry_point.dist else "?"
        if wanted is not None and distribution != BUILTIN_DISTRIBUTION and distribution not in wanted:
            continue
        if entry_point.name in disabled or distribution in disabled:
            continue
        chosen.append(entry_point)
    return sorted(chosen, key=lambda ep: (ep.dist.name != BUILTIN_DISTRIBUTION if ep.dist else True, ep.name))


class PluginManager:
    """Loads plugins and calls each plugin's hooks separately, so failures stay attributable."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(GROUP)
        self.pm.add_hookspecs(hookspecs)
        self.plugins: dict[str, PluginInfo] = {}

    def load_entry_points(self) -> None:
        for entry_point in _entry_points():
            dist = entry_point.dist
            info = PluginInfo(
                name=entry_point.name,
                distribution=dist.name if dist else "?",
                version=dist.version if dist else "?",
                module=entry_point.value,
            )
            if entry_point.name in self.plugins:
                other = self.plugins[entry_point.name]
                self.fail(info, f"plugin name {entry_point.name!r} is also used by {other.distribution}")
                continue
            try:
                module = entry_point.load()
            except Exception as exc:  # a plugin's import may raise anything
                if strict():
                    raise
                self.fail(info, f"import failed: {type(exc).__name__}: {exc}")
                continue
            self.register(module, info)

    def register(self, plugin: ModuleType | object, info: PluginInfo) -> None:
        """Register a plugin object (a module or any object with hook implementations)."""
        try:
            self.pm.register(plugin, name=info.name)
        except (ValueError, pluggy.PluginValidationError) as exc:
            if strict():
                raise
            self.fail(info, f"registration failed: {exc}")
            return
        info.hooks = sorted(impl.name for impl in self.pm.get_hookcallers(plugin) or [])
        self.plugins[info.name] = info

    def fail(self, info: PluginInfo, reason: str) -> None:
        info.error = reason
        self.plugins[info.name] = info
        print(f"papers: plugin {info.name} ({info.distribution}) skipped: {reason}", file=sys.stderr)

    def refuse(self, info: PluginInfo, reason: str) -> None:
        info.refused.append(reason)
        print(f"papers: plugin {info.name} ({info.distribution}): {reason}", file=sys.stderr)

    def call(self, hook: str) -> list[tuple[PluginInfo, list[Any]]]:
        """Call one hook plugin by plugin; a plugin that raises or returns a non-list is skipped."""
        results = []
        for impl in getattr(self.pm.hook, hook).get_hookimpls():
            info = self.plugins[impl.plugin_name]
            if info.error:
                continue
            try:
                value = impl.function()
                if not isinstance(value, (list, tuple)):
                    raise PluginError(f"{hook}() returned {type(value).__name__}, not a list")
            except Exception as exc:
                if strict():
                    raise
                message = exc.message if isinstance(exc, PapersError) else f"{type(exc).__name__}: {exc}"
                self.fail(info, f"{hook}() failed: {message}")
                continue
            results.append((info, list(value)))
        return results


def spec_label(item: Any) -> str:
    """A readable name for a contributed spec file (for messages)."""
    if isinstance(item, (str, Path)):
        return str(item)
    return str(getattr(item, "name", item))
