"""He, Zhang and Sun, "Channel Pruning for Accelerating Very Deep Neural Networks" (ICCV 2017, arXiv
1707.06168): per layer, LASSO channel selection and least-squares reconstruction of the next layer.

Pruning a layer's output channels removes input channels of the layer that reads them (the next
convolution, or a linear layer after a flatten). The paper chooses which by how well the next
layer's output can still be reconstructed: on feature maps sampled from training images (a few
positions per image), the next layer's response ``Y`` (n outputs) is the sum over input channels ``i``
of ``Z_i = X_i W_iᵀ`` (channel ``i``'s patches times its slice of the next layer's weights). A LASSO
regression ``min ‖Y − Σ β_i Z_i‖² + λ‖β‖₁`` with λ raised until at most the kept number of ``β_i`` are
non-zero selects the channels; the next layer's weights on the kept channels are then refitted by
least squares, ``min ‖Y − X' W'ᵀ‖²``. Layers are pruned one after another, each from the network
whose earlier layers are already pruned (``X``) against the original network's responses (``Y``), so
that the error does not accumulate.

Multi-branch networks (Section 3.3 of the paper, ResNet): the layers inside a residual branch are
pruned; the branch's last layer and the shortcut are not (their channels meet at the addition). When
the next layer is the branch's last (its output goes, through its batch norm, into the addition), its
target is the original branch output plus the error the shortcut now carries, ``Y₁ + Y₂ − Y₂'``, so
the reconstructed branch compensates what earlier pruned blocks changed in the shortcut.

Widths are settings here (each layer's kept fraction), so the rewrite narrows the graph statically
(:func:`papers_plugins.compression.channels.narrow`): parameters, multiply-adds and the speed-up as a
FLOP ratio are measured without weights (``papers check he2017``), and the narrowed graph times like
any variant (``benchmarks/channel_pruning.py``). ``papers compress --data`` runs the selection and
reconstruction on the base model's weights and copies the kept channels into the narrower model.

Libraries: scikit-learn's ``Lasso`` for the selection (as the authors' code does) and
``torch.linalg.lstsq`` for the reconstruction. Hand-written: sampling the patches and the layer loop.
"""

from __future__ import annotations

import fnmatch
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field

from papers.errors import PapersError, SpecError
from papers.graph import FlatGraph
from papers.methods import Estimate, Method, MethodContext, Settings

if TYPE_CHECKING:
    import torch

Fraction = Annotated[float, Field(gt=0, le=1)]


class ChannelPruneSettings(Settings):
    """The settings of ``channel_prune``."""

    kept: dict[str, Fraction] = Field(
        description="Each layer's kept fraction of its output channels, by node name or glob pattern "
        "(`layer*.*.conv1`); every pattern must name at least one layer whose channels can be removed."
    )
    images: int = Field(
        500, ge=1, le=1000000, description="Training images the feature maps are sampled from."
    )
    points: int = Field(10, ge=1, le=10000, description="Positions sampled per image and layer.")
    lasso_steps: int = Field(
        20, ge=1, le=200, description="Bisection steps of the LASSO penalty λ towards the kept count."
    )
    finetune_epochs: int = Field(0, ge=0, le=1000, description="Epochs of fine-tuning after every layer.")
    retrain_lr: float = Field(1.0e-3, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5.0e-4, ge=0)
    batch_size: int = Field(64, ge=1, le=65536)
    seed: int = Field(0, ge=0)


# -- static: the widths the settings give ------------------------------------------------------------


def planned_widths(flat: FlatGraph, settings: ChannelPruneSettings) -> dict[str, int]:
    """Each pruned layer's new width (its kept fraction of its channels, rounded, at least one), the
    layers named by node or pattern. Refused as :class:`SpecError` at ``settings.kept.<name>``: a pattern
    that names no layer, a layer whose channels cannot be removed (a residual addition, the logits), a
    layer whose channels feed several layers (one reconstruction per layer: the paper's single-branch
    case)."""
    from papers_plugins.compression.channels import channel_layers, narrow

    layers = channel_layers(flat)
    widths: dict[str, int] = {}
    for pattern, fraction in settings.kept.items():
        field = f"settings.kept.{pattern}"
        names = [name for name in layers if fnmatch.fnmatchcase(name, pattern)]
        if not names:
            narrow(flat, {pattern: 1}, field=field)  # its message: no such layer, and close names
        for name in names:
            layer = layers[name]
            if layer.reason is not None and pattern == name:
                raise SpecError(
                    f"layer {name!r}: its channels cannot be removed: {layer.reason}", field=field
                )
            if layer.reason is not None:
                continue  # a pattern takes the layers it can prune
            if len(layer.next_layers) != 1:
                readers = ", ".join(c.name for c in layer.next_layers)
                raise SpecError(
                    f"layer {name!r}: its channels are read by {len(layer.next_layers)} layers ({readers}); "
                    "channel pruning reconstructs one next layer",
                    field=field,
                )
            widths[name] = max(1, round(fraction * layer.width))
        if not any(name in widths for name in names):
            raise SpecError(f"{pattern!r} names no layer whose channels can be removed", field=field)
    return widths


def narrow_graph(flat: FlatGraph, settings: ChannelPruneSettings) -> FlatGraph:
    """The rewrite: each named layer narrowed to its kept channels (every input width follows)."""
    from papers_plugins.compression.channels import narrow

    return narrow(flat, planned_widths(flat, settings), field="settings.kept")


def static_measure(flat: FlatGraph, settings: ChannelPruneSettings) -> dict[str, float | Estimate]:
    """The speed-up as the paper counts it (the ratio of multiply-adds before and after) and the
    compression ratio (of parameters), from the narrowed graph ``flat`` and the base widths read back
    from it: a layer narrowed to ``w`` channels at kept fraction ``f`` had one of the widths ``W`` with
    ``round(f × W) == w``, the one divisible by the highest power of two taken (any of them giving the
    interval)."""
    from dataclasses import replace

    from papers.measure import measure_graph
    from papers.registry import get_registry

    catalogue = get_registry().catalogue
    fractions = _fractions_by_layer(flat, settings)
    after = measure_graph("channel-pruned", flat, catalogue)

    def widened(pick: Any) -> Any:
        nodes = []
        for node in flat.nodes:
            if node.name in fractions:
                argument = "out_channels" if node.op == "conv2d" else "out_features"
                node = replace(
                    node, args={**node.args, argument: pick(node.args[argument], fractions[node.name])}
                )
            nodes.append(node)
        return measure_graph("channel-pruning base", replace(flat, nodes=tuple(nodes)), catalogue)

    middle = widened(lambda w, f: max(w, _roundest(*_widths_rounding_to(w, f), w / f)))
    low = widened(lambda w, f: max(w, _widths_rounding_to(w, f)[0]))
    high = widened(lambda w, f: max(w, _widths_rounding_to(w, f)[1]))
    return {
        "speedup": Estimate(middle.macs / after.macs, low.macs / after.macs, high.macs / after.macs),
        "compression_ratio": Estimate(
            middle.params / after.params, low.params / after.params, high.params / after.params
        ),
    }


def _fractions_by_layer(flat: FlatGraph, settings: ChannelPruneSettings) -> dict[str, float]:
    """Each layer a pattern of ``kept`` names (the first pattern that names it), with its fraction."""
    out: dict[str, float] = {}
    names = [node.name for node in flat.nodes if node.op in ("conv2d", "linear")]
    for pattern, fraction in settings.kept.items():
        for name in names:
            if name not in out and fnmatch.fnmatchcase(name, pattern) and fraction < 1:
                out[name] = fraction
    return out


def _roundest(low: int, high: int, centre: float) -> int:
    """The width in ``[low, high]`` divisible by the highest power of two (networks' widths are: 64,
    96, 512), the nearest to ``centre`` among equals."""
    return max(range(low, high + 1), key=lambda w: ((w & -w), -abs(w - centre)))


def _widths_rounding_to(width: int, fraction: float) -> tuple[int, int]:
    """The smallest and largest whole widths ``W`` with ``round(fraction × W) == width``."""
    centre = round(width / fraction)
    low = high = centre
    while low > 1 and round(fraction * (low - 1)) == width:
        low -= 1
    while round(fraction * (high + 1)) == width:
        high += 1
    return low, high


# -- the selection and reconstruction ---------------------------------------------------------------


@dataclass(frozen=True)
class Samples:
    """What one layer's selection works on: per sampled point, each input channel's patch ``X``
    ``[points, channels, k]`` and the target response ``Y`` ``[points, n]`` (bias removed)."""

    x: torch.Tensor
    y: torch.Tensor


_BATCH = 50
"""Images whose feature maps are held at once while sampling (only the sampled points are kept)."""
_LASSO_ELEMENTS = 20_000_000
"""At most this many entries (rows × channels, float64: 160 MB) in one LASSO problem."""


def lasso_select(samples: Samples, weight: torch.Tensor, count: int, steps: int = 20) -> list[int]:
    """The ``count`` input channels LASSO keeps: ``β`` of ``min ‖y − Σ β_i Z_i‖²/(2N) + λ‖β‖₁`` with
    ``Z_i = X_i W_iᵀ`` (``weight``: ``[n, channels, k]``), λ bisected (on a log scale) to the smallest
    value leaving at most ``count`` non-zero; the kept are those of largest ``|β|`` there, completed
    from the solution just below it where fewer are non-zero."""
    import numpy as np
    import torch
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import Lasso

    channels = weight.shape[1]
    if count >= channels:
        return list(range(channels))
    z = torch.einsum("pck,nck->pnc", samples.x.double(), weight.double()).reshape(-1, channels)
    y = samples.y.double().reshape(-1)
    if len(y) * channels > _LASSO_ELEMENTS:  # a random subset of the (point, output) rows
        rows = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))[
            : _LASSO_ELEMENTS // channels
        ]
        z, y = z[rows], y[rows]
    z, y = z.numpy(), y.numpy()
    scale = np.linalg.norm(z, axis=0)
    scale[scale == 0] = 1.0
    z = z / scale  # the paper normalises each channel's term; the penalty then treats them alike
    top = float(np.abs(z.T @ y).max()) / len(y)  # at this λ every β is zero
    low, high = top * 1e-6, max(top, 1e-12)
    best_low = best_high = None
    for _ in range(steps):
        alpha = (low * high) ** 0.5
        with warnings.catch_warnings():  # a bisection step's λ need not converge fully to count its β
            warnings.simplefilter("ignore", ConvergenceWarning)
            beta = Lasso(alpha=alpha, fit_intercept=False, max_iter=2000, tol=1e-4).fit(z, y).coef_
        if np.count_nonzero(beta) <= count:
            high, best_high = alpha, beta
        else:
            low, best_low = alpha, beta
    order = np.argsort(-np.abs(best_high)) if best_high is not None else np.array([], dtype=int)
    chosen = [int(i) for i in order[: np.count_nonzero(best_high)]] if best_high is not None else []
    if len(chosen) < count:
        fallback = best_low if best_low is not None else np.abs(z.T @ y)
        for i in np.argsort(-np.abs(fallback)):
            if int(i) not in chosen:
                chosen.append(int(i))
            if len(chosen) == count:
                break
    return sorted(chosen[:count])


def reconstruct(samples: Samples, kept: list[int]) -> torch.Tensor:
    """The next layer's weights on the ``kept`` channels, ``[n, len(kept), k]``, by least squares:
    ``min ‖Y − X' W'ᵀ‖²`` over the sampled points."""
    import torch

    x = samples.x[:, kept].reshape(len(samples.x), -1).double()
    solution = torch.linalg.lstsq(x, samples.y.double(), driver="gelsd").solution  # [kept*k, n]
    return solution.T.reshape(samples.y.shape[1], len(kept), -1).to(samples.x.dtype)


# -- sampling feature maps ------------------------------------------------------------------------------


def _layout(module: Any, offset: int, block: int, channels: int) -> tuple[str, Any]:
    """How the next layer reads the pruned layer's channels: a convolution (its patches) or a linear
    layer (each channel a block of ``block`` features from ``offset``)."""
    import torch

    if isinstance(module, torch.nn.Conv2d):
        return "conv", None
    columns = torch.arange(channels)[:, None] * block + torch.arange(block)[None, :] + offset
    return "linear", columns


def _weight_view(module: Any, layout: str, columns: Any, channels: int) -> torch.Tensor:
    """The next layer's weight as ``[n, channels, k]`` for the pruned layer's channels."""
    weight = module.weight.detach()
    if layout == "conv":
        return weight.flatten(2)
    return weight[:, columns.flatten()].reshape(weight.shape[0], channels, -1)


def _set_weight(module: Any, layout: str, columns: Any, new: torch.Tensor, kept: list[int]) -> None:
    """Write ``new`` (``[n, len(kept), k]``) as the next layer's weights on ``kept`` channels, zero on
    the others (what removing them does)."""
    import torch

    with torch.no_grad():
        if layout == "conv":
            weight = module.weight
            full = torch.zeros_like(weight)
            full[:, kept] = new.reshape(weight.shape[0], len(kept), *weight.shape[2:])
            weight.copy_(full)
        else:
            weight = module.weight
            weight[:, columns.flatten()] = 0.0
            weight[:, columns[kept].flatten()] = new.reshape(weight.shape[0], -1)


def _patches(module: Any, inputs: torch.Tensor, layout: str, columns: Any, channels: int) -> torch.Tensor:
    """The next layer's input as ``[images, positions, channels, k]``."""
    import torch

    if layout == "conv":
        unfolded = torch.nn.functional.unfold(
            inputs, module.kernel_size, dilation=module.dilation, padding=module.padding, stride=module.stride
        )  # [B, C*k, L]
        return unfolded.transpose(1, 2).reshape(
            len(inputs), -1, channels, module.kernel_size[0] * module.kernel_size[1]
        )
    return inputs[:, columns.flatten()].reshape(len(inputs), 1, channels, -1)


def _responses(outputs: torch.Tensor, module: Any) -> torch.Tensor:
    """The next layer's output as ``[images, positions, n]``, bias removed."""
    outputs = outputs.flatten(2).transpose(1, 2) if outputs.dim() == 4 else outputs[:, None, :]
    if module.bias is not None:
        outputs = outputs - module.bias.detach()
    return outputs


def _capture(model: Any, names: list[str], images: torch.Tensor, batch: int = 100) -> dict[str, tuple]:
    """Each named module's input and output on ``images``."""
    import torch

    seen: dict[str, list] = {name: [] for name in names}
    handles = [
        model.get_submodule(name).register_forward_hook(
            lambda module, args, output, name=name: seen[name].append((args[0].detach(), output.detach()))
        )
        for name in names
    ]
    try:
        with torch.no_grad():
            for start in range(0, len(images), batch):
                model(images[start : start + batch])
    finally:
        for handle in handles:
            handle.remove()
    return {
        name: (torch.cat([i for i, _ in pairs]), torch.cat([o for _, o in pairs]))
        for name, pairs in seen.items()
    }


# -- the layer loop -------------------------------------------------------------------------------------


def channel_prune(
    original: Any,
    flat: FlatGraph,
    widths: Mapping[str, int],
    images: torch.Tensor,
    settings: ChannelPruneSettings,
) -> tuple[Any, dict[str, list[int]]]:
    """Prune ``widths``' layers of a copy of ``original`` (built from ``flat``) in the graph's order:
    each layer's channels chosen by LASSO on its next layer's sampled responses and the next layer
    refitted by least squares, the pruned channels' weights in the next layer zeroed. Gives the copy
    (full width: removing the zeroed channels leaves what it computes unchanged) and each layer's kept
    channels."""
    import copy

    import torch

    from papers_plugins.compression.channels import channel_layers

    layers = channel_layers(flat)
    work = copy.deepcopy(original).eval()
    original = original.eval()
    generator = torch.Generator().manual_seed(settings.seed)
    kept: dict[str, list[int]] = {}
    for name in [n for n in layers if n in widths]:
        (consumer,) = layers[name].next_layers
        channels = layers[name].width
        module = work.get_submodule(consumer.name)
        layout, columns = _layout(module, consumer.offset, consumer.block, channels)
        xs, ys = [], []
        for start in range(0, len(images), _BATCH):  # a batch's feature maps at a time, points kept
            batch = images[start : start + _BATCH]
            inputs, _ = _capture(work, [consumer.name], batch)[consumer.name]
            _, target = _capture(original, [consumer.name], batch)[consumer.name]
            target = target + _shortcut_error(original, work, flat, consumer.name, batch)
            x = _patches(module, inputs, layout, columns, channels)  # [B, L, C, k]
            y = _responses(target, module)  # [B, L, n]
            points = min(settings.points, x.shape[1])  # a linear layer's input is one point per image
            picks = torch.stack(
                [torch.randperm(x.shape[1], generator=generator)[:points] for _ in range(len(x))]
            )  # [B, points], distinct positions
            rows = torch.arange(len(x))[:, None]
            xs.append(x[rows, picks].flatten(0, 1))
            ys.append(y[rows, picks].flatten(0, 1))
        samples = Samples(torch.cat(xs), torch.cat(ys))
        weight = _weight_view(module, layout, columns, channels)
        chosen = lasso_select(samples, weight, widths[name], settings.lasso_steps)
        _set_weight(module, layout, columns, reconstruct(samples, chosen), chosen)
        kept[name] = chosen
    return work, kept


def _shortcut_error(original: Any, work: Any, flat: FlatGraph, name: str, images: torch.Tensor) -> Any:
    """For a branch's last layer (its output goes, through one batch norm, into a residual addition):
    the shortcut's error ``Y₂ − Y₂'`` (original less pruned network), brought back through the batch
    norm's scale into the layer's output space; 0 for any other layer."""
    import torch

    readers = [node for node in flat.nodes if any(ref.partition(":")[0] == name for ref in node.inputs)]
    if len(readers) != 1 or readers[0].op != "batchnorm2d":
        return 0
    norm = readers[0]
    adds = [node for node in flat.nodes if any(ref.partition(":")[0] == norm.name for ref in node.inputs)]
    if len(adds) != 1 or adds[0].op not in ("add", "add_"):
        return 0
    others = [ref.partition(":")[0] for ref in adds[0].inputs if ref.partition(":")[0] != norm.name]
    if len(others) != 1:
        return 0
    try:
        original.get_submodule(others[0])
    except AttributeError:
        return 0
    _, before = _capture(original, [others[0]], images)[others[0]]
    _, after = _capture(work, [others[0]], images)[others[0]]
    bn = original.get_submodule(norm.name)
    gain = (bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps))[None, :, None, None]
    return (before - after) / gain


def channel_prune_method(model: Any, settings: ChannelPruneSettings, context: MethodContext) -> Any:
    """``papers compress --data``: select and reconstruct on the base model (``context.before``) with
    images from ``--data``, then copy the kept channels into the narrowed model ``model``."""
    from papers_plugins.compression.channels import copy_kept
    from papers_plugins.compression.pruning import retrain, shuffled_batches, training_split

    if context.data is None:
        raise PapersError("channel_prune samples feature maps from data: give --data", field="--data")
    assert context.before is not None and context.flat_before is not None
    shape = tuple(next(iter(context.flat.inputs.values())))
    images, labels = training_split(str(context.data), shape)
    widths = planned_widths(context.flat_before, settings)
    work, kept = channel_prune(
        context.before, context.flat_before, widths, images[: settings.images], settings
    )
    copy_kept(work, model, context.flat_before, kept)
    if settings.finetune_epochs:
        batches = shuffled_batches(images, labels, settings.batch_size, seed=settings.seed)
        retrain(
            model,
            batches,
            list(model.parameters()),
            {},
            settings,
            context.device,
            epochs=settings.finetune_epochs,
        )
    return model.eval()


CHANNEL_PRUNE = Method(
    name="channel_prune",
    settings=ChannelPruneSettings,
    description="Per layer, LASSO selection of the channels that best reconstruct the next layer's "
    "sampled responses and least-squares refitting of its weights; residual branches compensate the "
    "shortcut's error; the kept widths are settings, so the narrowed graph is static (He et al. 2017).",
    rewrite=narrow_graph,
    apply=channel_prune_method,
    measure=static_measure,
)


# -- the small-scale reproduction (`papers check he2017 --run`) -----------------------------------------

PROXY_VARIANT = "he2017-lenet5_caffe"


def channel_pruning_proxy(
    variant_id: str = PROXY_VARIANT,
    data: str = "builtin:mnist5k",
    *,
    epochs: int | None = None,
    overrides: Mapping[str, Any] | None = None,
    limit: int | None = None,
) -> dict[str, Any]:
    """Train ``variant_id``'s base on ``data`` (its recipe's SGD settings, from a fixed seed), prune it by
    LASSO selection and least-squares reconstruction as the variant's settings say (``overrides``
    replace some), remove the pruned channels, fine-tune, and give top-1 (percent) on the test split
    before, after reconstruction alone and after fine-tuning, with the widths and multiply-adds."""
    import time

    from papers_plugins.compression.channels import proxy_result, remove_channels
    from papers_plugins.compression.pruning import PROXY_EPOCHS, pretrained, proxy_setup, retrain, top1

    setup = proxy_setup(variant_id, "channel_prune", data, limit)
    settings = setup.settings.model_copy(update=dict(overrides or {}))
    assert isinstance(settings, ChannelPruneSettings)
    widths = planned_widths(setup.flat, settings)
    began = time.perf_counter()
    with pretrained(setup, PROXY_EPOCHS if epochs is None else epochs) as (model, batches, before):
        work, kept = channel_prune(model, setup.flat, widths, setup.train_images[: settings.images], settings)
        narrowed, flat = remove_channels(work, setup.flat, kept)
        reconstructed = top1(narrowed.eval(), setup.test_images, setup.test_labels)
        if settings.finetune_epochs:
            retrain(
                narrowed,
                batches,
                list(narrowed.parameters()),
                {},
                settings,
                "cpu",
                epochs=settings.finetune_epochs,
            )
        after = top1(narrowed.eval(), setup.test_images, setup.test_labels)
    measured = {"before": before, "reconstructed": reconstructed, "after": after}
    return proxy_result(setup, variant_id, flat, kept, began, **measured)


def _proxy_runner(variant_id: str) -> Any:
    from papers_plugins.compression.channels import proxy_runner

    def stages(measured: dict[str, Any]) -> list[str]:
        return [
            f"  top-1 {measured['before']}% before, {measured['reconstructed']}% reconstructed, "
            f"{measured['after']}% fine-tuned"
        ]

    return proxy_runner(channel_pruning_proxy, variant_id, "channels", stages)


def proxy_checks() -> list:
    """The paper's proxy check (its plugin's ``papers_checks``)."""
    from papers_plugins.compression.pruning import PROXY_EPOCHS, mnist5k_check

    return [
        mnist5k_check(
            PROXY_VARIANT,
            _proxy_runner(PROXY_VARIANT),
            f"LeNet-5 (Caffe's) trained on builtin:mnist5k's 4,000 training digits for {PROXY_EPOCHS} "
            "epochs with Caffe's SGD settings, not VGG-16 on ImageNet; half of the channels of conv1, "
            "conv2 and fc1 selected by LASSO on 10 sampled points of 2,000 training images per layer, "
            "the next layer refitted by least squares, the channels removed for real, one epoch of "
            "fine-tuning; passes when the narrowed model's top-1 on the 1,000 test digits is within 1 "
            "point of the unpruned model's",
        )
    ]
