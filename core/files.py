"""Writing files so that no reader, and no crash, ever sees half of one; where caches live."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: Path, content: bytes, *, durable: bool = False, overwrite: bool = True) -> None:
    """Write ``content`` to a temporary file beside ``path`` and rename it into place.

    ``durable`` also flushes it to the disk before the rename (checkpoints); caches skip that.
    ``overwrite=False`` links the file into place instead, which fails with ``FileExistsError`` if
    ``path`` exists, even if it appeared while the content was written.
    Raises ``OSError``; the temporary file is removed whatever happens.
    """
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(temporary, "wb") as handle:
            handle.write(content)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        place(temporary, path, overwrite=overwrite)
    finally:
        if temporary.exists():
            temporary.unlink()


def place(temporary: Path, path: Path, *, overwrite: bool) -> None:
    """Rename a finished ``temporary`` file to ``path``; without ``overwrite`` it is linked into place
    instead, which raises ``FileExistsError`` if ``path`` exists, even one that appeared meanwhile."""
    if overwrite:
        os.replace(temporary, path)
        return
    try:
        os.link(temporary, path)  # never replaces: an existing path is an error
    except FileExistsError:
        raise
    except OSError:  # a file system without hard links: check, then rename
        if os.path.lexists(path):
            raise FileExistsError(path) from None
        os.replace(temporary, path)


def cache_dir() -> Path | None:
    """The cache folder (``PAPERS_CACHE_DIR``, default ``$XDG_CACHE_HOME/papers``); None when
    ``PAPERS_NO_CACHE`` is set. Parsed specs and measurements live in subfolders of it."""
    if os.environ.get("PAPERS_NO_CACHE", "") not in ("", "0"):
        return None
    return Path(
        os.environ.get("PAPERS_CACHE_DIR")
        or os.path.join(
            os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "papers"
        )
    )
