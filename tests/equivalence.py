"""Equivalence with a reference library model: its state_dict loads into ours strictly, same outputs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

import papers


def assert_equivalent(
    variant_id: str,
    input_shape: tuple[int, ...],
    *,
    reference_kwargs: dict[str, Any] | None = None,
    build_options: dict[str, Any] | None = None,
    ours_output: Callable[[Any], torch.Tensor] = lambda out: out,
    batch: int = 2,
) -> None:
    """Load the reference's state_dict into our variant (strict) and compare eval-mode outputs.

    Equal means max |a − b| ≤ 1e-5 · max |b|: randomly initialised deep networks can reach large outputs.
    """
    torch.manual_seed(0)
    reference = papers.reference_model(variant_id, **(reference_kwargs or {})).eval()
    ours = papers.build_model(variant_id, device="meta", **(build_options or {}))
    ours.load_state_dict(reference.state_dict(), strict=True, assign=True)
    ours.eval()
    x = torch.randn(batch, *input_shape)
    with torch.no_grad():
        a, b = ours_output(ours(x)), reference(x)
    assert a.shape == b.shape, (a.shape, b.shape)
    assert (a - b).abs().max() <= 1e-5 * b.abs().max(), float((a - b).abs().max())
