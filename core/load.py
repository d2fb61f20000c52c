"""Reading spec files: a safe YAML loader with limits, then validation into a :class:`Spec`.

YAML is read with PyYAML's safe loader (the C one where PyYAML has it: about six times faster).
That loader follows YAML 1.1, which reads ``5e-4`` as a string: write ``5.0e-4``. Strict specs then
refuse the string instead of converting it.

Even the C loader needs about 1 ms per KiB (its constructor is Python), so the parsed document of a
spec that validated is cached as JSON, keyed by a hash of the file's bytes; JSON reads some fifty
times faster. ``PAPERS_CACHE_DIR`` moves the cache (default ``$XDG_CACHE_HOME/papers``) and
``PAPERS_NO_CACHE=1`` turns it off. Validation always runs; only parsing is skipped.

An entry is used only when it validates as a spec: one that is damaged, not JSON, not a spec, or
larger than any document a spec file gives is ignored, the file parsed again and the entry rewritten.
What an entry cannot prove is that it is the parse of this file: whoever can write the cache folder
can put another valid spec in its place, so the folder must be the user's own (as the default is).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

from papers.errors import SpecError
from papers.files import cache_dir, write_atomic
from papers.spec import Spec, validate_spec, validate_spec_json

MAX_FILE_BYTES = 2 * 1024 * 1024
MAX_DEPTH = 64
MAX_ELEMENTS = 200_000

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_yaml(text: str | bytes, *, file: str | None = None) -> Any:
    """Parse YAML safely, refusing oversized input, deep nesting and alias expansion bombs."""
    if len(text) > MAX_FILE_BYTES:
        raise SpecError(f"file is larger than {MAX_FILE_BYTES // 1024} KiB", file=file)
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SpecError(f"not UTF-8 text (byte {exc.start})", file=file) from None
    if "\x00" in text:
        raise SpecError("not a text file (it holds NUL bytes)", file=file)
    try:
        data = yaml.load(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = exc.problem or str(exc)
        raise SpecError(f"not valid YAML{where}: {problem}", file=file) from None
    except (yaml.YAMLError, RecursionError, ValueError) as exc:
        raise SpecError(
            f"not valid YAML: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", file=file
        ) from None
    _check_size(data, file)
    return data


def _check_size(data: Any, file: str | None) -> None:
    """Walk the parsed document as validation will, counting aliases as often as they are used."""
    stack = [(data, 1)]
    seen = 0
    while stack:
        value, depth = stack.pop()
        seen += 1
        if seen > MAX_ELEMENTS:
            raise SpecError(f"document expands to more than {MAX_ELEMENTS} elements (alias bomb?)", file=file)
        if depth > MAX_DEPTH:
            raise SpecError(f"document nests deeper than {MAX_DEPTH} levels", file=file)
        if isinstance(value, dict):
            stack.extend((item, depth + 1) for item in value.values())
            stack.extend((key, depth + 1) for key in value if not isinstance(key, str))
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value)


def load_spec_text(text: str | bytes, *, file: str | None = None) -> Spec:
    """Parse (or take from the cache) and validate the text of one spec file."""
    raw = text.encode("utf-8") if isinstance(text, str) else text
    cached = _cache_path(raw)
    document = _read_cache(cached)
    if document is not None:
        try:
            spec = validate_spec_json(document, file=file)
        except SpecError:  # valid JSON but no spec: a damaged or foreign entry, never the file's fault
            spec = None
        if spec is not None:
            return spec
    data = read_yaml(raw, file=file)
    spec = validate_spec(data, file=file)
    _write_cache(cached, data)
    return spec


_CACHE_VERSION = f"1-{MAX_FILE_BYTES}-{MAX_DEPTH}-{MAX_ELEMENTS}-{yaml.__version__}-{_Loader.__name__}"


def _cache_path(raw: bytes) -> Path | None:
    root = cache_dir()
    if root is None:
        return None
    key = hashlib.sha256(_CACHE_VERSION.encode() + b"\0" + raw).hexdigest()
    return root / "yaml" / f"{key}.json"


MAX_CACHE_BYTES = 4 * MAX_FILE_BYTES
"""The largest entry read or written: aliases can make a document's JSON larger than its YAML."""


def _read_cache(path: Path | None) -> bytes | None:
    if path is None:
        return None
    try:
        with open(path, "rb") as handle:
            document = handle.read(MAX_CACHE_BYTES + 1)
    except OSError:
        return None
    return document if len(document) <= MAX_CACHE_BYTES else None


def _write_cache(path: Path | None, data: Any) -> None:
    """Cache a document only where JSON gives it back exactly (no dates, no non-string keys)."""
    if path is None:
        return
    try:
        text = json.dumps(data, ensure_ascii=False, allow_nan=False)
        if len(text) > MAX_CACHE_BYTES or json.loads(text) != data:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, text.encode())
    except (OSError, ValueError, TypeError):
        return


def load_spec_file(path: str | Path) -> Spec:
    """Read, parse and validate one spec file."""
    name = str(path)
    try:
        with open(path, "rb") as handle:
            text = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise SpecError(f"cannot read: {exc.strerror or exc}", file=name) from None
    return load_spec_text(text, file=name)


def dump_spec(spec: Spec) -> str:
    """The YAML text of a spec (no defaults that were not set, aliases as written)."""
    data = spec.model_dump(mode="json", by_alias=True, exclude_unset=True)
    return yaml.dump(
        data, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper), sort_keys=False, allow_unicode=True
    )
