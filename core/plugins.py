"""Discovering paper plugins: one entry point at a time, every contribution validated.

Plugins come from the ``papers`` entry-point group, the built-in papers included (their distribution
is ``papers``). A plugin is named by its entry point and known by ``name (distribution)``.

Isolation. Each entry point is imported on its own, and every call into a plugin (the import,
registration, each hook, and reading what a hook returns) runs under one guard that turns anything
the plugin raises into a reason it is skipped: ``SystemExit`` (a ``sys.exit`` in a plugin must never
end the process, nor with status 0 end ``papers check --all`` silently) and every other
``BaseException`` included, only ``KeyboardInterrupt`` excepted. A plugin that fails is reported
once on stderr, on one line naming the plugin, its distribution and what was wrong, and listed with
the reason by ``papers plugins``; everything else keeps working. With ``PAPERS_STRICT_PLUGINS=1``
(CI, tests) the first failure is a :class:`~papers.errors.PluginError` instead: one line and exit
status 2 from the CLI, the plugin's own exception chained as its cause.

Names. Built-ins load first. A plugin name belongs to whichever plugin loads first with it, and the
names of the built-ins are reserved even where a built-in is disabled, so a third-party plugin can
never take a built-in's place: a later plugin with a name that is taken is refused before it is
imported, the message naming both plugins and both distributions (``papers plugins`` lists it with
the reason; ``PluginManager.plugins`` keeps it under ``distribution:name``). Hooks are called in that
same order, whatever order pluggy keeps them in (``tryfirst``/``trylast`` cannot put a plugin's
papers before the built-ins'), so the first claim on a paper, variant, op or check wins and a later
claim is refused naming both plugins.

Choosing plugins. ``PAPERS_PLUGINS`` (comma-separated distributions; empty for none) chooses which
third-party distributions load besides the built-ins. ``PAPERS_DISABLE_PLUGINS`` skips plugins,
each item one of

- ``name``: every plugin of that name, whichever distribution it comes from (``vgg`` disables the
  built-in VGG and any third-party plugin that also calls itself ``vgg``: VGG is gone, as asked);
- ``distribution``: every plugin of that distribution;
- ``distribution:name``: that one plugin.

Distribution names match as pip compares them (case, ``-``, ``_`` and ``.`` aside). Disabling a
built-in does not free its name: a third-party plugin of that name is still refused. It does free the
paper and variant ids the built-in would have claimed: another plugin may then contribute a paper
``vgg``, listed with its own plugin and distribution.
"""

from __future__ import annotations

import os
import re
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
_MESSAGE_CHARS = 500


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
    """Why the plugin was skipped entirely (it failed to import or register, or its name is taken)."""
    refused: list[str] = field(default_factory=list)
    """Contributions that were refused (an invalid spec, a claimed id), each with the reason."""

    @property
    def label(self) -> str:
        return f"{self.name} ({self.distribution})"

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


def one_line(text: str, limit: int = _MESSAGE_CHARS) -> str:
    """``text`` on one printable line (a plugin's message may hold newlines or terminal escapes)."""
    flat = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def describe(exc: BaseException) -> str:
    """One line for an exception a plugin raised: its type and the first line of its message."""
    if isinstance(exc, PapersError):
        return one_line(_text(exc))
    first = _text(exc).strip().split("\n", 1)[0]
    name = one_line(type(exc).__name__, 80)
    return one_line(f"{name}: {first}" if first else name)


def _text(exc: BaseException) -> str:
    try:
        return str(exc)
    except KeyboardInterrupt:
        raise
    except BaseException:  # a plugin's exception whose __str__ fails
        return "(unprintable)"


def normalize(distribution: str) -> str:
    """A distribution name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", distribution).lower()


def _split(variable: str) -> set[str] | None:
    value = os.environ.get(variable)
    if value is None:
        return None
    return {part.strip() for part in value.split(",") if part.strip()}


def _distribution(entry_point: metadata.EntryPoint) -> tuple[str, str]:
    dist = entry_point.dist
    return (dist.name, dist.version) if dist else ("?", "?")


def _is_builtin(entry_point: metadata.EntryPoint) -> bool:
    return normalize(_distribution(entry_point)[0]) == BUILTIN_DISTRIBUTION


def _disabled(name: str, distribution: str, disabled: set[str]) -> bool:
    dist = normalize(distribution)
    for item in disabled:
        left, colon, right = item.rpartition(":")
        if colon and normalize(left) == dist and right == name:
            return True
        if not colon and (item == name or normalize(item) == dist):
            return True
    return False


def _entry_points() -> list[metadata.EntryPoint]:
    """Every entry point of the group, built-ins first, then by name and distribution."""
    return sorted(
        metadata.entry_points(group=GROUP),
        key=lambda ep: (not _is_builtin(ep), ep.name, normalize(_distribution(ep)[0])),
    )


class PluginManager:
    """Loads plugins and calls each plugin's hooks separately, so failures stay attributable."""

    def __init__(self, *, quiet: bool = False) -> None:
        self.quiet = quiet
        """Record failures without printing them (a look-up whose caller discovers again if any)."""
        self.pm = pluggy.PluginManager(GROUP)
        self.pm.add_hookspecs(hookspecs)
        self.plugins: dict[str, PluginInfo] = {}
        """Every plugin by name, in load order; one refused because its name is taken is kept under
        ``distribution:name``."""
        self.reserved: dict[str, PluginInfo] = {}
        """The built-in plugins by name, disabled ones included: their names are never free."""

    def load_entry_points(self) -> None:
        wanted = _split("PAPERS_PLUGINS")
        wanted = {normalize(d) for d in wanted} if wanted is not None else None
        disabled = _split("PAPERS_DISABLE_PLUGINS") or set()
        for entry_point in _entry_points():
            distribution, version = _distribution(entry_point)
            info = PluginInfo(
                name=entry_point.name, distribution=distribution, version=version, module=entry_point.value
            )
            builtin = _is_builtin(entry_point)
            if builtin:
                self.reserved.setdefault(info.name, info)
            elif wanted is not None and normalize(distribution) not in wanted:
                continue
            if _disabled(info.name, distribution, disabled):
                continue
            if not self._name_is_free(info):
                continue
            try:
                module = entry_point.load()
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # a plugin's import may raise anything, SystemExit included
                self.fail(info, f"import failed: {describe(exc)}", cause=exc)
                continue
            self.register(module, info)

    def _name_is_free(self, info: PluginInfo) -> bool:
        """Refuse (before it is imported) a plugin whose name another plugin or a built-in has."""
        other = self.plugins.get(info.name)
        reserved = self.reserved.get(info.name)
        if other is None and (reserved is None or reserved is info):
            return True
        owner = other if other is not None else reserved
        assert owner is not None
        builtin = "the built-in " if owner is reserved or owner.distribution == BUILTIN_DISTRIBUTION else ""
        self.fail(
            info,
            f"the plugin name {info.name!r} is taken by {builtin}{owner.label}",
            key=f"{info.distribution}:{info.name}",
        )
        return False

    def register(self, plugin: ModuleType | object, info: PluginInfo) -> None:
        """Register a plugin object (a module or any object with hook implementations)."""
        if not self._name_is_free(info):
            return
        try:
            self.pm.register(plugin, name=info.name)
            info.hooks = sorted(impl.name for impl in self.pm.get_hookcallers(plugin) or [])
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # pluggy reads every attribute of the plugin: its code runs
            if self.pm.has_plugin(info.name):
                self.pm.unregister(name=info.name)
            self.fail(info, f"registration failed: {describe(exc)}", cause=exc)
            return
        self.plugins[info.name] = info

    def fail(
        self, info: PluginInfo, reason: str, *, cause: BaseException | None = None, key: str | None = None
    ) -> None:
        """Skip a plugin entirely (in strict mode, raise a :class:`PluginError` instead)."""
        reason = one_line(reason)
        if strict():
            raise PluginError(one_line(f"plugin {info.label}: {reason}")) from cause
        info.error = reason
        self.plugins[key or info.name] = info
        if not self.quiet:
            print(
                one_line(f"papers: plugin {info.label} skipped: {reason}", 2 * _MESSAGE_CHARS),
                file=sys.stderr,
            )

    def refuse(
        self, info: PluginInfo, error: PapersError | str, *, cause: BaseException | None = None
    ) -> None:
        """Refuse one contribution of a plugin (in strict mode, raise a :class:`PluginError`)."""
        reason = one_line(str(error))
        if strict():
            raise PluginError(one_line(f"plugin {info.label}: {reason}")) from (
                cause if cause is not None else error if isinstance(error, BaseException) else None
            )
        info.refused.append(reason)
        if not self.quiet:
            print(one_line(f"papers: plugin {info.label}: {reason}", 2 * _MESSAGE_CHARS), file=sys.stderr)

    def call(self, hook: str) -> list[tuple[PluginInfo, list[Any]]]:
        """Call one hook plugin by plugin, in load order (built-ins first); a plugin that raises
        (anything but KeyboardInterrupt) or returns a non-list is skipped from then on."""
        impls = {impl.plugin_name: impl for impl in getattr(self.pm.hook, hook).get_hookimpls()}
        results = []
        for name, info in list(self.plugins.items()):
            impl = impls.get(name)
            if impl is None or info.error:
                continue
            try:
                value = impl.function()
                items = list(value) if isinstance(value, (list, tuple)) else None
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # SystemExit included: a plugin never ends the process
                self.fail(info, f"{hook}() failed: {describe(exc)}", cause=exc)
                continue
            if items is None:
                self.fail(info, f"{hook}() returned {type(value).__name__}, not a list")
                continue
            results.append((info, items))
        return results


def spec_label(item: Any) -> str:
    """A readable name for a contributed spec file (for messages)."""
    if isinstance(item, (str, Path)):
        return one_line(os.fspath(item))
    name = getattr(item, "name", None)
    return one_line(name if isinstance(name, str) else f"<{type(item).__name__}>")
