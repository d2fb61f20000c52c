"""The registry's index: what ``papers list`` shows, kept from the last discovery that validated it.

Validating a spec costs about 3 ms (pydantic), and importing pydantic and the spec models a tenth of
a second; a registry of 65 papers and more would spend most of ``papers list`` there. After a
discovery in which every plugin loaded and every contribution was accepted, the rows ``list`` needs
are written to ``$PAPERS_CACHE_DIR/index/<key>.json``. The key hashes everything the answer depends
on: this package's version and the code that validates, every loaded plugin (name, distribution,
version, and its module's source, for editable installs), and the bytes of every spec file the
plugins return. ``papers list`` computes the key (imports the plugin modules, calls their
``papers_specs`` hooks, reads the files: no pydantic, no torch) and answers from the entry if there
is one; otherwise it discovers the registry as before, validating every spec, and writes the entry.
A changed spec or plugin gives another key, so it is always validated again; a plugin that fails or
a contribution that is refused is reported by the full discovery, and no index is written for it.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from papers.errors import PapersError
from papers.files import cache_dir, write_atomic
from papers.plugins import PluginManager

_FORMAT = 1
_CODE = ("spec", "load", "registry", "plugins", "methods", "index")
"""The modules whose code decides what a discovery accepts and what a row holds."""


def _code_hash() -> str:
    digest = hashlib.sha256(f"{_FORMAT}".encode())
    root = Path(__file__).parent
    for name in _CODE:
        digest.update((root / f"{name}.py").read_bytes())
    return digest.hexdigest()


def key(manager: PluginManager) -> str | None:
    """The index key of the plugins ``manager`` loaded, or None where there is none to trust (a plugin
    failed, or a hook returned something other than spec files)."""
    from importlib.metadata import version

    digest = hashlib.sha256(json.dumps([version("papers"), _code_hash()]).encode())
    for info in manager.plugins.values():
        if info.error:
            return None
        module = sys.modules.get(info.module.partition(":")[0])
        source = getattr(module, "__file__", None) or ""
        code = hashlib.sha256(Path(source).read_bytes()).hexdigest() if source else ""
        digest.update(json.dumps([info.name, info.distribution, info.version, code]).encode())
    for info, items in manager.call("papers_specs"):
        for item in items:
            if isinstance(item, (str, Path)):
                data = Path(item).read_bytes()
            elif hasattr(item, "read_bytes") and not hasattr(item, "model_dump"):
                data = item.read_bytes()
            else:
                return None  # a ready Spec object: validated by a full discovery every time
            if not isinstance(data, bytes):
                return None
            digest.update(json.dumps([info.name, str(item)]).encode())
            digest.update(hashlib.sha256(data).digest())
    return digest.hexdigest()


def _path(index_key: str) -> Path | None:
    root = cache_dir()
    return None if root is None else root / "index" / f"{index_key}.json"


def rows(registry: Any) -> list[dict[str, Any]]:
    """What ``papers list`` shows of every paper of a discovered registry, oldest first."""
    return [
        {
            "id": e.spec.id,
            "name": e.spec.name,
            "title": e.spec.citation.title,
            "year": e.spec.citation.year,
            "venue": e.spec.citation.venue,
            "topic": e.spec.topics[0],
            "topics": list(e.spec.topics),
            "kind": e.spec.kind,
            "variants": [v.id for v in e.spec.variants],
            "plugin": e.plugin,
        }
        for e in registry.list()
    ]


def cached_rows() -> list[dict[str, Any]] | None:
    """The rows from the index, when the plugins and spec files are those it was written for."""
    manager = PluginManager(quiet=True)
    try:
        manager.load_entry_points()
        index_key = key(manager)
    except (PapersError, OSError):
        return None
    path = _path(index_key) if index_key else None
    if path is None:
        return None
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(data, list) or not all(isinstance(row, dict) and "id" in row for row in data):
        return None
    return data


def store(registry: Any) -> None:
    """Write the index of a registry whose discovery reported nothing (best effort)."""
    manager = registry.manager
    if any(info.error or info.refused for info in manager.plugins.values()):
        return
    try:
        index_key = key(manager)
        path = _path(index_key) if index_key else None
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(rows(registry), ensure_ascii=False).encode())
    except (PapersError, OSError):
        return
