"""Writing files so that no reader, and no crash, ever sees half of one."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: Path, content: bytes, *, durable: bool = False) -> None:
    """Write ``content`` to a temporary file beside ``path`` and rename it into place.

    ``durable`` also flushes it to the disk before the rename (checkpoints); caches skip that.
    Raises ``OSError``; the temporary file is removed whatever happens.
    """
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(temporary, "wb") as handle:
            handle.write(content)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()
