"""Han, Pool, Tran and Dally, "Learning both Weights and Connections for Efficient Neural Networks"
(NIPS 2015, arXiv 1506.02626): magnitude pruning with retraining.

The paper's numbers (its per-layer kept fractions, Tables 2-5, and Table 1's totals) are in its spec;
the method is here. ``magnitude_prune`` removes, in each convolution and linear layer it names, the
weights whose magnitude is below a threshold: the one that keeps the layer's given fraction (the
paper's Weights%), or a quality parameter times the standard deviation of the layer's weights
(Section 4). With data (``papers compress --data``) it prunes and retrains iteratively, the
convolutions and the fully connected layers separately, each kind retrained while the other is fixed
(Section 3.3), pruned connections held at zero by a mask. Pruned weights are zeros in dense tensors
until ``papers compress`` writes them: its container stores a tensor with zeros sparsely (a bit mask
or the paper's relative indices and the kept values), so the file's bytes drop; the model it builds
back is dense, and its measured latency shows no speed-up. Without weights, ``static_measure`` gives
Table 1's kept weights and compression ratio from the kept fractions (``papers check han2015``).

Hand-written: the threshold rule and the retraining loop (a few lines of torch); torch's
``torch.nn.utils.prune`` masks by a global or per-layer amount but has neither the paper's
standard-deviation threshold nor its separate conv/fc retraining.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field

from papers.errors import PapersError, SpecError
from papers.graph import FlatGraph
from papers.methods import Estimate, Method, MethodContext, Settings

if TYPE_CHECKING:
    import torch

PRUNED_OPS = {"conv2d": "conv", "sparse_conv2d": "conv", "linear": "fc"}
"""The ops whose weights are pruned, and the kind each is retrained with (Section 3.3);
``sparse_conv2d`` is Park et al.'s (2017) convolution with a direct sparse kernel."""

Fraction = Annotated[float, Field(gt=0, le=1)]


class PruneSettings(Settings):
    """The settings of ``magnitude_prune``."""

    kept: dict[str, Fraction] = Field(
        {},
        description="A layer's kept fraction of its weights (the paper's Weights%), by node name; a "
        "pruning rate of 1 - kept, in [0, 1).",
    )
    quality: float | None = Field(
        None,
        gt=0,
        description="For the convolution and linear layers not in `kept`: weights below quality × the "
        "standard deviation of the layer's weights are pruned (Section 4).",
    )
    iterations: int = Field(
        1, ge=1, le=100, description="Prune-and-retrain rounds per kind of layer (Section 3.4)."
    )
    retrain_epochs: int = Field(
        0, ge=0, le=1000, description="Epochs of retraining after each round, where data is given."
    )
    retrain_lr: float = Field(
        1.0e-3, gt=0, description="SGD rate while retraining (LeNet: 1/10 of Caffe's 0.01, Section 4.1)."
    )
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5.0e-4, ge=0)
    batch_size: int = Field(64, ge=1, le=65536)
    separately: bool = Field(
        True,
        description="Prune and retrain the fully connected layers with the convolutions fixed, then the "
        "convolutions with the fully connected layers fixed (Section 3.3).",
    )


@dataclass(frozen=True)
class Layer:
    """A prunable layer of the expanded graph: its node name, kind and weight count."""

    name: str
    kind: str
    weights: int


def prunable_layers(flat: FlatGraph) -> dict[str, Layer]:
    """The convolution and linear layers of ``flat`` with their weight counts (from a meta build)."""
    from papers.build import build
    from papers.registry import get_registry

    model = build(flat, get_registry().catalogue, device="meta")
    layers = {}
    for node in flat.nodes:
        if node.op in PRUNED_OPS:
            weight = getattr(model.get_submodule(node.name), "weight", None)
            if weight is not None:
                layers[node.name] = Layer(node.name, PRUNED_OPS[node.op], weight.numel())
    return layers


def check_settings(flat: FlatGraph, settings: PruneSettings) -> FlatGraph:
    """The rewrite: the graph unchanged, once every layer the settings name is one of its convolution
    or linear layers (refused at ``papers build`` and ``check``, before any weight exists)."""
    prunable = {node.name for node in flat.nodes if node.op in PRUNED_OPS}
    for name in settings.kept:
        if name not in prunable:
            known = ", ".join(sorted(prunable)[:12]) or "none"
            raise SpecError(
                f"settings.kept names {name!r}, which is no convolution or linear layer of the base model "
                f"(its layers: {known}{', ...' if len(prunable) > 12 else ''})"
            )
    if not settings.kept and settings.quality is None:
        raise SpecError("settings give neither `kept` fractions nor a `quality`; nothing would be pruned")
    return flat


# -- static: what the settings alone say ----------------------------------------------------------


@dataclass(frozen=True)
class Kept:
    """Weights kept by settings of kept fractions, with the interval the fractions' rounding allows."""

    total: int
    """The weights of every convolution and linear layer (biases are not counted: see below)."""
    kept: float
    low: float
    high: float
    """``kept`` where each fraction lies anywhere within half a unit of its last printed digit."""


def kept_parameters(flat: FlatGraph, settings: PruneSettings) -> Kept:
    """The weights left by ``settings``' kept fractions (no weights needed): each named layer's weights
    times its fraction, every other convolution and linear layer whole. Han et al. count weights only:
    Table 1's 36K for LeNet-5 is its 36,280 kept weights (with its 580 biases it would be 37K).
    ``low``/``high`` bound it where each fraction was rounded as printed: the paper prints whole
    percents (8%), so a fraction of 0.08 stands for anything in [0.075, 0.085]."""
    layers = prunable_layers(flat)
    total = sum(layer.weights for layer in layers.values())
    kept = low = high = float(
        sum(layer.weights for name, layer in layers.items() if name not in settings.kept)
    )
    for name, fraction in settings.kept.items():
        count = layers[name].weights
        places = Decimal(repr(fraction)).as_tuple().exponent  # 0.08 -> -2
        assert isinstance(places, int)  # a fraction is finite
        half = 0.5 * 10.0 ** min(-2, places)
        kept += fraction * count
        low += max(0.0, fraction - half) * count
        high += min(1.0, fraction + half) * count
    return Kept(total, kept, low, high)


def static_measure(flat: FlatGraph, settings: PruneSettings) -> dict[str, float | Estimate]:
    """Table 1's static columns from the settings: the weights kept and the compression ratio (all the
    weights over those kept), each with its interval; nothing where ``quality`` prunes a layer, since
    then its weights decide how many stay."""
    if settings.quality is not None and set(prunable_layers(flat)) - set(settings.kept):
        return {}
    kept = kept_parameters(flat, settings)
    if not kept.total:  # no convolution or linear layer: nothing to count
        return {}
    return {
        "nonzero_params": Estimate(kept.kept, kept.low, kept.high),
        "compression_ratio": Estimate(kept.total / kept.kept, kept.total / kept.high, kept.total / kept.low),
    }


# -- apply: pruning a model with weights ----------------------------------------------------------


def magnitude_prune(model: Any, settings: PruneSettings, context: MethodContext) -> Any:
    """Prune ``model`` in place as ``settings`` say; retrain after each round where data is given."""
    batches = None
    if settings.retrain_epochs and context.data is not None:
        batches = _training_batches(context, settings.batch_size)
    prune(model, settings, context.flat, batches, context.device)
    return model


def prune(model: Any, settings: PruneSettings, flat: FlatGraph, batches: Any, device: str) -> dict[str, Any]:
    """Prune ``model``'s layers in place, the fully connected ones then the convolutions (or all at once),
    ``settings.iterations`` rounds each, retraining on ``batches`` (a function giving one pass) after
    each round where given. Returns the masks."""
    import torch

    layers = {
        node.name: (PRUNED_OPS[node.op], model.get_submodule(node.name))
        for node in flat.nodes
        if node.op in PRUNED_OPS and getattr(model.get_submodule(node.name), "weight", None) is not None
    }
    chosen = {name: kind for name, (kind, _) in layers.items() if name in settings.kept or settings.quality}
    stages = [["fc"], ["conv"]] if settings.separately else [["fc", "conv"]]
    masks: dict[str, torch.Tensor] = {}
    loader = batches
    for kinds in stages:
        names = [name for name, kind in chosen.items() if kind in kinds]
        if not names:
            continue
        for round_ in range(1, settings.iterations + 1):
            with torch.no_grad():
                for name in names:
                    weight = layers[name][1].weight
                    masks[name] = _mask(weight, settings, name, round_ / settings.iterations)
                    weight.mul_(masks[name])
            if loader is not None:
                trainable = [p for name in names for p in layers[name][1].parameters()]
                retrain(model, loader, trainable, masks, settings, device)
    return masks


def _mask(weight: torch.Tensor, settings: PruneSettings, name: str, progress: float) -> torch.Tensor:
    """Which of ``weight``'s entries stay: the largest ``kept ** progress`` of them (all rounds
    together reach ``kept``), or those above ``quality`` × the standard deviation of the weights."""
    import torch

    magnitude = weight.detach().abs()
    if name in settings.kept:
        count = max(1, round(weight.numel() * settings.kept[name] ** progress))
        mask = torch.zeros(weight.numel(), dtype=torch.bool, device=weight.device)
        mask[magnitude.flatten().topk(count).indices] = True  # ties broken by position, as topk does
        return mask.view_as(weight).to(weight.dtype)
    assert settings.quality is not None
    alive = weight.detach()[magnitude != 0]  # the weights themselves (signed), those not yet pruned
    spread = float(alive.std()) if alive.numel() > 1 else 0.0
    return (magnitude > settings.quality * spread).to(weight.dtype)


def retrain(
    model: Any,
    batches: Any,
    trainable: list[Any],
    masks: Mapping[str, torch.Tensor],
    settings: Any,
    device: str,
    epochs: int | None = None,
) -> None:
    """SGD on ``trainable`` only (the other parameters fixed), cross-entropy on the model's logits,
    every masked weight held at zero after each step."""
    import torch

    wanted = {id(p) for p in trainable}
    frozen = [p for p in model.parameters() if id(p) not in wanted and p.requires_grad]
    for parameter in frozen:
        parameter.requires_grad_(False)
    optimizer = torch.optim.SGD(
        trainable, lr=settings.retrain_lr, momentum=settings.momentum, weight_decay=settings.weight_decay
    )
    weights = {name: model.get_submodule(name).weight for name in masks}
    model.train()
    try:
        for _ in range(settings.retrain_epochs if epochs is None else epochs):
            for images, labels in batches():
                optimizer.zero_grad(set_to_none=True)
                loss = torch.nn.functional.cross_entropy(model(images.to(device)), labels.to(device))
                loss.backward()
                optimizer.step()
                with torch.no_grad():
                    for name, weight in weights.items():
                        weight.mul_(masks[name])
    finally:
        model.eval()
        for parameter in frozen:
            parameter.requires_grad_(True)


def _training_batches(context: MethodContext, batch_size: int) -> Any:
    """A function giving one shuffled pass over the training split of ``context.data``."""
    shape = next(iter(context.flat.inputs.values()))
    images, labels = training_split(str(context.data), tuple(shape))
    return shuffled_batches(images, labels, batch_size)


def training_split(data: str, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """The training images and labels of ``data`` (built-in data, or an ImageFolder's train/) at ``shape``."""
    import torch

    from papers.data import IN_MEMORY, image_folder, in_memory, split_folder

    if data in IN_MEMORY:
        images, labels, _, _ = in_memory(data, shape)  # type: ignore[arg-type]
        return images, labels
    from torchvision.transforms import v2

    folder = split_folder(data, "train")
    if folder is None:
        raise PapersError("no train/ folder to retrain on (DIR/train/<class>/*)", file=data)
    size = [shape[1], shape[2]]
    view = v2.Compose([v2.Resize(round(min(size) / 0.875), antialias=True), v2.CenterCrop(size)])
    dataset = image_folder(folder, shape[0], view)
    pairs = [dataset[i] for i in range(len(dataset))]
    return torch.stack([image for image, _ in pairs]), torch.tensor([label for _, label in pairs])


def shuffled_batches(images: torch.Tensor, labels: torch.Tensor, batch_size: int, seed: int = 0) -> Any:
    """A function that gives one pass over the images in a new order each call (a fixed seed)."""
    import torch

    generator = torch.Generator().manual_seed(seed)

    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.randperm(len(labels), generator=generator)
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            yield images[index], labels[index]

    return batches


def sparsity_of(model: Any, names: list[str]) -> dict[str, float]:
    """The kept fraction of each named layer's weights."""
    import torch

    out = {}
    for name in names:
        weight = model.get_submodule(name).weight
        out[name] = int(torch.count_nonzero(weight)) / weight.numel()
    return out


MAGNITUDE_PRUNE = Method(
    name="magnitude_prune",
    settings=PruneSettings,
    description="Weights below a per-layer magnitude threshold (a kept fraction, or quality × the "
    "layer's standard deviation) are removed; with data, pruned and retrained iteratively, conv and fc "
    "separately (Han et al. 2015).",
    rewrite=check_settings,
    apply=magnitude_prune,
    measure=static_measure,
)


# -- the small-scale reproduction (`papers check han2015 --run`) ----------------------------------

PROXY_DATA = "builtin:mnist5k"
PROXY_EPOCHS = 30
"""Passes over the 4,000 training digits before pruning: the registry's choice, not the paper's."""


@dataclass
class ProxySetup:
    """What a compression paper's proxy starts from: method variant ``variant_id``'s ``base``, the
    settings its ``method`` step has, the base's graph, the base's recipe as retraining settings
    (``retrain_lr``, ``momentum``, ``weight_decay``; ``retrain_epochs`` set by :func:`pretrained`), its
    batch size, and the data's training and test images and labels."""

    variant_id: str
    base: str
    settings: Any
    flat: FlatGraph
    training: Any
    batch_size: int
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor


def proxy_setup(variant_id: str, method: str, data: str = PROXY_DATA, limit: int | None = None) -> ProxySetup:
    """The :class:`ProxySetup` of method variant ``variant_id``'s ``method`` on ``data`` (``limit``:
    the first images only)."""
    from types import SimpleNamespace

    from papers.api import expand_variant, get_spec
    from papers.data import in_memory
    from papers.methods import variant_steps
    from papers.registry import get_registry

    base = get_registry().variant(variant_id)[1].base
    assert base is not None
    (step,) = [s for s in variant_steps(variant_id) if s.method.name == method]
    flat = expand_variant(base)
    recipe = get_spec(base).hyperparameters_of(base)
    assert recipe is not None and recipe.optimizer.lr is not None
    shape = tuple(next(iter(flat.inputs.values())))
    train_images, train_labels, test_images, test_labels = in_memory(data, shape)  # type: ignore[arg-type]
    if limit is not None:
        train_images, train_labels = train_images[:limit], train_labels[:limit]
        test_images, test_labels = test_images[:limit], test_labels[:limit]
    training = SimpleNamespace(
        retrain_lr=recipe.optimizer.lr,
        momentum=recipe.optimizer.momentum or 0.0,
        weight_decay=recipe.weight_decay or 0.0,
    )
    return ProxySetup(
        variant_id, base, step.settings, flat, training, recipe.batch_size or 64,
        train_images, train_labels, test_images, test_labels,
    )  # fmt: skip


@contextmanager
def pretrained(
    setup: ProxySetup,
    epochs: int,
    *,
    build: str | None = None,
    images: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
) -> Iterator[tuple[Any, Any, float]]:
    """On one thread, with torch's random state restored afterwards: ``build`` (default: the base)
    built from seed 0 and trained ``epochs`` passes over ``images``/``labels`` (default: the training
    split) with the base's recipe. Gives the model, its batches and its top-1 (percent) on the test
    split."""
    import torch

    from papers.api import build_model
    from papers.train import intra_op_threads

    shown = images if images is not None else setup.train_images
    answers = labels if labels is not None else setup.train_labels
    with intra_op_threads(1), torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_model(build or setup.base).eval()
        batches = shuffled_batches(shown, answers, setup.batch_size)
        retrain(model, batches, list(model.parameters()), {}, setup.training, "cpu", epochs=epochs)
        yield model, batches, top1(model, setup.test_images, setup.test_labels)


def pruning_proxy(
    variant_id: str,
    data: str = PROXY_DATA,
    *,
    epochs: int = PROXY_EPOCHS,
    iterations: int | None = None,
    retrain_epochs: int | None = None,
    limit: int | None = None,
) -> dict[str, Any]:
    """Train method variant ``variant_id``'s base on ``data`` (its recipe's SGD settings, ``epochs``
    passes, from a fixed seed), prune it as the variant's settings say (``iterations`` and
    ``retrain_epochs``, where given, replace theirs), and give top-1 (percent) on the held-out split
    before and after, with each layer's kept fraction. ``limit`` takes the first images only."""
    setup = proxy_setup(variant_id, "magnitude_prune", data, limit)
    changed = {"iterations": iterations, "retrain_epochs": retrain_epochs}
    settings = setup.settings.model_copy(update={k: v for k, v in changed.items() if v is not None})
    with pretrained(setup, epochs) as (model, batches, before):
        prune(model, settings, setup.flat, batches, "cpu")
        after = top1(model, setup.test_images, setup.test_labels)
    names = [name for name in prunable_layers(setup.flat) if name in settings.kept]
    return {"before": before, "after": after, "kept": sparsity_of(model, names)}


def top1(model: Any, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy (percent) of ``model``'s logits on ``images``."""
    import torch

    with torch.inference_mode():
        correct = sum(
            int((model(images[i : i + 500]).argmax(-1) == labels[i : i + 500]).sum())
            for i in range(0, len(labels), 500)
        )
    return round(100.0 * correct / len(labels), 4)


def _proxy_runner(variant_id: str) -> Any:
    def run(progress: bool) -> tuple[float, float]:
        measured = pruning_proxy(variant_id)
        return measured["after"], measured["before"] - 1.0

    return run


def mnist5k_check(variant_id: str, runner: Any, proxy: str) -> Any:
    """A compression paper's proxy check on ``builtin:mnist5k``: ``runner`` trains, compresses and
    measures; it passes within a point of the unpruned model's top-1."""
    from papers.checks import TrainingCheck

    return TrainingCheck(
        name=f"{variant_id}-mnist5k",
        variant=variant_id,
        data=PROXY_DATA,
        min_accuracy=0.0,
        max_seconds=300.0,
        compares_with={"metric": "error"},
        runner=runner,
        proxy=proxy,
    )


def proxy_checks() -> list:
    """The paper's proxy checks (its plugin's ``papers_checks``)."""
    return [
        mnist5k_check(
            variant_id,
            _proxy_runner(variant_id),
            f"{network} trained on 5,000 of MNIST's digits (4,000 training, 1,000 test images) for "
            f"{PROXY_EPOCHS} epochs with Caffe's SGD settings, not on MNIST's 60,000 to 0.8-1.6% "
            "error; pruned at the paper's per-layer rates in the variant's rounds per kind of "
            "layer (fc, then conv) with its epochs of retraining at 1/10 of the rate after "
            "each; passes when the pruned model's top-1 is within 1 point of the "
            "unpruned model's",
        )
        for variant_id, network in (
            ("han2015-lenet300_100", "LeNet-300-100"),
            ("han2015-lenet5_caffe", "LeNet-5"),
        )
    ]
