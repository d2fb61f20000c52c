"""The quantization papers' proxy step, shared: a method variant's base trained on the proxy data, then
``papers compress`` run on those weights with the data (see :func:`compress_pretrained`)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any


def compress_pretrained(
    variant_id: str,
    method: str,
    data: str,
    *,
    epochs: int,
    limit: int | None = None,
    latency_runs: int = 3,
    threads: int | None = 1,
) -> dict[str, Any]:
    """Train method variant ``variant_id``'s base on ``data`` (its recipe, ``epochs`` passes, a fixed
    seed; ``threads`` intra-op threads, none: as they are), write its weights and run ``papers compress``
    on them with ``data`` (``method``: the variant's method the proxy set-up is for). Gives the report."""
    from safetensors.torch import save_file

    from papers.compression import compress
    from papers.train import intra_op_threads
    from papers_plugins.compression.pruning import pretrained, proxy_setup

    setup = proxy_setup(variant_id, method, data, limit)
    with (
        intra_op_threads(threads),
        pretrained(setup, epochs) as (model, _, _),
        tempfile.TemporaryDirectory() as scratch,
    ):
        weights = Path(scratch) / "trained.safetensors"
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
        return compress(
            variant_id, out=Path(scratch) / "out", weights=weights, data=data, latency_runs=latency_runs
        )
