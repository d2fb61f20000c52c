"""Equivalence with a reference library model: its state_dict, every batch norm's statistics and affine
terms randomised first, loads into ours strictly, and every output is the same.

With the library's initial batch norms (mean 0, variance 1, weight 1, bias 0) a batch norm is the
identity in eval mode, so a ReLU and a batch norm in the wrong order give exactly the same outputs;
randomised ones tell them apart (``tests/test_references.py`` shows both).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

import papers
from papers.spec import Equivalence

SEED = 0
BATCH = 2
RELATIVE_TOLERANCE = 1e-5


def reference_cases() -> list[tuple[str, int, Equivalence]]:
    """Every comparison the registry's specs declare: (variant, index, case) for each variant that
    names a reference, its `equivalence` entries or one default comparison."""
    from papers.registry import get_registry

    registry = get_registry()
    cases = []
    for variant_id in sorted(registry.variants):
        _, variant = registry.variant(variant_id)
        if variant.reference is not None:
            for index, case in enumerate(variant.equivalence or [Equivalence()]):
                cases.append((variant_id, index, case))
    return cases


def randomise_batch_norms(model: nn.Module, seed: int = SEED) -> None:
    """Give every batch norm random running statistics (positive variances) and affine terms (weights of
    either sign, never near zero), from a fixed seed.

    A batch norm is any module with running statistics: BatchNorm1d/2d/3d and SyncBatchNorm, timm's
    BatchNormAct2d, torchvision's FrozenBatchNorm2d (whose affine terms are buffers).
    """
    generator = torch.Generator().manual_seed(seed)

    def uniform(like: torch.Tensor, low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(like.shape, generator=generator)

    with torch.no_grad():
        for module in model.modules():
            mean, var = getattr(module, "running_mean", None), getattr(module, "running_var", None)
            if not isinstance(mean, torch.Tensor) or not isinstance(var, torch.Tensor):
                continue
            mean.copy_(uniform(mean, -0.5, 0.5))
            var.copy_(uniform(var, 0.5, 2.0))
            weight, bias = getattr(module, "weight", None), getattr(module, "bias", None)
            if isinstance(weight, torch.Tensor):
                sign = torch.randint(0, 2, weight.shape, generator=generator) * 2 - 1
                weight.copy_(sign * uniform(weight, 0.5, 1.5))
            if isinstance(bias, torch.Tensor):
                bias.copy_(uniform(bias, -0.5, 0.5))


def named_outputs(out: Any) -> list[tuple[str, torch.Tensor]]:
    """A model's outputs as (name, tensor) pairs: a tensor, a named tuple, a tuple or list, or a dict."""
    if isinstance(out, torch.Tensor):
        return [("output", out)]
    if isinstance(out, Mapping):
        return [(str(name), tensor) for name, tensor in out.items()]
    if isinstance(out, tuple) and hasattr(out, "_fields"):
        return list(zip(out._fields, out, strict=True))
    if isinstance(out, (tuple, list)) and all(isinstance(item, Mapping) for item in out):  # detections
        return [(f"{index}.{key}", tensor) for index, item in enumerate(out) for key, tensor in item.items()]
    if isinstance(out, (tuple, list)):
        return [(str(index), tensor) for index, tensor in enumerate(out)]
    raise TypeError(f"not a tensor or a collection of tensors: {type(out).__name__}")


def relative_difference(ours: torch.Tensor, reference: torch.Tensor) -> float:
    """max |a − b| / max |b| (0 where both are zero everywhere, inf where only b is)."""
    largest = float(reference.abs().max())
    difference = float((ours - reference).abs().max())
    return difference / largest if largest else (0.0 if difference == 0 else float("inf"))


def assert_same_outputs(ours: Any, reference: Any, names: Mapping[str, str] | None = None) -> None:
    """Every output of ``ours`` equals the reference's within max |a − b| ≤ 1e-5 · max |b|, and neither
    returns an output the other lacks. ``names`` maps our output names to the reference's; without it
    the outputs are matched by position."""
    mine, theirs = named_outputs(ours), named_outputs(reference)
    if names is None:
        assert len(mine) == len(theirs), (
            f"ours returns {[n for n, _ in mine]}, the reference {[n for n, _ in theirs]}"
        )
        pairs = [(f"{a}/{b}", x, y) for (a, x), (b, y) in zip(mine, theirs, strict=True)]
    else:
        by_name = dict(theirs)
        assert set(names) == {n for n, _ in mine}, f"ours returns {[n for n, _ in mine]}, mapped {names}"
        assert set(names.values()) == set(by_name), (
            f"the reference returns {sorted(by_name)}, mapped {sorted(names.values())}"
        )
        pairs = [(f"{a}/{names[a]}", x, by_name[names[a]]) for a, x in mine]
    for name, a, b in pairs:
        assert a.shape == b.shape, (name, tuple(a.shape), tuple(b.shape))
        difference = relative_difference(a, b)
        assert difference <= RELATIVE_TOLERANCE, f"{name}: relative difference {difference:.3g}"


def compare_with_reference(
    ours: nn.Module,
    reference: nn.Module,
    inputs: Sequence[torch.Tensor],
    *,
    names: Mapping[str, str] | None = None,
    training_flag: bool = False,
    randomise: bool = True,
) -> None:
    """Randomise the reference's batch norms, load its state_dict into ours (strict; ours may be on the
    meta device), and assert that both give the same outputs in eval mode.

    ``training_flag`` sets the reference's own ``training`` attribute after ``eval()``: torchvision's
    GoogLeNet and Inception-v3 compute their auxiliary heads only when it is set, while every layer
    (batch norms, dropout) stays in eval mode.
    """
    if randomise:
        randomise_batch_norms(reference)
    ours.load_state_dict(reference.state_dict(), strict=True, assign=True)
    ours.eval()
    reference.eval()
    reference.training = training_flag
    with torch.no_grad():  # each model gets its own copy of the inputs: an in-place op may change them
        mine = ours(*[x.clone() for x in inputs])
        assert_same_outputs(mine, reference(*[x.clone() for x in inputs]), names)


def assert_matches_reference(variant_id: str, case: Equivalence | None = None) -> None:
    """One comparison a spec declares: the reference built with ``case.kwargs``, ours with
    ``case.options``, a random batch of two of the graph's input shape under those options."""
    case = case or Equivalence()
    torch.manual_seed(SEED)
    reference = papers.reference_model(variant_id, **case.kwargs)
    ours = papers.build_model(variant_id, device="meta", **case.options)
    shapes = papers.expand_variant(variant_id, **case.options).inputs
    inputs = [torch.randn(BATCH, *shape) for shape in shapes.values()]
    compare_with_reference(ours, reference, inputs, names=case.outputs, training_flag=case.training_flag)
