"""Molchanov, Tyree, Karras, Aila and Kautz, "Pruning Convolutional Neural Networks for Resource
Efficient Inference" (ICLR 2017, arXiv 1611.06440): feature maps ranked by a first-order Taylor
criterion, removed one (or a few) at a time with fine-tuning in between.

The criterion estimates how much the loss changes when a feature map ``z`` (a layer's
output channel, after its non-linearity) is set to zero: per example, the absolute value of the mean
over its positions of the activation times the gradient of the cost with respect to it,
``|1/M Σ_m z_m ∂C/∂z_m|``, averaged over the examples of the minibatches seen. Each layer's values are
divided by their ℓ2 norm over the layer, so one global ranking serves every layer; with
the FLOPs regulariser, ``λ`` times the multiply-adds that compute one feature map of the layer is
subtracted, so that among equally unimportant maps the costly ones go first. The lowest-ranked maps
are pruned, the network is fine-tuned for a few minibatch updates, and the criterion is measured
again, until the settings' share of the layers' feature maps is gone.

While it runs, a pruned map is a gate set to zero on the layer's output (:mod:`.gates`), which is what
its removal does to the layers reading it; at the end the maps are removed for real
(:func:`papers_plugins.compression.channels.remove_channels`): the result is a narrower dense model
with its own graph, which ``papers compress`` writes, loads and measures like any variant.

Widths depend on the data, so the static rewrite only checks the settings (each layer a removable
convolution or linear layer, a rate that leaves every layer at least one feature map); what the paper
reports (accuracy against GFLOPs on Birds-200, Flowers-102 and ImageNet) is measured after training,
which the registry cannot redo here.

Hand-written: the criterion and the pruning loop, a few lines of torch on activations and their
gradients; Torch-Pruning's Taylor importance scores weights (weight × gradient) rather than the paper's
activations, and has no iterative single-map schedule with fine-tuning between steps.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field

from papers.errors import PapersError, SpecError
from papers.graph import FlatGraph
from papers.methods import Method, MethodContext, Settings

if TYPE_CHECKING:
    import torch

    from papers_plugins.compression.gates import ChannelGates

Rate = Annotated[float, Field(gt=0, lt=1)]


class TaylorSettings(Settings):
    """The settings of ``taylor_prune``."""

    rate: Rate = Field(
        description="The share of the layers' feature maps removed in all, ranked globally (not per layer)."
    )
    layers: list[str] = Field(
        [],
        description="The convolution (or linear) layers whose feature maps compete; empty: every "
        "convolution whose channels can be removed.",
    )
    per_step: int = Field(1, ge=1, le=4096, description="Feature maps pruned at each step (the paper: one).")
    criterion_batches: int = Field(
        10, ge=1, le=10000, description="Minibatches the criterion is averaged over before each step."
    )
    finetune_updates: int = Field(
        10, ge=0, le=100000, description="Minibatch updates of fine-tuning after each step."
    )
    final_epochs: int = Field(0, ge=0, le=1000, description="Epochs of fine-tuning after the last step.")
    normalize: bool = Field(True, description="Divide each layer's criterion by its ℓ2 norm.")
    flops_lambda: float = Field(
        0.0,
        ge=0,
        description="λ of the FLOPs regulariser: λ × the million multiply-adds that compute one feature "
        "map of its layer is subtracted from the normalised criterion.",
    )
    retrain_lr: float = Field(1.0e-3, gt=0, description="SGD rate while fine-tuning.")
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5.0e-4, ge=0)
    batch_size: int = Field(64, ge=1, le=65536)


# -- static: the settings against the graph ---------------------------------------------------------


def pruned_layers(flat: FlatGraph, named: list[str], *, field: str) -> dict[str, int]:
    """The layers whose feature maps compete, with their widths: ``named`` (each a layer whose
    channels can be removed) or, if empty, every removable convolution. Refused as one
    :class:`SpecError` at ``field``: an unknown layer, one whose removal would break a residual
    addition or change the logits."""
    from papers_plugins.compression.channels import channel_layers, narrow

    layers = channel_layers(flat)
    if not named:
        chosen = {
            name: layer.width for name, layer in layers.items() if layer.removable and layer.op == "conv2d"
        }
        if not chosen:
            raise SpecError("the base model has no convolution whose channels can be removed", field=field)
        return chosen
    for position, name in enumerate(named):
        if name in named[:position]:
            raise SpecError(f"layer {name!r} is named twice", field=f"{field}[{position}]")
        if name not in layers:
            narrow(flat, {name: 1}, field=f"{field}[{position}]")  # its message: no such layer, close names
        reason = layers[name].reason
        if reason is not None:
            raise SpecError(
                f"layer {name!r}: its channels cannot be removed: {reason}", field=f"{field}[{position}]"
            )
    return {name: layers[name].width for name in named}


def removal_count(widths: Mapping[str, int], rate: float, *, field: str) -> int:
    """How many feature maps ``rate`` removes from ``widths`` in all; refused where that would leave a
    layer without any (global ranking keeps at least one per layer) or removes none."""
    total = sum(widths.values())
    count = round(rate * total)
    most = total - len(widths)
    if count > most:
        names = ", ".join(list(widths)[:6]) + (", ..." if len(widths) > 6 else "")
        raise SpecError(
            f"rate {rate} removes {count} of the {total} feature maps of {names}; at most {most} can go "
            "while every layer keeps one",
            field=field,
        )
    if count < 1:
        raise SpecError(f"rate {rate} removes none of the {total} feature maps", field=field)
    return count


def check_settings(flat: FlatGraph, settings: TaylorSettings) -> FlatGraph:
    """The rewrite: the graph unchanged (the widths depend on the data), once the settings fit it."""
    widths = pruned_layers(flat, settings.layers, field="settings.layers")
    removal_count(widths, settings.rate, field="settings.rate")
    return flat


# -- the criterion ----------------------------------------------------------------------------------


def taylor_scores(
    model: Any,
    gates: ChannelGates,
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
    count: int,
    device: str,
) -> dict[str, torch.Tensor]:
    """Each gated layer's criterion per feature map: per example ``|mean over positions of z · ∂C/∂z|``,
    ``C`` that example's cross-entropy, averaged over ``count`` minibatches' examples."""
    import torch

    totals = {name: torch.zeros_like(mask) for name, mask in gates.masks.items()}
    seen = 0
    model.eval()  # the criterion of the network as it is, no dropout noise; gradients still flow
    gates.record = True
    try:
        for _ in range(count):
            images, labels = next(batches)
            model.zero_grad(set_to_none=True)
            logits = model(images.to(device))
            # the sum of per-example losses: each example's gradient is its own cost's
            torch.nn.functional.cross_entropy(logits, labels.to(device), reduction="sum").backward()
            for name, z in gates.outputs.items():
                assert z.grad is not None
                product = (z.detach() * z.grad).flatten(2).mean(-1) if z.dim() > 2 else z.detach() * z.grad
                totals[name] += product.abs().sum(0)
            seen += len(labels)
            gates.outputs.clear()
    finally:
        gates.record = False
        gates.outputs.clear()
        model.zero_grad(set_to_none=True)
    return {name: total / max(seen, 1) for name, total in totals.items()}


def ranked(
    scores: Mapping[str, torch.Tensor],
    gates: ChannelGates,
    *,
    normalize: bool,
    flops_lambda: float = 0.0,
    flops: Mapping[str, float] | None = None,
) -> list[tuple[float, str, int]]:
    """Every live feature map as ``(score, layer, channel)``, lowest first: each layer's scores over its
    live maps divided by their ℓ2 norm (``normalize``), less ``flops_lambda`` × its maps' cost."""
    entries = []
    for name, values in scores.items():
        live = gates.live(name)
        if not live:
            continue
        values = values[live]
        if normalize:
            norm = float(values.norm())
            values = values / norm if norm > 0 else values
        penalty = flops_lambda * (flops or {}).get(name, 0.0)
        entries += [(float(v) - penalty, name, c) for v, c in zip(values, live, strict=True)]
    return sorted(entries)


def feature_map_macs(model: Any, layers: list[str], image: torch.Tensor) -> dict[str, float]:
    """The million multiply-adds that compute one output feature map of each layer, on ``image``'s
    shape: its positions times one filter's weights (a convolution as a sliding window)."""
    import torch

    positions: dict[str, int] = {}
    handles = [
        model.get_submodule(name).register_forward_hook(
            lambda module, args, output, name=name: positions.__setitem__(name, output[0, 0].numel())
        )
        for name in layers
    ]
    try:
        with torch.no_grad():
            model(image[:1])
    finally:
        for handle in handles:
            handle.remove()
    return {name: positions[name] * model.get_submodule(name).weight[0].numel() / 1e6 for name in layers}


# -- the pruning loop ---------------------------------------------------------------------------------


@dataclass
class TaylorRun:
    """What :func:`taylor_prune` did: each layer's kept feature maps, and the order maps were pruned in."""

    kept: dict[str, list[int]]
    pruned: list[tuple[str, int]] = field(default_factory=list)


def taylor_prune(
    model: Any,
    points: Mapping[str, str],
    widths: Mapping[str, int],
    settings: TaylorSettings,
    batches: Any,
    device: str = "cpu",
) -> TaylorRun:
    """Prune feature maps of ``model`` by the Taylor criterion under gates (``points``: each layer's
    gated module, see :func:`gates.gate_point`), fine-tuning after each step on ``batches`` (a function
    giving one pass); the weights are fine-tuned in place, no channel is removed yet. Gives the kept
    maps of each layer."""
    import torch

    from papers_plugins.compression.gates import ChannelGates, endless, sgd_updates
    from papers_plugins.compression.pruning import retrain

    target = removal_count(widths, settings.rate, field="settings.rate")
    stream = endless(batches)
    flops = None
    if settings.flops_lambda:
        images, _ = next(stream)
        flops = feature_map_macs(model, list(points), images.to(device))
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=settings.retrain_lr,
        momentum=settings.momentum,
        weight_decay=settings.weight_decay,
    )
    run = TaylorRun(kept={})
    with ChannelGates(model, points, widths) as gates:
        while len(run.pruned) < target:
            scores = taylor_scores(model, gates, stream, settings.criterion_batches, device)
            order = ranked(
                scores, gates, normalize=settings.normalize, flops_lambda=settings.flops_lambda, flops=flops
            )
            live = {name: len(gates.live(name)) for name in widths}
            step = min(settings.per_step, target - len(run.pruned))
            for _, name, channel in order:
                if step == 0:
                    break
                if live[name] > 1:  # never a layer's last map
                    gates.masks[name][channel] = 0.0
                    live[name] -= 1
                    run.pruned.append((name, channel))
                    step -= 1
            sgd_updates(model, stream, optimizer, settings.finetune_updates, device)
        if settings.final_epochs:
            retrain(
                model, batches, list(model.parameters()), {}, settings, device, epochs=settings.final_epochs
            )
        run.kept = gates.kept()
    return run


def taylor_prune_method(model: Any, settings: TaylorSettings, context: MethodContext) -> Any:
    """``papers compress --data``: prune on the training split of ``--data``, then remove the pruned
    feature maps (a narrower model with its graph)."""
    from papers.methods import Narrowed
    from papers_plugins.compression.channels import remove_channels
    from papers_plugins.compression.gates import gate_points
    from papers_plugins.compression.pruning import shuffled_batches, training_split

    if context.data is None:
        raise PapersError("taylor_prune ranks feature maps on data: give --data", field="--data")
    widths = pruned_layers(context.flat, settings.layers, field="settings.layers")
    shape = tuple(next(iter(context.flat.inputs.values())))
    images, labels = training_split(str(context.data), shape)
    batches = shuffled_batches(images, labels, settings.batch_size)
    run = taylor_prune(
        model, gate_points(model, context.flat, widths), widths, settings, batches, context.device
    )
    narrowed, flat = remove_channels(model, context.flat, run.kept)
    return Narrowed(narrowed.eval(), flat)


TAYLOR_PRUNE = Method(
    name="taylor_prune",
    settings=TaylorSettings,
    description="Feature maps ranked globally by the first-order Taylor criterion on activations "
    "(ℓ2-normalised per layer, optionally less λ × their FLOPs), pruned a few at a time with "
    "fine-tuning in between, then removed (Molchanov et al. 2017).",
    rewrite=check_settings,
    apply=taylor_prune_method,
)


# -- the small-scale reproduction (`papers check molchanov2017 --run`) ----------------------------------

PROXY_VARIANT = "molchanov2017-lenet5_caffe"


def taylor_proxy(
    variant_id: str = PROXY_VARIANT,
    data: str = "builtin:mnist5k",
    *,
    epochs: int | None = None,
    overrides: Mapping[str, Any] | None = None,
    limit: int | None = None,
) -> dict[str, Any]:
    """Train ``variant_id``'s base on ``data`` (its recipe's SGD settings, from a fixed seed), prune its
    feature maps by the Taylor criterion as the variant's settings say (``overrides`` replace some),
    remove them, and give top-1 (percent) on the test split before and after, with the widths and
    multiply-adds before and after removal."""
    import time

    from papers_plugins.compression.channels import proxy_result, remove_channels
    from papers_plugins.compression.gates import gate_points
    from papers_plugins.compression.pruning import PROXY_EPOCHS, pretrained, proxy_setup, top1

    setup = proxy_setup(variant_id, "taylor_prune", data, limit)
    settings = setup.settings.model_copy(update=dict(overrides or {}))
    assert isinstance(settings, TaylorSettings)
    widths = pruned_layers(setup.flat, settings.layers, field="settings.layers")
    began = time.perf_counter()
    with pretrained(setup, PROXY_EPOCHS if epochs is None else epochs) as (model, batches, before):
        points = gate_points(model, setup.flat, widths)
        run = taylor_prune(model, points, widths, settings, batches)
        narrowed, flat = remove_channels(model, setup.flat, run.kept)
        after = top1(narrowed.eval(), setup.test_images, setup.test_labels)
    return proxy_result(setup, variant_id, flat, run.kept, began, before=before, after=after)


def _proxy_runner(variant_id: str) -> Any:
    from papers_plugins.compression.channels import proxy_runner

    return proxy_runner(taylor_proxy, variant_id, "feature maps")


def proxy_checks() -> list:
    """The paper's proxy check (its plugin's ``papers_checks``)."""
    from papers_plugins.compression.pruning import PROXY_EPOCHS, mnist5k_check

    return [
        mnist5k_check(
            PROXY_VARIANT,
            _proxy_runner(PROXY_VARIANT),
            f"LeNet-5 (Caffe's) trained on builtin:mnist5k's 4,000 training digits for {PROXY_EPOCHS} "
            "epochs with Caffe's SGD settings, not a VGG-16 fine-tuned to Birds-200 or Flowers-102; "
            "half of its 70 convolutional feature maps ranked globally by the Taylor criterion and "
            "pruned one per step with a few minibatch updates of fine-tuning between steps (the "
            "variant's settings), then removed for real; passes when the narrowed model's top-1 on the "
            "1,000 test digits is within 1 point of the unpruned model's",
        )
    ]
