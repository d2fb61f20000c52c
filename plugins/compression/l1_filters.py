"""Li, Kadav, Durdanovic, Samet and Graf, "Pruning Filters for Efficient ConvNets" (ICLR 2017, arXiv
1608.08710): filters ranked by the sum of their absolute kernel weights, the smallest removed with
their feature maps, then one retraining.

``l1_filter_prune`` takes the paper's choices as data: a fraction of filters pruned per layer
(``rates``, VGG-16's conv 1 and 8-13 at 50%), or per stage (``stages``, the ResNets' p1, p2, p3)
applied to every convolution of the stage whose filters can go (in a residual network, each block's
first convolution: the second feeds the residual addition), less the sensitive layers it ``skip``s.
A layer loses ``ceil(rate × filters)`` filters: the rounding that reproduces the paper's Table 1 for
ResNet-56-pruned-A (10% of 16 filters is 2 pruned, not 1; to the nearest filter the FLOP reduction
would be 9.1%, not 10.4%). The rewrite narrows the graph (``papers build``/``check`` see the pruned
widths, multiply-adds and parameters); the apply step chooses which filters to keep by their ℓ1
norms in the weights given (independently per layer, or ``greedy``: not counting the kernels that
read feature maps already removed, Section 3.3), copies them with their batch norms and the next
layers' matching input channels into the narrower model, and retrains it where data is given (a
constant rate of 0.001, Section 4).

Hand-written: the ranking is a line of torch; the removal is :mod:`.channels` (the graph language's
widths, see there for why not Torch-Pruning).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field

from papers.errors import SpecError
from papers.graph import FlatGraph
from papers.methods import Method, MethodContext, Settings
from papers_plugins.compression.channels import channel_layers, copy_kept, narrow, top_channels

if TYPE_CHECKING:
    import torch

Rate = Annotated[float, Field(ge=0, le=1)]


class L1FilterSettings(Settings):
    """The settings of ``l1_filter_prune``."""

    rates: dict[str, Rate] = Field(
        {},
        description="A layer's fraction of filters pruned, by node name (a convolution or a hidden "
        "linear layer); it loses ceil(rate × its filters).",
    )
    stages: dict[str, Rate] = Field(
        {},
        description="A fraction pruned in every convolution under a group (a ResNet stage: `layer1`) "
        "whose filters can be removed, the paper's p_i; `rates` names take precedence.",
    )
    skip: list[str] = Field(
        [], description="Layers the stage fractions leave whole (the paper's sensitive layers)."
    )
    greedy: bool = Field(
        False,
        description="Rank a layer's filters without the kernels that read feature maps removed in the "
        "layers before it (Section 3.3's greedy strategy); else each layer independently.",
    )
    retrain_epochs: int = Field(0, ge=0, le=1000, description="Epochs of retraining where data is given.")
    retrain_lr: float = Field(1.0e-3, gt=0, description="Constant SGD rate while retraining (Section 4).")
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(1.0e-4, ge=0)
    batch_size: int = Field(128, ge=1, le=65536)


def pruned_count(rate: float, filters: int) -> int:
    """Filters a layer of ``filters`` loses at ``rate``: ceil(rate × filters), a product that is a whole
    number up to float rounding (0.3 × 10) counted as that number."""
    product = rate * filters
    return round(product) if abs(product - round(product)) < 1e-9 else math.ceil(product)


def plan(flat: FlatGraph, settings: L1FilterSettings) -> dict[str, int]:
    """Each pruned layer's width after pruning, by node name: ``rates`` and ``stages`` (less ``skip``)
    applied to the layers' filters in ``flat``. Refuses a name that is no layer, a stage that holds
    no convolution whose filters can go, and (through :func:`~.channels.narrow`) a rate that removes
    every filter of a layer or a layer whose filters cannot go."""
    layers = channel_layers(flat)
    for name in settings.skip:
        if name not in layers:
            raise SpecError(f"settings.skip names {name!r}, which is no convolution or linear layer")
    widths = {}
    for prefix, rate in settings.stages.items():
        chosen = [
            layer
            for name, layer in layers.items()
            if name.startswith(prefix + ".") and layer.op == "conv2d" and layer.removable
        ]
        if not chosen:
            raise SpecError(
                f"settings.stages names {prefix!r}, which holds no convolution whose filters can be removed"
            )
        for layer in chosen:
            if layer.name not in settings.skip:
                widths[layer.name] = layer.width - pruned_count(rate, layer.width)
    for name, rate in settings.rates.items():
        layer = layers.get(name)
        width = layer.width if layer is not None else 1
        widths[name] = width - pruned_count(rate, width)
    return widths


def rewrite(flat: FlatGraph, settings: L1FilterSettings) -> FlatGraph:
    """The pruned graph: each layer :func:`plan` names at its new width."""
    if not settings.rates and not settings.stages:
        raise SpecError("settings give neither `rates` nor `stages`; nothing would be pruned")
    widths = plan(flat, settings)
    try:
        return narrow(flat, widths)
    except SpecError as error:  # located at the method step, as a rewrite's other refusals
        raise SpecError(f"settings: {error.message}") from None


def l1_scores(model: Any, flat: FlatGraph, widths: Mapping[str, int], *, greedy: bool) -> dict[str, Any]:
    """Each pruned layer's filter scores, the sum of each filter's absolute kernel weights (its ℓ1
    norm); with ``greedy``, the kernels reading feature maps that the layers before it lose (as
    ``widths`` and these scores decide) are left out of the sum."""
    import torch

    layers = channel_layers(flat)
    removed: dict[str, torch.Tensor] = {}  # input features removed, by layer reading them
    scores = {}
    for name, layer in layers.items():
        if name not in widths:
            continue
        weight = model.get_submodule(name).weight.detach().abs()
        if greedy and name in removed:
            weight = weight.clone()
            weight[:, removed[name]] = 0
        scores[name] = weight.flatten(1).sum(1)
        if greedy:
            kept = set(top_channels(scores[name], widths[name]))
            gone = [c for c in range(layer.width) if c not in kept]
            for reader in layer.next_layers:
                columns = torch.tensor(
                    [reader.offset + c * reader.block + j for c in gone for j in range(reader.block)],
                    dtype=torch.long,
                )
                earlier = removed.get(reader.name)
                removed[reader.name] = columns if earlier is None else torch.cat([earlier, columns])
    return scores


def kept_filters(
    model: Any, flat: FlatGraph, widths: Mapping[str, int], *, greedy: bool
) -> dict[str, list[int]]:
    """The filters each pruned layer keeps: the ``widths[name]`` of the largest ℓ1 norm, ascending."""
    scores = l1_scores(model, flat, widths, greedy=greedy)
    return {name: top_channels(score, widths[name]) for name, score in scores.items()}


def l1_filter_prune(model: Any, settings: L1FilterSettings, context: MethodContext) -> Any:
    """Copy into ``model`` (the narrowed one) the filters of ``context.before`` with the largest ℓ1
    norms, with their batch norms and the next layers' input channels; retrain where data is given."""
    if context.before is None or context.flat_before is None:
        raise SpecError("l1_filter_prune runs after its rewrite, on the model before it")
    widths = plan(context.flat_before, settings)
    kept = kept_filters(context.before, context.flat_before, widths, greedy=settings.greedy)
    copy_kept(context.before, model, context.flat_before, kept)
    if settings.retrain_epochs and context.data is not None:
        from papers_plugins.compression.pruning import _training_batches, retrain

        batches = _training_batches(context, settings.batch_size)
        retrain(model, batches, list(model.parameters()), {}, settings, context.device)
    return model


L1_FILTER_PRUNE = Method(
    name="l1_filter_prune",
    settings=L1FilterSettings,
    description="Filters ranked by the sum of their absolute kernel weights; the smallest removed per "
    "layer or stage, with their feature maps and the next layers' kernels, then retrained (Li et al. 2017).",
    rewrite=rewrite,
    apply=l1_filter_prune,
)


# -- the small-scale reproduction (`papers check li2017 --run`) ----------------------------------

PROXY_DATA = "builtin:mnist5k"
PROXY_VARIANT = "li2017-vgg16_cifar-a"
PROXY_OPTIONS = {"widths": [8, 16, 32, 32, 32], "hidden": 64}
"""VGG-16 for CIFAR-10 at 1/8 of its widths (and a 64-unit hidden layer): the registry's choice, so
that training on one thread takes a minute, not the paper's network."""
PROXY_EPOCHS = 12
PROXY_LR = 0.05
"""SGD rate of the training before pruning (momentum 0.9, weight decay 5e-4): the registry's choice."""
PROXY_RETRAIN_EPOCHS = 4
"""Epochs of retraining after pruning at the paper's constant 0.001 (it retrains 40 on CIFAR-10)."""


def proxy(
    variant_id: str = PROXY_VARIANT,
    data: str = PROXY_DATA,
    *,
    epochs: int = PROXY_EPOCHS,
    retrain_epochs: int = PROXY_RETRAIN_EPOCHS,
    limit: int | None = None,
) -> dict[str, Any]:
    """Train the proxy network (``variant_id``'s base at :data:`PROXY_OPTIONS`) on ``data`` from a fixed
    seed, prune its filters by ℓ1 norm as ``variant_id``'s settings say, retrain, and give top-1
    (percent) on the held-out split before pruning, after pruning, after retraining, with the
    parameters and multiply-adds before and after. ``limit`` takes the first images only."""
    from types import SimpleNamespace

    import torch

    from papers.api import build_model, expand_variant
    from papers.data import in_memory
    from papers.methods import variant_steps
    from papers.registry import get_registry
    from papers.train import intra_op_threads
    from papers_plugins.compression.channels import remove_channels
    from papers_plugins.compression.pruning import retrain, shuffled_batches, top1

    base = get_registry().variant(variant_id)[1].base
    assert base is not None
    (step,) = [s for s in variant_steps(variant_id) if s.method.name == "l1_filter_prune"]
    flat = expand_variant(base, **PROXY_OPTIONS)
    shape = tuple(next(iter(flat.inputs.values())))
    train_images, train_labels, test_images, test_labels = in_memory(data, shape)  # type: ignore[arg-type]
    if limit is not None:
        train_images, train_labels = train_images[:limit], train_labels[:limit]
        test_images, test_labels = test_images[:limit], test_labels[:limit]
    training = SimpleNamespace(retrain_lr=PROXY_LR, momentum=0.9, weight_decay=5.0e-4)
    tuning = SimpleNamespace(retrain_lr=step.settings.retrain_lr, momentum=0.9, weight_decay=5.0e-4)
    with intra_op_threads(1), torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_model(base, **PROXY_OPTIONS).eval()
        batches = shuffled_batches(train_images, train_labels, 64)
        retrain(model, batches, list(model.parameters()), {}, training, "cpu", epochs=epochs)
        before = top1(model, test_images, test_labels)
        widths = plan(flat, step.settings)
        kept = kept_filters(model, flat, widths, greedy=step.settings.greedy)
        pruned, _ = remove_channels(model, flat, kept)
        pruned.eval()
        after_pruning = top1(pruned, test_images, test_labels)
        retrain(pruned, batches, list(pruned.parameters()), {}, tuning, "cpu", epochs=retrain_epochs)
        after = top1(pruned, test_images, test_labels)
    return {
        "before": before,
        "pruned": after_pruning,
        "after": after,
        "params": (_count(model), _count(pruned)),
        "widths": widths,
    }


def _count(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())


def _proxy_runner(progress: bool) -> tuple[float, float]:
    measured = proxy()
    return measured["after"], measured["before"] - 1.0


def proxy_checks() -> list:
    """The paper's proxy check (its plugin's ``papers_checks``)."""
    from papers_plugins.compression.pruning import mnist5k_check

    return [
        mnist5k_check(
            PROXY_VARIANT,
            _proxy_runner,
            f"VGG-16 for CIFAR-10 at 1/8 of its widths trained on 5,000 of MNIST's digits (4,000 "
            f"training, 1,000 test images, padded to 32×32) for {PROXY_EPOCHS} epochs (SGD at "
            f"{PROXY_LR}), not on CIFAR-10; conv 1 and 8-13 lose half their filters by ℓ1 norm "
            f"(pruned-A's settings), then {PROXY_RETRAIN_EPOCHS} epochs of retraining at the paper's "
            "constant 0.001; passes when the pruned model's top-1 is within 1 point of the unpruned "
            "model's",
        )
    ]
