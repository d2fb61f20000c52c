"""Guo, Yao and Chen, "Dynamic Network Surgery for Efficient DNNs" (NIPS 2016, arXiv 1608.04493):
pruning and splicing connections during training.

``network_surgery`` keeps a mask T over each named layer's weights W. The network computes with the
masked weights W ⊙ T, while the gradient of the loss with respect to W ⊙ T updates every weight,
masked or not (eq. 4), so a pruned connection keeps learning and is spliced back in when it grows
important again. A mask update compares each weight's magnitude with two thresholds a_k < b_k of its
layer (eq. 3): below a_k the connection is pruned, above b_k it is kept or spliced, and between them it
keeps its state. The paper sets them from the layer's mean magnitude and its spread, with a small margin
between them; its authors' code (``CCMaskCalc``) has a_k = 0.9 T_k and b_k = 1.1 T_k with
T_k = max(μ_k + c_k σ_k, 0), μ_k and σ_k the mean and standard deviation of the layer's |W| when
surgery starts, c_k a per-layer rate: ``margin`` is the 0.1 and ``crate`` the c_k. Masks are updated
with probability σ(iter) = (1 + γ·iter)^-power, never after ``stop`` iterations (Section 3.4: a
non-increasing σ with σ(0) = 1; the form is the authors' code's), and the network is trained jointly.

The paper reports its per-layer kept fractions (Tables 2 and 3), not its c_k, so ``kept`` is the usual
setting: at each update T_k is chosen so that the layer keeps exactly that fraction, which is keeping
the largest |w| / 0.9 of the connections alive and the largest |w| / 1.1 of those pruned (T_k is then
μ_k + c_k σ_k for c_k = (T_k − μ_k) / σ_k). Without data, one update prunes the trained weights.
Without weights, ``static_measure`` gives Table 1's parameters and ratio from the kept fractions.

Hand-written: the straight-through mask (a torch parametrization) and the update rule; torch's
``torch.nn.utils.prune`` multiplies the gradient by the mask, which is exactly what surgery does not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field

from papers.errors import SpecError
from papers.graph import FlatGraph
from papers.methods import Estimate, Method, MethodContext, Settings
from papers_plugins.compression import pruning
from papers_plugins.compression.pruning import PRUNED_OPS, PruneSettings

if TYPE_CHECKING:
    import torch

Fraction = Annotated[float, Field(gt=0, le=1)]


class SurgerySettings(Settings):
    """The settings of ``network_surgery``."""

    kept: dict[str, Fraction] = Field(
        {},
        description="A layer's kept fraction of its weights (the paper's Tables 2-3), by node name; each "
        "mask update keeps exactly that many, a pruning rate of 1 - kept in [0, 1).",
    )
    crate: dict[str, float] = Field(
        {},
        description="For layers not in `kept`: the rate c_k of T_k = max(μ_k + c_k σ_k, 0), μ_k and σ_k the "
        "mean and standard deviation of the layer's |W| when surgery starts (the authors' code's c_rate).",
    )
    margin: float = Field(
        0.1, gt=0, lt=1, description="a_k = (1 - margin) T_k, b_k = (1 + margin) T_k (the authors' code's)."
    )
    gamma: float = Field(1.0e-4, ge=0, description="σ(iter) = (1 + gamma·iter)^-power (the authors' code).")
    power: float = Field(1.0, ge=0)
    stop: int = Field(14000, ge=1, description="Iterations after which the masks stay as they are.")
    epochs: int = Field(0, ge=0, le=1000, description="Epochs of surgery, where data is given.")
    lr: float = Field(1.0e-3, gt=0, description="SGD rate of the weights during surgery.")
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5.0e-4, ge=0)
    batch_size: int = Field(64, ge=1, le=65536)
    seed: int = Field(0, ge=0, description="Seed of the draws that decide when masks are updated.")


def check_settings(flat: FlatGraph, settings: SurgerySettings) -> FlatGraph:
    """The rewrite: the graph unchanged, once every layer the settings name is a convolution or linear
    layer of it, named once (refused at ``papers build`` and ``check``, before any weight exists)."""
    prunable = {node.name for node in flat.nodes if node.op in PRUNED_OPS}
    for field in ("kept", "crate"):
        for name in getattr(settings, field):
            if name not in prunable:
                known = ", ".join(sorted(prunable)[:12]) or "none"
                raise SpecError(
                    f"settings.{field} names {name!r}, which is no convolution or linear layer of the base "
                    f"model (its layers: {known}{', ...' if len(prunable) > 12 else ''})"
                )
    both = sorted(set(settings.kept) & set(settings.crate))
    if both:
        raise SpecError(f"settings.kept and settings.crate both name {both[0]!r}; give a layer one rule")
    if not settings.kept and not settings.crate:
        raise SpecError("settings give neither `kept` fractions nor a `crate`; nothing would be pruned")
    return flat


def static_measure(flat: FlatGraph, settings: SurgerySettings) -> dict[str, float | Estimate]:
    """Table 1's parameters and compression ratio from the kept fractions (counted as Han et al.'s are:
    weights, each fraction anywhere within its printed precision); nothing where a ``crate`` prunes a
    layer, since then its weights decide how many stay."""
    if settings.crate:
        return {}
    return pruning.static_measure(flat, PruneSettings(kept=settings.kept))


# -- the masks ------------------------------------------------------------------------------------


def update_mask(
    weight: torch.Tensor,
    mask: torch.Tensor,
    margin: float,
    *,
    kept: float | None = None,
    threshold: float | None = None,
) -> tuple[torch.Tensor, float]:
    """One update of eq. 3: with T the layer's threshold, a connection below (1 - margin)·T is pruned,
    one above (1 + margin)·T kept or spliced, one between keeps its state. T is ``threshold``, or, given
    ``kept``, the one that leaves exactly that fraction: the largest |w| / (1 - margin) of the alive
    connections and |w| / (1 + margin) of the pruned ones. Returns the new mask and T."""
    import torch

    magnitude = weight.detach().abs()
    alive = mask.bool()
    if kept is not None:
        score = torch.where(alive, magnitude / (1 - margin), magnitude / (1 + margin)).flatten()
        count = max(1, round(weight.numel() * kept))
        top = score.topk(count)
        new = torch.zeros(weight.numel(), dtype=torch.bool, device=weight.device)
        new[top.indices] = True
        return new.view_as(weight).to(mask.dtype), float(top.values[-1])
    assert threshold is not None
    low, high = (1 - margin) * threshold, (1 + margin) * threshold
    new = torch.where(magnitude <= low, False, torch.where(magnitude > high, True, alive))
    return new.to(mask.dtype), threshold


def start_threshold(weight: torch.Tensor, crate: float) -> float:
    """T = max(μ + c·σ, 0), μ and σ the mean and standard deviation of the layer's |W|."""
    magnitude = weight.detach().abs().double()
    return max(float(magnitude.mean()) + crate * float(magnitude.std(unbiased=False)), 0.0)


def update_probability(iteration: int, settings: SurgerySettings) -> float:
    """σ(iter) = (1 + γ·iter)^-power before ``stop``, 0 from then on."""
    if iteration >= settings.stop:
        return 0.0
    return (1.0 + settings.gamma * iteration) ** -settings.power


def _straight_through() -> Any:
    """A parametrization computing W ⊙ T whose gradient reaches all of W unchanged (eq. 4)."""
    import torch

    class Masked(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, weight: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            return weight * mask

        @staticmethod
        def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
            return grad, None

    class SurgeryMask(torch.nn.Module):
        def __init__(self, mask: torch.Tensor) -> None:
            super().__init__()
            self.register_buffer("mask", mask)

        def forward(self, weight: torch.Tensor) -> torch.Tensor:
            return Masked.apply(weight, self.mask)

    return SurgeryMask


def surgery(
    model: Any, settings: SurgerySettings, flat: FlatGraph, batches: Any, device: str
) -> dict[str, Any]:
    """Run surgery on ``model`` in place: masks updated (always at the first iteration, then with
    probability σ(iter)) and all its parameters trained jointly on ``batches`` (a function giving one
    pass) for ``settings.epochs``; without batches, one update. Leaves each layer's weights W ⊙ T.
    Returns, by layer, the final mask and the last threshold T and its c = (T − μ) / σ."""
    import torch
    from torch.nn.utils import parametrize

    names = [
        node.name
        for node in flat.nodes
        if node.op in PRUNED_OPS and (node.name in settings.kept or node.name in settings.crate)
    ]
    modules = {name: model.get_submodule(name) for name in names}
    masks = {name: torch.ones_like(module.weight) for name, module in modules.items()}
    fixed = {name: start_threshold(modules[name].weight, settings.crate[name]) for name in settings.crate}
    spread = {}
    for name, module in modules.items():
        magnitude = module.weight.detach().abs().double()
        spread[name] = (float(magnitude.mean()), float(magnitude.std(unbiased=False)))
    thresholds: dict[str, float] = {}

    def update(weights: dict[str, torch.Tensor]) -> None:
        for name in names:
            new, thresholds[name] = update_mask(
                weights[name],
                masks[name],
                settings.margin,
                kept=settings.kept.get(name),
                threshold=fixed.get(name),
            )
            masks[name].copy_(new)

    with torch.no_grad():
        update({name: module.weight for name, module in modules.items()})
    if batches is not None and settings.epochs:
        _train(model, modules, masks, update, settings, batches, device)
    with torch.no_grad():
        for name, module in modules.items():
            if parametrize.is_parametrized(module, "weight"):
                parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
            else:
                module.weight.mul_(masks[name])
    return {
        name: {
            "mask": masks[name],
            "threshold": thresholds[name],
            "c": (thresholds[name] - spread[name][0]) / spread[name][1] if spread[name][1] else 0.0,
        }
        for name in names
    }


def _train(
    model: Any,
    modules: dict[str, Any],
    masks: dict[str, torch.Tensor],
    update: Any,
    settings: SurgerySettings,
    batches: Any,
    device: str,
) -> None:
    import torch
    from torch.nn.utils import parametrize

    module_type = _straight_through()
    for name, module in modules.items():
        parametrize.register_parametrization(module, "weight", module_type(masks[name]), unsafe=True)
    originals = {name: module.parametrizations.weight.original for name, module in modules.items()}
    optimizer = torch.optim.SGD(
        model.parameters(), lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay
    )
    draws = torch.Generator().manual_seed(settings.seed)
    iteration = 0
    model.train()
    try:
        for _ in range(settings.epochs):
            for images, labels in batches():
                if iteration and float(torch.rand((), generator=draws)) < update_probability(
                    iteration, settings
                ):
                    with torch.no_grad():
                        update(originals)
                optimizer.zero_grad(set_to_none=True)
                loss = torch.nn.functional.cross_entropy(model(images.to(device)), labels.to(device))
                loss.backward()
                optimizer.step()
                iteration += 1
    finally:
        model.eval()


def network_surgery(model: Any, settings: SurgerySettings, context: MethodContext) -> Any:
    """Surgery on ``model`` in place as ``settings`` say; trained on the data's training split where
    given, else one mask update."""
    batches = None
    if settings.epochs and context.data is not None:
        shape = next(iter(context.flat.inputs.values()))
        images, labels = pruning.training_split(str(context.data), tuple(shape))
        batches = pruning.shuffled_batches(images, labels, settings.batch_size)
    surgery(model, settings, context.flat, batches, context.device)
    return model


NETWORK_SURGERY = Method(
    name="network_surgery",
    settings=SurgerySettings,
    description="Dynamic network surgery (Guo, Yao and Chen 2016): masks that prune below a_k and splice "
    "back above b_k, updated with a decaying probability while the network trains on the masked weights "
    "and every weight takes the gradient.",
    rewrite=check_settings,
    apply=network_surgery,
    measure=static_measure,
)


# -- the small-scale reproduction (`papers check dns --run`) ----------------------------------------

PROXY_DATA = "builtin:mnist5k"
PROXY_EPOCHS = 30
"""Passes over the 4,000 training digits before surgery: the registry's choice, as han2015's."""


def surgery_proxy(
    variant_id: str,
    data: str = PROXY_DATA,
    *,
    epochs: int = PROXY_EPOCHS,
    surgery_epochs: int | None = None,
    limit: int | None = None,
) -> dict[str, Any]:
    """Train method variant ``variant_id``'s base on ``data`` (its recipe's SGD settings, ``epochs``
    passes, a fixed seed), run surgery as the variant's settings say (``surgery_epochs`` replacing its
    epochs where given), and give top-1 (percent) on the held-out split before and after, each layer's
    kept fraction and its last threshold's c. ``limit`` takes the first images only."""
    setup = pruning.proxy_setup(variant_id, "network_surgery", data, limit)
    settings = setup.settings
    if surgery_epochs is not None:
        settings = settings.model_copy(update={"epochs": surgery_epochs})
    with pruning.pretrained(setup, epochs) as (model, batches, before):
        result = surgery(model, settings, setup.flat, batches, "cpu")
        after = pruning.top1(model, setup.test_images, setup.test_labels)
    return {
        "before": before,
        "after": after,
        "kept": pruning.sparsity_of(model, list(result)),
        "c": {name: round(layer["c"], 3) for name, layer in result.items()},
    }


def _proxy_runner(variant_id: str) -> Any:
    def run(progress: bool) -> tuple[float, float]:
        measured = surgery_proxy(variant_id)
        if progress:
            import click

            kept = ", ".join(f"{name} {fraction:.2%}" for name, fraction in measured["kept"].items())
            click.echo(
                f"{variant_id}: top-1 {measured['before']:g}% → {measured['after']:g}% (kept {kept})",
                err=True,
            )
        return measured["after"], measured["before"] - 1.0

    return run


def proxy_checks() -> list:
    """The paper's proxy checks (its plugin's ``papers_checks``)."""
    return [
        pruning.mnist5k_check(
            variant_id,
            _proxy_runner(variant_id),
            f"{network} trained on 5,000 of MNIST's digits (4,000 training, 1,000 test images) for "
            f"{PROXY_EPOCHS} epochs with Caffe's SGD settings, not on MNIST's 60,000; then surgery at "
            "the paper's per-layer kept fractions (Table 2) for the variant's epochs, masks updated with "
            "probability (1 + γ·iter)^-power; passes when the model's top-1 after surgery is within 1 "
            "point of the unpruned model's",
        )
        for variant_id, network in (("dns-lenet300_100", "LeNet-300-100"), ("dns-lenet5_caffe", "LeNet-5"))
    ]


__all__ = [
    "NETWORK_SURGERY",
    "SurgerySettings",
    "surgery",
    "surgery_proxy",
    "update_mask",
    "update_probability",
]
