"""Park et al., "Faster CNNs with Direct Sparse Convolutions and Guided Pruning" (ICLR 2017, arXiv
1608.01409): guided pruning, which prunes a convolution only where its sparsity will make it faster.

The paper's performance model (Section 3) gives, per layer and machine, the range of sparsity in which
the direct sparse convolution beats the dense one; guided pruning spends the pruning where a layer
lands in that range and leaves a convolution dense where it would not. Here the range's lower end is
measured, not modelled: for each convolution the settings name, its shape (channels, kernel, stride,
padding, the input it sees at the settings' ``batch``) is timed on this machine by
:func:`papers_plugins.compression.sparse_conv.time_geometry` at the settings' grid of sparsities, the
table cached for the process, and :func:`~papers_plugins.compression.sparse_conv.break_even` reads
the sparsity from which the sparse kernel is faster. A convolution is pruned to its target sparsity
only if the target reaches that break-even; a fully connected layer, which the paper prunes for size,
is pruned to its target in any case. Pruning itself is Han et al.'s magnitude pruning with
retraining (:mod:`papers_plugins.compression.pruning`), where data is given.

The rewrite turns each convolution the settings name into ``sparse_conv2d``
(:class:`~papers_plugins.compression.sparse_conv.SparseConv2d`: ``nn.Conv2d``'s weights and arguments),
which times its sparse kernel against ``F.conv2d`` on its own weights and input and runs the faster:
so the model ``papers compress`` writes and times runs the sparse kernel in exactly the layers where
it measured faster here, and its report's speed-up is that timing. A layer left dense runs
``F.conv2d``. What guided pruning keeps depends on this machine's timings, so the settings alone fix
no kept-weight count: the method measures nothing statically.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field

from papers.errors import SpecError
from papers.graph import FlatGraph
from papers.methods import Method, MethodContext, Settings

if TYPE_CHECKING:
    from papers_plugins.compression.sparse_conv import Geometry, Timing

SPARSE_OP = "sparse_conv2d"
CONV_OPS = frozenset({"conv2d", SPARSE_OP})
LINEAR_OPS = frozenset({"linear"})

Rate = Annotated[float, Field(ge=0, lt=1)]
"""A pruning rate (a sparsity): the fraction of a layer's weights removed, in [0, 1)."""


class GuidedSettings(Settings):
    """The settings of ``guided_prune``."""

    sparsity: dict[str, Rate] = Field(
        description="Each layer's target sparsity (pruning rate, in [0, 1)), by node name: a "
        "convolution is pruned to it only where the sparse kernel measured faster at it; a fully "
        "connected layer always."
    )
    grid: list[Rate] = Field(
        [0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99],
        min_length=2,
        description="The sparsities at which each convolution's shape is timed, dense against sparse.",
    )
    batch: int = Field(1, ge=1, le=1024, description="The batch the timings run at.")
    repeats: int = Field(
        5, ge=1, le=1000, description="Timed runs of each kernel per sparsity (the fastest counts)."
    )
    iterations: int = Field(1, ge=1, le=100, description="Prune-and-retrain rounds per kind of layer.")
    retrain_epochs: int = Field(0, ge=0, le=1000, description="Epochs of retraining after each round.")
    retrain_lr: float = Field(1.0e-3, gt=0, description="SGD rate while retraining.")
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5.0e-4, ge=0)
    batch_size: int = Field(64, ge=1, le=65536)


@dataclass(frozen=True)
class Decision:
    """What guided pruning chose for one layer, and the measurements it chose by."""

    layer: str
    kind: str
    """``conv`` or ``fc``."""
    target: float
    pruned: bool
    geometry: Geometry | None = None
    timings: tuple[Timing, ...] = ()
    break_even: float | None = None
    """The sparsity from which the sparse kernel measured faster; ``None``: at none of the grid's."""

    def describe(self) -> str:
        if self.kind == "fc":
            return f"{self.layer}: fully connected, pruned to {self.target:.0%}"
        assert self.geometry is not None
        even = "never faster" if self.break_even is None else f"faster from {self.break_even:.0%}"
        verb = "pruned to" if self.pruned else "left dense at target"
        return f"{self.layer} ({self.geometry.label()}): sparse kernel {even}; {verb} {self.target:.0%}"


def check_settings(flat: FlatGraph, settings: GuidedSettings) -> FlatGraph:
    """The rewrite: every convolution the settings name becomes ``sparse_conv2d`` (the same weights),
    once each named layer is a convolution or a linear layer of the graph."""
    kinds = {node.name: node.op for node in flat.nodes}
    prunable = sorted(name for name, op in kinds.items() if op in CONV_OPS | LINEAR_OPS)
    for name in settings.sparsity:
        if kinds.get(name) not in CONV_OPS | LINEAR_OPS:
            known = ", ".join(prunable[:12]) or "none"
            raise SpecError(
                f"settings.sparsity names {name!r}, which is no convolution or linear layer of the base "
                f"model (its layers: {known}{', ...' if len(prunable) > 12 else ''})"
            )
    if not settings.sparsity:
        raise SpecError("settings.sparsity names no layer; nothing would be pruned")
    nodes = tuple(
        replace(node, op=SPARSE_OP) if node.name in settings.sparsity and node.op == "conv2d" else node
        for node in flat.nodes
    )
    return replace(flat, nodes=nodes)


def layer_inputs(flat: FlatGraph, names: list[str], batch: int) -> dict[str, tuple[int, ...]]:
    """The input shape each named layer sees at ``batch`` (a forward pass on the meta device)."""
    import torch

    from papers.build import build
    from papers.registry import get_registry

    model = build(flat, get_registry().catalogue, device="meta").eval()
    shapes: dict[str, tuple[int, ...]] = {}

    def recorder(name: str) -> Any:
        def record(module: Any, args: tuple[Any, ...]) -> None:
            shapes.setdefault(name, tuple(args[0].shape))

        return record

    hooks = [model.get_submodule(name).register_forward_pre_hook(recorder(name)) for name in names]
    try:
        with torch.no_grad():
            model(*(torch.zeros(batch, *shape, device="meta") for shape in flat.inputs.values()))
    finally:
        for hook in hooks:
            hook.remove()
    return shapes


def plan(flat: FlatGraph, settings: GuidedSettings) -> dict[str, Decision]:
    """Which layers guided pruning prunes: each named convolution's shape timed here at the grid's
    sparsities, pruned if its target reaches the measured break-even; each fully connected layer."""
    from papers.build import build
    from papers.registry import get_registry
    from papers_plugins.compression.sparse_conv import Geometry, break_even, time_geometry

    kinds = {node.name: node.op for node in flat.nodes}
    convs = [name for name in settings.sparsity if kinds[name] in CONV_OPS]
    shapes = layer_inputs(flat, convs, settings.batch) if convs else {}
    model = build(flat, get_registry().catalogue, device="meta") if convs else None
    decisions = {}
    grid = sorted(set(settings.grid))
    for name, target in settings.sparsity.items():
        if name not in convs:
            decisions[name] = Decision(name, "fc", target, pruned=target > 0)
            continue
        assert model is not None
        geometry = Geometry.of(model.get_submodule(name), shapes[name])
        timings = time_geometry(geometry, grid, repeats=settings.repeats)
        even = break_even(timings)
        pays = even is not None and target > 0 and target >= even
        decisions[name] = Decision(name, "conv", target, pays, geometry, timings, even)
    return decisions


def guided_prune(model: Any, settings: GuidedSettings, context: MethodContext) -> Any:
    """Prune ``model`` in place as :func:`plan` decides, retraining where data is given."""
    from papers_plugins.compression.pruning import PruneSettings, _training_batches, prune

    decisions = plan(context.flat, settings)
    kept = {name: 1.0 - d.target for name, d in decisions.items() if d.pruned}
    if not kept:
        return model
    pruning = PruneSettings(
        kept=kept,
        iterations=settings.iterations,
        retrain_epochs=settings.retrain_epochs,
        retrain_lr=settings.retrain_lr,
        momentum=settings.momentum,
        weight_decay=settings.weight_decay,
        batch_size=settings.batch_size,
    )
    batches = None
    if settings.retrain_epochs and context.data is not None:
        batches = _training_batches(context, settings.batch_size)
    prune(model, pruning, context.flat, batches, context.device)
    return model


GUIDED_PRUNE = Method(
    name="guided_prune",
    settings=GuidedSettings,
    description="Magnitude pruning to per-layer target sparsities, a convolution pruned only where the "
    "direct sparse kernel measured faster than the dense one at its target on this machine, and run "
    "with that kernel where it is (Park et al. 2017).",
    rewrite=check_settings,
    apply=guided_prune,
)


# -- the small-scale reproduction (`papers check park2017 --run`) ---------------------------------

PROXY_VARIANT = "park2017-lenet5_caffe"


def guided_proxy(
    variant_id: str = PROXY_VARIANT,
    data: str = "builtin:mnist5k",
    *,
    epochs: int | None = None,
    retrain_epochs: int | None = None,
    limit: int | None = None,
) -> dict[str, Any]:
    """Train ``variant_id``'s base on ``data`` (its recipe's SGD settings, from a fixed seed), prune it
    by guided pruning, and give top-1 (percent) on the held-out split before and after, with each
    layer's decision and kept fraction. ``limit`` takes the first images only."""
    from papers.api import expand_variant
    from papers_plugins.compression.pruning import (
        PROXY_EPOCHS,
        PruneSettings,
        pretrained,
        proxy_setup,
        prune,
        sparsity_of,
        top1,
    )

    setup = proxy_setup(variant_id, "guided_prune", data, limit)
    settings = setup.settings
    assert isinstance(settings, GuidedSettings)
    if retrain_epochs is not None:
        settings = settings.model_copy(update={"retrain_epochs": retrain_epochs})
    flat = expand_variant(variant_id)
    decisions = plan(flat, settings)
    kept = {name: 1.0 - d.target for name, d in decisions.items() if d.pruned}
    passes = PROXY_EPOCHS if epochs is None else epochs
    with pretrained(setup, passes, build=variant_id) as (model, batches, before):
        if kept:
            pruning = PruneSettings(
                kept=kept,
                iterations=settings.iterations,
                retrain_epochs=settings.retrain_epochs,
                retrain_lr=settings.retrain_lr,
                momentum=settings.momentum,
                weight_decay=settings.weight_decay,
                batch_size=settings.batch_size,
            )
            prune(model, pruning, flat, batches, "cpu")
        after = top1(model, setup.test_images, setup.test_labels)
    return {
        "before": before,
        "after": after,
        "decisions": decisions,
        "kept": sparsity_of(model, list(settings.sparsity)),
    }


def _proxy_runner(variant_id: str) -> Any:
    def run(progress: bool) -> tuple[float, float]:
        measured = guided_proxy(variant_id)
        if progress:
            for decision in measured["decisions"].values():
                print(f"  {decision.describe()}")
        return measured["after"], measured["before"] - 1.0

    return run


def proxy_checks() -> list:
    """The paper's proxy check (its plugin's ``papers_checks``)."""
    from papers_plugins.compression.pruning import PROXY_EPOCHS, mnist5k_check

    return [
        mnist5k_check(
            PROXY_VARIANT,
            _proxy_runner(PROXY_VARIANT),
            f"LeNet-5 (Caffe's) trained on 5,000 of MNIST's digits for {PROXY_EPOCHS} epochs with "
            "Caffe's SGD settings, not AlexNet on ImageNet; each convolution's shape timed here, dense "
            "against the direct sparse kernel, and pruned to its target only where the target reaches "
            "the measured break-even, the fully connected layers pruned to theirs, with retraining; "
            "passes when the pruned model's top-1 is within 1 point of the unpruned model's",
        )
    ]
