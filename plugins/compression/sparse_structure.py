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

Two of the paper's levels are here (``level``). ``neuron``: the structures are the output channels of
convolutions and linear layers; the factor is a gate on the layer's feature maps (:mod:`.gates`) and
the removal :func:`papers_plugins.compression.channels.remove_channels`. ``block``: the structures are
residual blocks; the factor multiplies the output of the block's branch before the addition (the same
gate, one channel wide, on the branch's last layer), the same APG update trains it, and a block whose
factor is zero is removed whole (:func:`papers_plugins.compression.blocks.remove_blocks`: its branch and
addition dropped, the addition's readers reading the block's input), the factors left folded into the
branches' last layers. Only a block whose shortcut is the identity can go; one that projects or
subsamples is refused by name. ``group``: the structures are the groups of a grouped convolution
(ResNeXt's); a factor per group scales its output maps where the next convolution reads them
(:class:`papers_plugins.compression.groups.GroupGates`), and a group whose factor is zero is removed
with the filters that feed it and the next convolution's columns for it
(:func:`papers_plugins.compression.groups.remove_groups`), the others folded into those columns.

Hand-written: the APG update on the factors (a few lines of torch); torch's optimisers have no
proximal step.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from papers.errors import PapersError
from papers.graph import FlatGraph
from papers.methods import Method, MethodContext, Settings

if TYPE_CHECKING:
    import torch


class SparseStructureSettings(Settings):
    """The settings of ``sparse_structure``."""

    gamma: float = Field(gt=0, description="γ, the weight of the ℓ1 penalty on the scaling factors.")
    level: Literal["neuron", "group", "block"] = Field(
        "neuron",
        description="The structures that get factors: `neuron`, each output channel of `layers`; `group`, "
        "each group of the grouped convolutions `layers`; `block`, each residual block of `blocks`, "
        "removed whole where its factor reaches zero.",
    )
    layers: list[str] = Field(
        [],
        description="level neuron: the convolution (or linear) layers whose output channels get factors "
        "(empty: every convolution whose channels can be removed); level group: the grouped "
        "convolutions whose groups get factors (empty: every one whose groups can be removed).",
    )
    blocks: list[str] = Field(
        [],
        description="level block: the residual blocks (block instances, `layer1.1`) that get factors; "
        "empty: every block whose shortcut is the identity.",
    )
    epochs: int = Field(5, ge=1, le=1000, description="Epochs of training weights and factors together.")
    factor_lr: float = Field(0.1, gt=0, description="η, the step of the factors' proximal gradient.")
    final_epochs: int = Field(0, ge=0, le=1000, description="Epochs of fine-tuning the narrowed network.")
    retrain_lr: float = Field(1.0e-3, gt=0, description="SGD rate of the weights.")
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5.0e-4, ge=0)
    batch_size: int = Field(64, ge=1, le=65536)


def check_settings(flat: FlatGraph, settings: SparseStructureSettings) -> FlatGraph:
    """The rewrite: the graph unchanged (which structures go depends on training), once the layers (or
    blocks) fit the graph and the other level's setting is left out."""
    structures(flat, settings)
    return flat


def structures(flat: FlatGraph, settings: SparseStructureSettings) -> dict[str, int]:
    """The structures that get factors, each with its number of factors: a layer's output channels
    (level ``neuron``), one per residual block (level ``block``). Raises :class:`SpecError` naming the
    setting where they do not fit ``flat``."""
    from papers.errors import SpecError
    from papers_plugins.compression.blocks import chosen_blocks
    from papers_plugins.compression.taylor import pruned_layers

    if settings.level == "block":
        if settings.layers:
            raise SpecError(
                "layers is the neuron level's setting; level block takes blocks", field="settings.layers"
            )
        return dict.fromkeys(chosen_blocks(flat, settings.blocks, field="settings.blocks"), 1)
    if settings.blocks:
        raise SpecError(
            f"blocks is the block level's setting; level {settings.level} takes layers",
            field="settings.blocks",
        )
    if settings.level == "group":
        from papers_plugins.compression.groups import chosen_grouped

        chosen = chosen_grouped(flat, settings.layers, field="settings.layers")
        return {name: layer.groups for name, layer in chosen.items()}
    return dict(pruned_layers(flat, settings.layers, field="settings.layers"))


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
    *,
    whole: bool = False,
    gates: Any = None,
) -> SparseRun:
    """Train ``model``'s weights (SGD) and a factor per output channel of ``widths``' layers (APG) for
    ``settings.epochs`` passes over ``batches`` (a function giving one pass); the factors are gates at
    ``points``. Gives the final factors and the channels whose factor is not zero. Raises
    :class:`PapersError` when every factor of a layer reached zero (γ too high for it), unless
    ``whole`` (each structure has one factor and goes whole: a residual block). ``gates``: other gates
    than channels' (with ``masks`` by name, closed on exit: :class:`~.groups.GroupGates`)."""
    import torch

    from papers_plugins.compression.gates import ChannelGates

    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=settings.retrain_lr,
        momentum=settings.momentum,
        weight_decay=settings.weight_decay,
    )
    with gates if gates is not None else ChannelGates(model, points, widths) as gates:
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
        if not whole and not bool((values != 0).any()):
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

    if context.data is None:
        raise PapersError("sparse_structure trains its scaling factors: give --data", field="--data")
    widths = structures(context.flat, settings)
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
    """SSS on ``model``, its factors folded into the readers' weights, the zero ones' channels removed
    (level ``block``: the factors folded into the branches, the zero ones' blocks removed)."""
    from papers_plugins.compression.channels import remove_channels
    from papers_plugins.compression.gates import gate_points

    if settings.level == "block":
        return select_and_remove_blocks(model, flat, list(widths), settings, batches, device)
    if settings.level == "group":
        return select_and_remove_groups(model, flat, list(widths), settings, batches, device)
    run = sparse_structure(model, gate_points(model, flat, widths), widths, settings, batches, device)
    fold_factors(model, flat, run.factors)
    narrowed, narrowed_flat = remove_channels(model, flat, run.kept)
    return narrowed, narrowed_flat, run


def select_and_remove_blocks(
    model: Any,
    flat: FlatGraph,
    names: list[str],
    settings: SparseStructureSettings,
    batches: Any,
    device: str,
) -> tuple[Any, FlatGraph, SparseRun]:
    """SSS's block level on ``model``: a factor on the branch output of each block of ``names``
    (a one-channel gate on the branch's last layer, before the addition) trained by the same APG, then
    the blocks whose factor is zero removed and the others' factors folded into their branches."""
    from papers_plugins.compression.blocks import remove_blocks, residual_blocks

    blocks = residual_blocks(flat)
    points = {name: blocks[name].branch for name in names}
    run = sparse_structure(model, points, dict.fromkeys(names, 1), settings, batches, device, whole=True)
    smaller, smaller_flat = remove_blocks(model, flat, {name: run.factors[name][0] for name in names})
    return smaller, smaller_flat, run


def select_and_remove_groups(
    model: Any,
    flat: FlatGraph,
    names: list[str],
    settings: SparseStructureSettings,
    batches: Any,
    device: str,
) -> tuple[Any, FlatGraph, SparseRun]:
    """SSS's group level on ``model``: a factor on each group of the grouped convolutions ``names``
    (on the maps their reader reads) trained by the same APG, then the groups whose factor is zero
    removed and the others' factors folded into the readers."""
    from papers_plugins.compression.groups import GroupGates, chosen_grouped, remove_groups

    layers = chosen_grouped(flat, names, field="settings.layers")
    widths = {name: layer.groups for name, layer in layers.items()}
    gates = GroupGates(model, layers)
    run = sparse_structure(model, {}, widths, settings, batches, device, gates=gates)
    thinner, thinner_flat = remove_groups(model, flat, run.factors)
    return thinner, thinner_flat, run


SPARSE_STRUCTURE = Method(
    name="sparse_structure",
    settings=SparseStructureSettings,
    description="A scaling factor on each output channel (level neuron), each group of a grouped "
    "convolution (level group) or each residual block's branch (level block), trained with the "
    "weights under an ℓ1 penalty by accelerated proximal gradient to exact zeros; the zero channels, "
    "groups or blocks removed and the factors folded in (Huang and Wang 2018, SSS).",
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

    from papers_plugins.compression.channels import proxy_result
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
    return proxy_result(setup, variant_id, flat, run.kept, began, before=before, after=after)


BLOCK_PROXY_VARIANT = "huang2018-resnet20"
BLOCK_PROXY_OPTIONS = {"widths": [8, 16, 32], "image_size": 16}
"""ResNet-20 at half its widths on the digits resized to 16×16: the registry's choice, so that training on
one thread takes a minute or two, not the paper's network."""
BLOCK_PROXY_EPOCHS = 6
BLOCK_PROXY_LR = 0.05
"""Epochs and SGD rate of the training before SSS (momentum 0.9, weight decay 5e-4): the registry's."""


def block_proxy(
    variant_id: str = BLOCK_PROXY_VARIANT,
    data: str = "builtin:mnist5k",
    *,
    epochs: int = BLOCK_PROXY_EPOCHS,
    overrides: Mapping[str, Any] | None = None,
    limit: int | None = None,
) -> dict[str, Any]:
    """Train ``variant_id``'s base at :data:`BLOCK_PROXY_OPTIONS` on ``data`` from a fixed seed, run
    SSS's block level as the variant's settings say (``overrides`` replace some), remove the blocks
    whose factor is zero, fine-tune, and give top-1 (percent) before and after, each block's factor,
    the blocks removed and the multiply-adds before and after. ``limit``: the first images only."""
    import time
    from types import SimpleNamespace

    import torch

    from papers.api import build_model, expand_variant
    from papers.data import in_memory
    from papers.measure import measure_graph
    from papers.methods import variant_steps
    from papers.registry import get_registry
    from papers.train import intra_op_threads
    from papers_plugins.compression.pruning import retrain, shuffled_batches, top1

    base = get_registry().variant(variant_id)[1].base
    assert base is not None
    (step,) = [s for s in variant_steps(variant_id) if s.method.name == "sparse_structure"]
    settings = step.settings.model_copy(update=dict(overrides or {}))
    assert isinstance(settings, SparseStructureSettings) and settings.level == "block"
    flat = expand_variant(base, **BLOCK_PROXY_OPTIONS)
    names = list(structures(flat, settings))
    shape = tuple(next(iter(flat.inputs.values())))
    train_images, train_labels, test_images, test_labels = in_memory(data, shape)  # type: ignore[arg-type]
    if limit is not None:
        train_images, train_labels = train_images[:limit], train_labels[:limit]
        test_images, test_labels = test_images[:limit], test_labels[:limit]
    training = SimpleNamespace(retrain_lr=BLOCK_PROXY_LR, momentum=0.9, weight_decay=5.0e-4)
    began = time.perf_counter()
    with intra_op_threads(1), torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_model(base, **BLOCK_PROXY_OPTIONS).eval()
        batches = shuffled_batches(train_images, train_labels, settings.batch_size)
        retrain(model, batches, list(model.parameters()), {}, training, "cpu", epochs=epochs)
        before = top1(model, test_images, test_labels)
        smaller, smaller_flat, run = select_and_remove_blocks(model, flat, names, settings, batches, "cpu")
        if settings.final_epochs:
            parameters = list(smaller.parameters())
            retrain(smaller, batches, parameters, {}, settings, "cpu", epochs=settings.final_epochs)
        after = top1(smaller.eval(), test_images, test_labels)
    catalogue = get_registry().catalogue
    return {
        "before": before,
        "after": after,
        "factors": {name: run.factors[name][0] for name in names},
        "removed": [name for name in names if run.factors[name][0] == 0.0],
        "widths": {"blocks": (len(names), sum(run.factors[name][0] != 0.0 for name in names))},
        "macs": (
            measure_graph(base, flat, catalogue).macs,
            measure_graph(variant_id, smaller_flat, catalogue).macs,
        ),
        "seconds": round(time.perf_counter() - began, 1),
    }


def _proxy_runner(variant_id: str) -> Any:
    from papers_plugins.compression.channels import proxy_runner

    return proxy_runner(sparse_structure_proxy, variant_id, "channels")


def _block_proxy_runner(variant_id: str) -> Any:
    from papers_plugins.compression.channels import proxy_runner

    def removed(measured: dict[str, Any]) -> list[str]:
        factors = ", ".join(f"{name} {value:.3g}" for name, value in measured["factors"].items())
        return [f"  factors {factors}; removed: {', '.join(measured['removed']) or 'none'}"]

    return proxy_runner(block_proxy, variant_id, "residual", removed)


def proxy_checks() -> list:
    """The paper's proxy checks (its plugin's ``papers_checks``)."""
    from papers_plugins.compression.pruning import PROXY_EPOCHS, mnist5k_check

    return [
        mnist5k_check(
            BLOCK_PROXY_VARIANT,
            _block_proxy_runner(BLOCK_PROXY_VARIANT),
            f"ResNet-20 at half its widths (8, 16, 32) trained on builtin:mnist5k's 4,000 training "
            f"digits resized to 16×16 for {BLOCK_PROXY_EPOCHS} epochs (SGD at {BLOCK_PROXY_LR}), not a "
            "ResNet on ImageNet; a scaling factor on the branch of each of its seven blocks whose "
            "shortcut is the identity trained with the weights under the variant's ℓ1 penalty by "
            "accelerated proximal gradient, the blocks whose factor reached zero removed for real and "
            "the shallower network fine-tuned; passes when its top-1 on the 1,000 test digits is "
            "within 1 point of the unpruned model's",
        ),
        mnist5k_check(
            PROXY_VARIANT,
            _proxy_runner(PROXY_VARIANT),
            f"LeNet-5 (Caffe's) trained on builtin:mnist5k's 4,000 training digits for {PROXY_EPOCHS} "
            "epochs with Caffe's SGD settings, not a ResNet or ResNeXt on ImageNet; a scaling factor on "
            "each of its convolutional feature maps and fc1's units trained with the weights under the "
            "variant's ℓ1 penalty by accelerated proximal gradient, the zero-factor channels removed "
            "for real and the narrower network fine-tuned; passes when its top-1 on the 1,000 test "
            "digits is within 1 point of the unpruned model's",
        ),
    ]
