"""Yang, Chen and Sze, "Designing Energy-Efficient Convolutional Neural Networks using Energy-Aware
Pruning" (CVPR 2017, arXiv 1611.05128): layer-by-layer weight pruning in the order of the layers'
estimated energy, each layer's output feature maps kept close to the dense layer's.

``energy_aware_prune`` estimates every convolution and linear layer's energy with the paper's model
(:mod:`papers_plugins.compression.energy`) and prunes the layers its settings name, the most
energy-consuming first. For each layer, on responses sampled from training images (the layer's inputs
in the network whose earlier-visited layers are already pruned, the dense layer's outputs on them as
the target):

1. magnitude pruning keeps the largest weights, short of the layer's kept count by the share
   ``restored``;
2. restoring: the pruned weights that most reduce the output error ‖Y − X Wᵀ‖² are put back, greedily,
   up to the kept count (in rounds of at most one weight per output channel, whose gains are then
   independent: restoring weight i of channel j lowers the error by 2·w·(x_i·e_j) − w²·‖x_i‖², with
   e_j the channel's current residual);
3. a least-squares local update of the kept weights (each output channel's closed-form fit of its
   kept weights to its target, ``torch.linalg.lstsq``; the least-norm change, so that weights the
   samples say nothing about keep their values).

After every layer is pruned, the whole network is fine-tuned with back-propagation where the settings
give epochs, the pruned weights held at zero (:func:`papers_plugins.compression.pruning.retrain`). The
pruned weights are zeros in dense tensors, which ``papers compress``'s container stores sparsely, as
for Han et al.'s pruning. Without weights, ``measure`` gives the energy reduction the kept fractions
imply under the model (dense inputs unless ``input_density`` says otherwise), with the weights kept
and the compression ratio.

``energy_estimate`` applies the energy model alone to a base network, for the paper's AlexNet and
GoogLeNet figures, whose per-layer pruning ratios the stored text of the paper did not give: the
variants hold the paper's reductions as reported values, and :func:`estimate` gives the dense
networks' estimates beside them.

Hand-written: the greedy restore and the per-channel fits (a few lines of torch each); no library
implements the paper's procedure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field

from papers.errors import PapersError, SpecError
from papers.graph import FlatGraph
from papers.methods import Estimate, Method, MethodContext, Settings
from papers_plugins.compression.energy import Dataflow, LayerEnergy, LayerShape, by_energy, network_energy

if TYPE_CHECKING:
    import torch

Fraction = Annotated[float, Field(gt=0, le=1)]


class EnergyModelSettings(Settings):
    """The settings of ``energy_estimate`` (and the energy model's part of ``energy_aware_prune``'s)."""

    input_density: dict[str, Fraction] = Field(
        {},
        description="A layer's fraction of non-zero inputs, by node name, where known (MACs on zero "
        "inputs are skipped); a layer not named has dense inputs.",
    )
    filters_per_pass: int = Field(16, ge=1, le=4096, description="Filters one pass over the array processes.")
    channels_per_pass: int = Field(4, ge=1, le=4096, description="Input channels one pass accumulates.")
    batch: int = Field(1, ge=1, le=65536, description="Images that share one fetch of the weights.")


class EnergyPruneSettings(EnergyModelSettings):
    """The settings of ``energy_aware_prune``."""

    kept: dict[str, Fraction] = Field(
        description="A layer's kept fraction of its weights, by node name; only these layers are pruned."
    )
    restored: float = Field(
        0.1,
        ge=0,
        lt=1,
        description="The share of a layer's kept weights chosen by the restore step instead of by magnitude.",
    )
    least_squares: bool = Field(
        True, description="Refit the kept weights by least squares (local fine-tuning)."
    )
    images: int = Field(200, ge=1, le=100000, description="Training images the responses are sampled from.")
    positions: int = Field(
        16, ge=1, le=10000, description="Output positions sampled per image in a convolution's responses."
    )
    finetune_epochs: int = Field(
        0, ge=0, le=1000, description="Epochs of global fine-tuning, where data is given."
    )
    retrain_lr: float = Field(1.0e-3, gt=0, description="SGD rate of the global fine-tuning.")
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5.0e-4, ge=0)
    batch_size: int = Field(64, ge=1, le=65536)
    seed: int = Field(0, ge=0, description="Seed of the sampled positions and the fine-tuning's order.")


# -- the energy model on a graph ---------------------------------------------------------------------


def layer_shapes(flat: FlatGraph) -> list[LayerShape]:
    """The shapes of ``flat``'s convolution and linear layers, in graph order, from a meta forward pass
    at batch 1."""
    import torch

    from papers.build import build
    from papers.registry import get_registry
    from papers_plugins.compression.pruning import PRUNED_OPS

    model = build(flat, get_registry().catalogue, device="meta")
    names = [node.name for node in flat.nodes if node.op in PRUNED_OPS]
    seen: dict[str, tuple[Any, Any, Any]] = {}

    def record(name: str) -> Any:
        def hook(
            module: Any, args: tuple, output: Any
        ) -> None:  # a hook returning a value replaces the output
            seen.setdefault(name, (module, args[0].shape, output.shape))

        return hook

    handles = [model.get_submodule(name).register_forward_hook(record(name)) for name in names]
    try:
        with torch.no_grad():
            model(*[torch.empty(1, *shape, device="meta") for shape in flat.inputs.values()])
    finally:
        for handle in handles:
            handle.remove()
    shapes = []
    for name in names:
        if name not in seen:
            continue  # a layer the forward pass does not reach (none in the registry's graphs)
        module, given, produced = seen[name]
        if isinstance(module, torch.nn.Conv2d):
            shapes.append(
                LayerShape(
                    name,
                    module.out_channels,
                    module.in_channels // module.groups,
                    tuple(module.kernel_size),
                    tuple(given[-2:]),
                    tuple(produced[-2:]),
                    module.groups,
                )
            )
        elif isinstance(module, torch.nn.Linear):
            shapes.append(LayerShape(name, module.out_features, module.in_features))
    return shapes


def energies(
    flat: FlatGraph, settings: EnergyModelSettings, kept: Mapping[str, float] | None = None
) -> dict[str, LayerEnergy]:
    """Each convolution and linear layer's estimated energy, with the weight densities ``kept``."""
    dataflow = Dataflow(settings.filters_per_pass, settings.channels_per_pass, settings.batch)
    return network_energy(layer_shapes(flat), kept, settings.input_density, dataflow)


def estimate(variant_id: str, settings: EnergyModelSettings | None = None) -> dict[str, LayerEnergy]:
    """The energy model on a variant's graph (a method variant: on its base), dense weights."""
    from papers.api import expand_variant
    from papers.registry import get_registry

    base = get_registry().variant(variant_id)[1].base or variant_id
    return energies(expand_variant(base), settings or EnergyModelSettings())


def check_layers(flat: FlatGraph, settings: EnergyModelSettings) -> FlatGraph:
    """The rewrite: the graph unchanged, once every layer the settings name is one of its convolution
    or linear layers (refused before any weight exists)."""
    from papers_plugins.compression.pruning import PRUNED_OPS

    prunable = sorted(node.name for node in flat.nodes if node.op in PRUNED_OPS)
    named = {"input_density": settings.input_density}
    if isinstance(settings, EnergyPruneSettings):
        named["kept"] = settings.kept
        if not settings.kept:
            raise SpecError("settings.kept names no layer; nothing would be pruned")
    for field, layers in named.items():
        for name in layers:
            if name not in prunable:
                known = ", ".join(prunable[:12]) or "none"
                raise SpecError(
                    f"settings.{field} names {name!r}, which is no convolution or linear layer of the base "
                    f"model (its layers: {known}{', ...' if len(prunable) > 12 else ''})"
                )
    return flat


def _printed_bounds(fraction: float) -> tuple[float, float]:
    """The interval a printed fraction stands for (0.08: [0.075, 0.085]), as in Han et al.'s check."""
    places = Decimal(repr(fraction)).as_tuple().exponent
    assert isinstance(places, int)
    half = 0.5 * 10.0 ** min(-2, places)
    return max(0.0, fraction - half), min(1.0, fraction + half)


def static_measure(flat: FlatGraph, settings: EnergyPruneSettings) -> dict[str, float | Estimate]:
    """The settings' energy reduction under the model (dense energy over pruned), with the interval the
    fractions' printed precision allows, and the weights kept and compression ratio (as Han et al.'s)."""
    from papers_plugins.compression.pruning import PruneSettings
    from papers_plugins.compression.pruning import static_measure as kept_measure

    dense = sum(layer.total for layer in energies(flat, settings).values())
    pruned = {}
    for name, kept in (
        ("value", settings.kept),
        ("low", {k: _printed_bounds(v)[0] for k, v in settings.kept.items()}),
        ("high", {k: _printed_bounds(v)[1] for k, v in settings.kept.items()}),
    ):
        pruned[name] = sum(layer.total for layer in energies(flat, settings, kept).values())
    measured: dict[str, float | Estimate] = dict(kept_measure(flat, PruneSettings(kept=dict(settings.kept))))
    measured["energy_reduction"] = Estimate(
        dense / pruned["value"], dense / pruned["high"], dense / pruned["low"]
    )
    return measured


# -- one layer: magnitude, restore, least squares -------------------------------------------------------


def output_error(weight: torch.Tensor, inputs: torch.Tensor, target: torch.Tensor) -> float:
    """‖Y − X Wᵀ‖² relative to ‖Y‖²: how far a layer's responses are from the target."""
    return float(((target - inputs @ weight.T) ** 2).sum() / (target**2).sum().clamp_min(1e-30))


def magnitude_mask(weight: torch.Tensor, count: int) -> torch.Tensor:
    """The ``count`` largest-magnitude entries of ``weight`` (ties broken by position, as topk does)."""
    import torch

    mask = torch.zeros(weight.numel(), dtype=torch.bool)
    if count:
        mask[weight.detach().abs().flatten().topk(count).indices] = True
    return mask.view_as(weight)


def restore(
    weight: torch.Tensor, mask: torch.Tensor, inputs: torch.Tensor, target: torch.Tensor, count: int
) -> torch.Tensor:
    """``mask`` with ``count`` pruned weights restored (their original values), greedily, each round
    the best weight of as many output channels as remain to restore, the channels whose restoring
    lowers the output error most first. ``weight``: [out, k]; ``inputs``: [samples, k]; ``target``:
    [samples, out]."""
    import torch

    mask = mask.clone()
    residual = target - inputs @ (weight * mask).T  # [samples, out]
    norms = (inputs**2).sum(0)  # [k]
    while count > 0:
        gains = 2 * weight * (residual.T @ inputs) - weight**2 * norms
        gains = gains.masked_fill(mask, -torch.inf)
        best, index = gains.max(dim=1)  # one weight per output channel
        rows = best.argsort(descending=True)[: min(count, int(torch.isfinite(best).sum()))]
        if not len(rows):
            break
        columns = index[rows]
        mask[rows, columns] = True
        residual[:, rows] -= inputs[:, columns] * weight[rows, columns]
        count -= len(rows)
    return mask


def least_squares(
    weight: torch.Tensor, mask: torch.Tensor, inputs: torch.Tensor, target: torch.Tensor
) -> torch.Tensor:
    """Each output channel's kept weights refitted to its target (closed form), pruned ones zero. The fit
    is of the change to the kept weights, of least norm, so that a weight whose input the samples never
    excite (a dead ReLU) keeps its value rather than falling to zero."""
    import torch

    fitted = weight * mask
    for row in range(weight.shape[0]):
        support = mask[row].nonzero().flatten()
        if len(support):
            kept = inputs[:, support]
            residual = target[:, row : row + 1] - kept @ fitted[row, support][:, None]
            change = torch.linalg.lstsq(kept, residual, driver="gelsd").solution.flatten()
            fitted[row, support] += change
    return fitted


def prune_layer(
    weight: torch.Tensor,
    inputs: torch.Tensor,
    count: int,
    restored: float,
    refit: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One layer's pruning to ``count`` weights against the dense layer's responses on ``inputs``:
    magnitude, restore (``restored`` of the count), least squares (where ``refit``). ``weight`` is
    [out, k]; gives the new weight and its mask."""
    target = inputs @ weight.T
    restoring = round(count * restored)
    mask = restore(weight, magnitude_mask(weight, count - restoring), inputs, target, restoring)
    new = least_squares(weight, mask, inputs, target) if refit else weight * mask
    return new, mask


# -- the network: layers in order of energy -------------------------------------------------------------


@dataclass
class Pruned:
    """What :func:`energy_aware_prune` did: the order it visited the layers in and their masks."""

    order: list[str]
    masks: dict[str, Any]


def sampled_inputs(
    model: Any, name: str, images: torch.Tensor, positions: int, generator: torch.Generator
) -> torch.Tensor:
    """Layer ``name``'s inputs on ``images`` as rows of its weight matrix's columns: a linear layer's
    input vectors, or ``positions`` random patches per image of a convolution's (``[samples, k]``)."""
    import torch

    module = model.get_submodule(name)
    seen: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda m, args, output: seen.append(args[0].detach()))
    try:
        with torch.no_grad():
            for start in range(0, len(images), 100):
                model(images[start : start + 100])
    finally:
        handle.remove()
    given = torch.cat(seen)
    if isinstance(module, torch.nn.Linear):
        return given.flatten(1)
    patches = torch.nn.functional.unfold(
        given, module.kernel_size, dilation=module.dilation, padding=module.padding, stride=module.stride
    )  # [images, C·R·S, L]
    chosen = torch.randint(patches.shape[2], (len(given), positions), generator=generator)
    return (
        patches.gather(2, chosen[:, None, :].expand(-1, patches.shape[1], -1)).transpose(1, 2).flatten(0, 1)
    )


def energy_aware_prune(
    model: Any,
    flat: FlatGraph,
    settings: EnergyPruneSettings,
    images: torch.Tensor,
) -> Pruned:
    """Prune ``model`` in place: the named layers in order of estimated energy, each by magnitude,
    restore and least squares on its responses to ``images`` (the global fine-tuning is
    :func:`energy_aware_finetune`)."""
    import torch

    order = [name for name in by_energy(energies(flat, settings)) if name in settings.kept]
    generator = torch.Generator().manual_seed(settings.seed)
    masks = {}
    model.eval()
    for name in order:
        module = model.get_submodule(name)
        if getattr(module, "groups", 1) != 1:
            raise PapersError(
                f"energy_aware_prune: layer {name!r} is a grouped convolution, which it does not prune"
            )
        weight = module.weight.detach()
        inputs = sampled_inputs(model, name, images, settings.positions, generator)
        count = max(1, round(weight.numel() * settings.kept[name]))
        new, mask = prune_layer(weight.flatten(1), inputs, count, settings.restored, settings.least_squares)
        with torch.no_grad():
            module.weight.copy_(new.view_as(weight))
        masks[name] = mask.view_as(weight).to(weight.dtype)
    return Pruned(order, masks)


def energy_aware_finetune(
    model: Any, batches: Any, pruned: Pruned, settings: EnergyPruneSettings, device: str = "cpu"
) -> None:
    """The global fine-tuning, on ``batches`` (a function giving one pass) for the settings' epochs:
    every parameter trained, the pruned weights held at zero."""
    from papers_plugins.compression.pruning import retrain

    if settings.finetune_epochs:
        retrain(
            model,
            batches,
            list(model.parameters()),
            pruned.masks,
            settings,
            device,
            epochs=settings.finetune_epochs,
        )


def energy_aware_prune_method(model: Any, settings: EnergyPruneSettings, context: MethodContext) -> Any:
    """``papers compress --data``: the responses are sampled from the data's training images."""
    from papers_plugins.compression.pruning import shuffled_batches, training_split

    if context.data is None:
        raise PapersError("energy_aware_prune samples layer responses from data: give --data", field="--data")
    shape = tuple(next(iter(context.flat.inputs.values())))
    images, labels = training_split(str(context.data), shape)
    batches = shuffled_batches(images, labels, settings.batch_size, seed=settings.seed)
    pruned = energy_aware_prune(model, context.flat, settings, images[: settings.images])
    energy_aware_finetune(model, batches, pruned, settings, context.device)
    return model.eval()


ENERGY_AWARE_PRUNE = Method(
    name="energy_aware_prune",
    settings=EnergyPruneSettings,
    description="Layers pruned in order of their estimated energy (computation and data movement per "
    "memory level), each by magnitude, then restoring the weights that most reduce its output error, "
    "then a least-squares fit of the kept weights; global fine-tuning after (Yang et al. 2017).",
    rewrite=check_layers,
    apply=energy_aware_prune_method,
    measure=static_measure,
)


ENERGY_ESTIMATE = Method(
    name="energy_estimate",
    settings=EnergyModelSettings,
    description="The energy model of Yang et al. 2017 on the base network, its weights left as they are "
    "(the estimate: papers_plugins.compression.energy_aware.estimate).",
    rewrite=check_layers,
)


# -- the small-scale reproduction (`papers check yang2017 --run`) ---------------------------------------

PROXY_VARIANT = "yang2017-lenet5_caffe"


def energy_aware_proxy(
    variant_id: str = PROXY_VARIANT,
    data: str = "builtin:mnist5k",
    *,
    epochs: int | None = None,
    overrides: Mapping[str, Any] | None = None,
    limit: int | None = None,
) -> dict[str, Any]:
    """Train ``variant_id``'s base on ``data`` (its recipe's SGD settings, from a fixed seed), prune it as
    the variant's settings say (``overrides`` replace some), fine-tune, and give top-1 (percent) on the
    test split before, after the local steps and after fine-tuning, with plain magnitude pruning at the
    same fractions (no restore, no refit, no fine-tuning) beside the local steps, the order of the
    layers, their kept fractions and the energy reduction estimated from the densities reached."""
    import copy

    import torch

    from papers_plugins.compression.pruning import PROXY_EPOCHS, pretrained, proxy_setup, sparsity_of, top1

    setup = proxy_setup(variant_id, "energy_aware_prune", data, limit)
    settings = setup.settings.model_copy(update=dict(overrides or {}))
    assert isinstance(settings, EnergyPruneSettings)
    with pretrained(setup, PROXY_EPOCHS if epochs is None else epochs) as (model, batches, before):
        plain = copy.deepcopy(model)
        with torch.no_grad():
            for name, fraction in settings.kept.items():
                weight = plain.get_submodule(name).weight
                weight.mul_(magnitude_mask(weight, max(1, round(weight.numel() * fraction))))
        magnitude = top1(plain, setup.test_images, setup.test_labels)
        pruned = energy_aware_prune(model, setup.flat, settings, setup.train_images[: settings.images])
        local = top1(model, setup.test_images, setup.test_labels)
        energy_aware_finetune(model, batches, pruned, settings)
        after = top1(model, setup.test_images, setup.test_labels)
        kept = sparsity_of(model, pruned.order)
    dense = sum(layer.total for layer in energies(setup.flat, settings).values())
    reached = sum(layer.total for layer in energies(setup.flat, settings, kept).values())
    return {
        "before": before,
        "magnitude": magnitude,
        "local": local,
        "after": after,
        "order": pruned.order,
        "kept": kept,
        "energy_reduction": round(dense / reached, 4),
    }


def _proxy_runner(variant_id: str) -> Any:
    def run(progress: bool) -> tuple[float, float]:
        measured = energy_aware_proxy(variant_id)
        if progress:
            print(
                f"  top-1 {measured['before']}% dense, {measured['magnitude']}% by magnitude alone, "
                f"{measured['local']}% after the local steps (magnitude, restore, least squares), "
                f"{measured['after']}% fine-tuned; layers in order {', '.join(measured['order'])}; "
                f"estimated energy reduced {measured['energy_reduction']}×"
            )
        return measured["after"], measured["before"] - 1.0

    return run


def proxy_checks() -> list:
    """The paper's proxy check (its plugin's ``papers_checks``)."""
    from papers_plugins.compression.pruning import PROXY_EPOCHS, mnist5k_check

    return [
        mnist5k_check(
            PROXY_VARIANT,
            _proxy_runner(PROXY_VARIANT),
            f"LeNet-5 (Caffe's) trained on 5,000 of MNIST's digits (4,000 training, 1,000 test images) "
            f"for {PROXY_EPOCHS} epochs with Caffe's SGD settings, not AlexNet or GoogLeNet on ImageNet; "
            "pruned at the variant's per-layer rates (the registry's, not the paper's) in order of "
            "estimated energy, each layer by magnitude, restore and least squares on responses "
            "sampled from the variant's number of training images, then fine-tuned; passes when the "
            "pruned model's top-1 is within 1 point of the unpruned model's",
        )
    ]
