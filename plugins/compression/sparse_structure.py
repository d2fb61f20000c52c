"""Huang and Wang, "Data-Driven Sparse Structure Selection for Deep Neural Networks" (ECCV 2018, arXiv
1707.01213, SSS): a scaling factor on each structure, driven to exact zeros by accelerated proximal
gradient, and the structures whose factor is zero removed.

Each structure (a neuron or feature map here) gets a factor ``λ`` that multiplies its output; the
network's weights and the factors are trained together on the loss plus ``γ‖λ‖₁``. The factors are
updated by accelerated proximal gradient (APG, Nesterov's acceleration of the proximal step): from the
look-ahead point ``d = λ_t + (t−1)/(t+2)·(λ_t − λ_{t−1})``, a gradient step ``z = d − η∇L(d)`` and the
ℓ1 proximal operator, soft-thresholding ``λ_{t+1} = sign(z)·max(|z| − ηγ, 0)``, which leaves exact zeros
(a subgradient step on ``γ‖λ‖₁`` would only make them small). The weights take ordinary SGD steps at
the same time. A structure whose factor is zero contributes nothing and is removed: the factors
left are folded into the weights of the layers that read them (a factor after the last channel-wise
operation scales what the next layer reads), so the narrowed network computes what the scaled one did.

Here the structures are the output channels of convolutions and linear layers (the paper's neurons;
its groups of ResNeXt and residual blocks of ResNet need a rewrite that removes whole blocks, which the
registry's channel removal does not do: not implemented). The factor is a gate on the layer's
feature maps (:mod:`.gates`) and the removal :func:`papers_plugins.compression.channels.remove_channels`.

Hand-written: the APG update on the factors (a few lines of torch); torch's optimisers have no
proximal step.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import Field

from papers.errors import PapersError
from papers.graph import FlatGraph
from papers.methods import Method, MethodContext, Settings

if TYPE_CHECKING:
    import torch


class SparseStructureSettings(Settings):
    """The settings of ``sparse_structure``."""

    gamma: float = Field(gt=0, description="γ, the weight of the ℓ1 penalty on the scaling factors.")
    layers: list[str] = Field(
        [],
        description="The convolution (or linear) layers whose output channels get factors; empty: every "
        "convolution whose channels can be removed.",
    )
    epochs: int = Field(5, ge=1, le=1000, description="Epochs of training weights and factors together.")
    factor_lr: float = Field(0.1, gt=0, description="η, the step of the factors' proximal gradient.")
    final_epochs: int = Field(0, ge=0, le=1000, description="Epochs of fine-tuning the narrowed network.")
    retrain_lr: float = Field(1.0e-3, gt=0, description="SGD rate of the weights.")
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5.0e-4, ge=0)
    batch_size: int = Field(64, ge=1, le=65536)


def check_settings(flat: FlatGraph, settings: SparseStructureSettings) -> FlatGraph:
    """The rewrite: the graph unchanged (which structures go depends on training), once the layers fit."""
    from papers_plugins.compression.taylor import pruned_layers

    pruned_layers(flat, settings.layers, field="settings.layers")
    return flat


def soft_threshold(values: torch.Tensor, threshold: float) -> torch.Tensor:
    """The ℓ1 proximal operator: ``sign(v)·max(|v| − threshold, 0)``."""
    import torch

    return torch.sign(values) * torch.clamp(values.abs() - threshold, min=0.0)


@dataclass
class APG:
    """Accelerated proximal gradient on tensors ``factors`` (updated in place): call :meth:`look_ahead`
    before the forward pass (the factors become the point ``d`` the gradient is taken at), then
    :meth:`step` after the backward pass."""

    factors: list[Any]
    lr: float
    gamma: float
    t: int = 0
    previous: list[Any] = field(default_factory=list)
    current: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.current = [f.detach().clone() for f in self.factors]
        self.previous = [f.detach().clone() for f in self.factors]

    def look_ahead(self) -> None:
        import torch

        momentum = self.t / (self.t + 3)  # (t−1)/(t+2) with t counted from 1
        with torch.no_grad():
            for factor, now, before in zip(self.factors, self.current, self.previous, strict=True):
                factor.copy_(now + momentum * (now - before))

    def step(self) -> None:
        import torch

        with torch.no_grad():
            for index, factor in enumerate(self.factors):
                grad = factor.grad if factor.grad is not None else torch.zeros_like(factor)
                new = soft_threshold(factor - self.lr * grad, self.lr * self.gamma)
                self.previous[index], self.current[index] = self.current[index], new
                factor.copy_(new)
                factor.grad = None
        self.t += 1


@dataclass
class SparseRun:
    """What :func:`sparse_structure` did: the factors at the end, and each layer's kept channels."""

    factors: dict[str, list[float]]
    kept: dict[str, list[int]]


def sparse_structure(
    model: Any,
    points: Mapping[str, str],
    widths: Mapping[str, int],
    settings: SparseStructureSettings,
    batches: Any,
    device: str = "cpu",
) -> SparseRun:
    """Train ``model``'s weights (SGD) and a factor per output channel of ``widths``' layers (APG) for
    ``settings.epochs`` passes over ``batches`` (a function giving one pass); the factors are gates at
    ``points``. Gives the final factors and the channels whose factor is not zero. Raises
    :class:`PapersError` when every factor of a layer reached zero (γ too high for it)."""
    import torch

    from papers_plugins.compression.gates import ChannelGates

    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=settings.retrain_lr,
        momentum=settings.momentum,
        weight_decay=settings.weight_decay,
    )
    with ChannelGates(model, points, widths) as gates:
        for name in widths:
            gates.masks[name].requires_grad_(True)
        apg = APG([gates.masks[name] for name in widths], settings.factor_lr, settings.gamma)
        model.train()
        for _ in range(settings.epochs):
            for images, labels in batches():
                apg.look_ahead()
                optimizer.zero_grad(set_to_none=True)
                torch.nn.functional.cross_entropy(model(images.to(device)), labels.to(device)).backward()
                optimizer.step()
                apg.step()
        model.eval()
        factors = {name: gates.masks[name].detach().clone() for name in widths}
    for name, values in factors.items():
        if not bool((values != 0).any()):
            raise PapersError(
                f"every scaling factor of layer {name!r} reached zero: γ = {settings.gamma} removes the "
                "whole layer",
                field="settings.gamma",
            )
    return SparseRun(
        {name: [float(v) for v in values] for name, values in factors.items()},
        {name: [int(i) for i in values.nonzero().flatten()] for name, values in factors.items()},
    )


def fold_factors(model: Any, flat: FlatGraph, factors: Mapping[str, list[float]]) -> None:
    """Multiply, in ``model``, the weights that read each layer's channels by the channel's factor (a
    convolution's input channels, a linear layer's block of features after a flatten): the model then
    computes what it did with the factors as gates."""
    import torch

    from papers_plugins.compression.channels import channel_layers

    layers = channel_layers(flat)
    with torch.no_grad():
        for name, values in factors.items():
            scale = torch.tensor(values)
            for consumer in layers[name].next_layers:
                weight = model.get_submodule(consumer.name).weight
                columns = consumer.offset + torch.arange(len(values))[:, None] * consumer.block
                columns = (columns + torch.arange(consumer.block)[None, :]).flatten()
                shape = (1, -1) + (1,) * (weight.dim() - 2)
                weight[:, columns] *= scale.repeat_interleave(consumer.block).to(weight).view(shape)


def sparse_structure_method(model: Any, settings: SparseStructureSettings, context: MethodContext) -> Any:
    """``papers compress --data``: SSS on the training split of ``--data``; the factors folded in, the
    channels whose factor is zero removed, the narrower model fine-tuned."""
    from papers.methods import Narrowed
    from papers_plugins.compression.pruning import retrain, shuffled_batches, training_split
    from papers_plugins.compression.taylor import pruned_layers

    if context.data is None:
        raise PapersError("sparse_structure trains its scaling factors: give --data", field="--data")
    widths = pruned_layers(context.flat, settings.layers, field="settings.layers")
    shape = tuple(next(iter(context.flat.inputs.values())))
    images, labels = training_split(str(context.data), shape)
    batches = shuffled_batches(images, labels, settings.batch_size)
    narrowed, flat, _ = select_and_remove(model, context.flat, widths, settings, batches, context.device)
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


def select_and_remove(
    model: Any,
    flat: FlatGraph,
    widths: Mapping[str, int],
    settings: SparseStructureSettings,
    batches: Any,
    device: str,
) -> tuple[Any, FlatGraph, SparseRun]:
    """SSS on ``model``, its factors folded into the readers' weights, the zero ones' channels removed."""
    from papers_plugins.compression.channels import remove_channels
    from papers_plugins.compression.gates import gate_points

    run = sparse_structure(model, gate_points(model, flat, widths), widths, settings, batches, device)
    fold_factors(model, flat, run.factors)
    narrowed, narrowed_flat = remove_channels(model, flat, run.kept)
    return narrowed, narrowed_flat, run


SPARSE_STRUCTURE = Method(
    name="sparse_structure",
    settings=SparseStructureSettings,
    description="A scaling factor on each output channel, trained with the weights under an ℓ1 penalty "
    "by accelerated proximal gradient to exact zeros; the zero channels removed and the factors folded "
    "into the next layers (Huang and Wang 2018, SSS).",
    rewrite=check_settings,
    apply=sparse_structure_method,
)


# -- the small-scale reproduction (`papers check huang2018 --run`) --------------------------------------

PROXY_VARIANT = "huang2018-lenet5_caffe"


def sparse_structure_proxy(
    variant_id: str = PROXY_VARIANT,
    data: str = "builtin:mnist5k",
    *,
    epochs: int | None = None,
    overrides: Mapping[str, Any] | None = None,
    limit: int | None = None,
) -> dict[str, Any]:
    """Train ``variant_id``'s base on ``data`` (its recipe's SGD settings, from a fixed seed), run SSS as
    the variant's settings say (``overrides`` replace some), remove the zero-factor channels, fine-tune,
    and give top-1 (percent) before and after, the widths and the multiply-adds before and after."""
    import time

    from papers.measure import measure_graph
    from papers.registry import get_registry
    from papers_plugins.compression.pruning import PROXY_EPOCHS, pretrained, proxy_setup, retrain, top1
    from papers_plugins.compression.taylor import pruned_layers

    setup = proxy_setup(variant_id, "sparse_structure", data, limit)
    settings = setup.settings.model_copy(update=dict(overrides or {}))
    assert isinstance(settings, SparseStructureSettings)
    widths = pruned_layers(setup.flat, settings.layers, field="settings.layers")
    began = time.perf_counter()
    with pretrained(setup, PROXY_EPOCHS if epochs is None else epochs) as (model, batches, before):
        narrowed, flat, run = select_and_remove(model, setup.flat, widths, settings, batches, "cpu")
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
    catalogue = get_registry().catalogue
    return {
        "before": before,
        "after": after,
        "widths": {name: (widths[name], len(kept)) for name, kept in run.kept.items()},
        "macs": (
            measure_graph(setup.base, setup.flat, catalogue).macs,
            measure_graph(variant_id, flat, catalogue).macs,
        ),
        "seconds": round(time.perf_counter() - began, 1),
    }


def _proxy_runner(variant_id: str) -> Any:
    from papers_plugins.compression.channels import proxy_runner

    return proxy_runner(sparse_structure_proxy, variant_id, "channels")


def proxy_checks() -> list:
    """The paper's proxy check (its plugin's ``papers_checks``)."""
    from papers_plugins.compression.pruning import PROXY_EPOCHS, mnist5k_check

    return [
        mnist5k_check(
            PROXY_VARIANT,
            _proxy_runner(PROXY_VARIANT),
            f"LeNet-5 (Caffe's) trained on builtin:mnist5k's 4,000 training digits for {PROXY_EPOCHS} "
            "epochs with Caffe's SGD settings, not a ResNet or ResNeXt on ImageNet; a scaling factor on "
            "each of its convolutional feature maps and fc1's units trained with the weights under the "
            "variant's ℓ1 penalty by accelerated proximal gradient, the zero-factor channels removed "
            "for real and the narrower network fine-tuned; passes when its top-1 on the 1,000 test "
            "digits is within 1 point of the unpruned model's",
        )
    ]
