"""Lin, Ji, Li, Wu, Huang and Zhang, "Accelerating Convolutional Networks via Global & Dynamic Filter
Pruning" (IJCAI 2018, GDP): one binary mask over every layer's filters, chosen by a global ranking and
revised while the network trains, so that a filter pruned early can come back; then removal.

GDP starts from a trained network and a full mask, masks out the filters whose saliency ranks lowest
across all layers at once (no per-layer rate), and then alternates: SGD updates every filter's weights,
masked or not, by the gradient of the masked network, and the mask is recomputed from the filters'
new saliency. A filter whose weights have grown salient again is unmasked. When the updates end the
mask is fixed, the masked filters are removed, and the narrower network is retrained.

Here a mask is a gate on the layer's feature maps (:mod:`.gates`) with a straight-through gradient:
the forward pass computes without the masked channels, exactly as the narrowed network will, while the
backward pass gives a masked filter the gradient it would have if it were kept, which is what lets it
come back. A filter's saliency is ``|⟨W, ∂L/∂W⟩|``, the first-order estimate of the loss change from
zeroing it (from restoring it, for a masked one), averaged over the minibatches since the last mask
update; ``saliency: l1`` ranks by the sum of absolute weights instead. The paper's own saliency
function and its numbers could not be checked here (see the spec), so that choice is the registry's.
At the end the masked filters are removed for real
(:func:`papers_plugins.compression.channels.remove_channels`) and the narrower model retrained.

Hand-written: the mask updates and the straight-through gate are a few lines of torch; Torch-Pruning's
pruners remove channels once and cannot bring one back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field

from papers.errors import PapersError, SpecError
from papers.graph import FlatGraph
from papers.methods import Method, MethodContext, Settings

if TYPE_CHECKING:
    import torch

Fraction = Annotated[float, Field(gt=0, lt=1)]


class DynamicSettings(Settings):
    """The settings of ``dynamic_prune``."""

    kept: Fraction = Field(description="The share of the layers' filters the global mask keeps.")
    layers: list[str] = Field(
        [],
        description="The convolution (or linear) layers whose filters share the mask; empty: every "
        "convolution whose channels can be removed.",
    )
    saliency: Literal["taylor", "l1"] = Field(
        "taylor", description="A filter's saliency: |⟨W, ∂L/∂W⟩| (taylor) or the sum of |W| (l1)."
    )
    mask_interval: int = Field(
        20,
        ge=1,
        le=100000,
        description="SGD updates between mask updates (the saliency is averaged over them).",
    )
    epochs: int = Field(2, ge=1, le=1000, description="Epochs of dynamic updating of filters and mask.")
    final_epochs: int = Field(0, ge=0, le=1000, description="Epochs of retraining the narrowed network.")
    retrain_lr: float = Field(1.0e-3, gt=0, description="SGD rate of both phases.")
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5.0e-4, ge=0)
    batch_size: int = Field(64, ge=1, le=65536)


# -- static: the settings against the graph -----------------------------------------------------------


def kept_count(widths: Mapping[str, int], kept: float, *, field: str) -> int:
    """How many filters the mask keeps; refused where that leaves a layer none or removes none."""
    total = sum(widths.values())
    count = round(kept * total)
    names = ", ".join(list(widths)[:6]) + (", ..." if len(widths) > 6 else "")
    if count < len(widths):
        raise SpecError(
            f"kept {kept} keeps {count} of the {total} filters of {names}, fewer than one per layer "
            f"(at least {len(widths)})",
            field=field,
        )
    if count >= total:
        raise SpecError(f"kept {kept} keeps all {total} filters of {names}", field=field)
    return count


def check_settings(flat: FlatGraph, settings: DynamicSettings) -> FlatGraph:
    """The rewrite: the graph unchanged (the widths depend on the data), once the settings fit it."""
    from papers_plugins.compression.taylor import pruned_layers

    widths = pruned_layers(flat, settings.layers, field="settings.layers")
    kept_count(widths, settings.kept, field="settings.kept")
    return flat


# -- the global mask ------------------------------------------------------------------------------------


def global_mask(scores: Mapping[str, torch.Tensor], count: int) -> dict[str, torch.Tensor]:
    """A 0/1 mask per layer keeping the ``count`` highest scores over all layers together, each layer
    keeping at least its highest (ties broken by layer order and position)."""
    import torch

    names = list(scores)
    flat = torch.cat([scores[name].detach().flatten().float() for name in names])
    sizes = [scores[name].numel() for name in names]
    chosen = torch.zeros(flat.numel(), dtype=torch.bool)
    start = 0
    for name, size in zip(names, sizes, strict=True):  # every layer's best first
        chosen[start + int(scores[name].argmax())] = True
        start += size
    remaining = count - int(chosen.sum())
    if remaining > 0:
        rest = flat.masked_fill(chosen, float("-inf"))
        chosen[torch.topk(rest, remaining).indices] = True
    masks, start = {}, 0
    for name, size in zip(names, sizes, strict=True):
        masks[name] = chosen[start : start + size].to(scores[name].dtype)
        start += size
    return masks


def filter_saliency(model: Any, layers: list[str], kind: str) -> dict[str, torch.Tensor]:
    """Each layer's filters' saliency now: ``|⟨W, ∂L/∂W⟩|`` per filter from the gradients the last
    backward pass left (``taylor``), or ``Σ|W|`` (``l1``)."""
    out = {}
    for name in layers:
        weight = model.get_submodule(name).weight
        if kind == "l1":
            out[name] = weight.detach().abs().flatten(1).sum(1)
        else:
            grad = weight.grad
            out[name] = (
                (weight.detach() * grad).flatten(1).sum(1).abs()
                if grad is not None
                else weight.new_zeros(len(weight))
            )
    return out


@dataclass
class DynamicRun:
    """What :func:`dynamic_prune` did: the final mask's kept filters, and at each mask update the
    filters it pruned and those it brought back."""

    kept: dict[str, list[int]]
    pruned: list[int] = field(default_factory=list)
    restored: list[int] = field(default_factory=list)


def dynamic_prune(
    model: Any,
    points: Mapping[str, str],
    widths: Mapping[str, int],
    settings: DynamicSettings,
    batches: Any,
    device: str = "cpu",
) -> DynamicRun:
    """GDP on ``model`` under straight-through gates (``points``: each layer's gated module): the first
    mask from the trained weights, then ``settings.epochs`` passes over ``batches`` (a function giving
    one pass) of SGD on every filter with the mask recomputed every ``mask_interval`` updates. The
    weights change in place; nothing is removed yet. Gives the final mask's kept filters."""
    import torch

    from papers_plugins.compression.gates import ChannelGates

    count = kept_count(widths, settings.kept, field="settings.kept")
    layers = list(widths)
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=settings.retrain_lr,
        momentum=settings.momentum,
        weight_decay=settings.weight_decay,
    )
    run = DynamicRun(kept={})
    with ChannelGates(model, points, widths, straight_through=True) as gates:
        saliency = _saliency_on(model, layers, settings.saliency, batches, device)
        _update(gates, global_mask(saliency, count), run)
        totals = {name: torch.zeros(widths[name], device=gates.masks[name].device) for name in layers}
        steps = 0
        model.train()
        for _ in range(settings.epochs):
            for images, labels in batches():
                optimizer.zero_grad(set_to_none=True)
                loss = torch.nn.functional.cross_entropy(model(images.to(device)), labels.to(device))
                loss.backward()
                if settings.saliency == "taylor":
                    for name, values in filter_saliency(model, layers, "taylor").items():
                        totals[name] += values
                optimizer.step()
                steps += 1
                if steps % settings.mask_interval == 0:
                    if settings.saliency == "l1":
                        totals = filter_saliency(model, layers, "l1")
                    _update(gates, global_mask(totals, count), run)
                    totals = {name: torch.zeros_like(t) for name, t in totals.items()}
        model.eval()
        run.kept = gates.kept()
    return run


def _saliency_on(model: Any, layers: list[str], kind: str, batches: Any, device: str) -> dict[str, Any]:
    """The saliency of the trained model over one minibatch (the first mask)."""
    import torch

    if kind == "taylor":
        images, labels = next(iter(batches()))
        model.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model.eval()(images.to(device)), labels.to(device)).backward()
    scores = filter_saliency(model, layers, kind)
    model.zero_grad(set_to_none=True)
    return scores


def _update(gates: Any, masks: Mapping[str, Any], run: DynamicRun) -> None:
    """Set the gates to ``masks``, counting the filters pruned and brought back."""
    pruned = restored = 0
    for name, mask in masks.items():
        old = gates.masks[name]
        pruned += int(((old == 1) & (mask == 0)).sum())
        restored += int(((old == 0) & (mask == 1)).sum())
        old.copy_(mask)
    run.pruned.append(pruned)
    run.restored.append(restored)


def dynamic_prune_method(model: Any, settings: DynamicSettings, context: MethodContext) -> Any:
    """``papers compress --data``: GDP on the training split of ``--data``, the masked filters removed,
    the narrower model retrained."""
    from papers.methods import Narrowed
    from papers_plugins.compression.channels import remove_channels
    from papers_plugins.compression.gates import gate_points
    from papers_plugins.compression.pruning import retrain, shuffled_batches, training_split
    from papers_plugins.compression.taylor import pruned_layers

    if context.data is None:
        raise PapersError("dynamic_prune updates its mask while training: give --data", field="--data")
    widths = pruned_layers(context.flat, settings.layers, field="settings.layers")
    shape = tuple(next(iter(context.flat.inputs.values())))
    images, labels = training_split(str(context.data), shape)
    batches = shuffled_batches(images, labels, settings.batch_size)
    run = dynamic_prune(
        model, gate_points(model, context.flat, widths), widths, settings, batches, context.device
    )
    narrowed, flat = remove_channels(model, context.flat, run.kept)
    if settings.final_epochs:
        retrain(
            narrowed,
            batches,
            list(narrowed.parameters()),
            {},
            settings,
            context.device,
            epochs=settings.final_epochs,
        )
    return Narrowed(narrowed.eval(), flat)


DYNAMIC_PRUNE = Method(
    name="dynamic_prune",
    settings=DynamicSettings,
    description="One global binary mask over every layer's filters, ranked by saliency and revised while "
    "all filters train (masked ones by a straight-through gradient, so they may come back); then the "
    "masked filters are removed and the narrower network retrained (Lin et al. 2018, GDP).",
    rewrite=check_settings,
    apply=dynamic_prune_method,
)


# -- the small-scale reproduction (`papers check lin2018 --run`) ----------------------------------------

PROXY_VARIANT = "lin2018-lenet5_caffe"


def dynamic_proxy(
    variant_id: str = PROXY_VARIANT,
    data: str = "builtin:mnist5k",
    *,
    epochs: int | None = None,
    overrides: Mapping[str, Any] | None = None,
    limit: int | None = None,
) -> dict[str, Any]:
    """Train ``variant_id``'s base on ``data`` (its recipe's SGD settings, from a fixed seed), run GDP as
    the variant's settings say (``overrides`` replace some), remove the masked filters, retrain, and
    give top-1 (percent) on the test split before and after, the widths, the multiply-adds before and
    after removal, and the filters each mask update pruned and brought back."""
    import time

    from papers_plugins.compression.channels import proxy_result, remove_channels
    from papers_plugins.compression.gates import gate_points
    from papers_plugins.compression.pruning import PROXY_EPOCHS, pretrained, proxy_setup, retrain, top1
    from papers_plugins.compression.taylor import pruned_layers

    setup = proxy_setup(variant_id, "dynamic_prune", data, limit)
    settings = setup.settings.model_copy(update=dict(overrides or {}))
    assert isinstance(settings, DynamicSettings)
    widths = pruned_layers(setup.flat, settings.layers, field="settings.layers")
    began = time.perf_counter()
    with pretrained(setup, PROXY_EPOCHS if epochs is None else epochs) as (model, batches, before):
        run = dynamic_prune(model, gate_points(model, setup.flat, widths), widths, settings, batches)
        narrowed, flat = remove_channels(model, setup.flat, run.kept)
        if settings.final_epochs:
            retrain(
                narrowed,
                batches,
                list(narrowed.parameters()),
                {},
                settings,
                "cpu",
                epochs=settings.final_epochs,
            )
        after = top1(narrowed.eval(), setup.test_images, setup.test_labels)
    measured = {"before": before, "after": after, "pruned": run.pruned, "restored": run.restored}
    return proxy_result(setup, variant_id, flat, run.kept, began, **measured)


def _proxy_runner(variant_id: str) -> Any:
    from papers_plugins.compression.channels import proxy_runner

    def restored(measured: dict[str, Any]) -> list[str]:
        return [f"  brought back by the mask updates after the first: {sum(measured['restored'][1:])}"]

    return proxy_runner(dynamic_proxy, variant_id, "filters", restored)


def proxy_checks() -> list:
    """The paper's proxy check (its plugin's ``papers_checks``)."""
    from papers_plugins.compression.pruning import PROXY_EPOCHS, mnist5k_check

    return [
        mnist5k_check(
            PROXY_VARIANT,
            _proxy_runner(PROXY_VARIANT),
            f"LeNet-5 (Caffe's) trained on builtin:mnist5k's 4,000 training digits for {PROXY_EPOCHS} "
            "epochs with Caffe's SGD settings, not an ImageNet VGG-16 or ResNet; one global mask "
            "keeping half of its 70 convolutional filters, revised every few updates while all "
            "filters train (the variant's settings), the masked filters then removed for real and the "
            "narrower network retrained; passes when its top-1 on the 1,000 test digits is within 1 "
            "point of the unpruned model's",
        )
    ]
