"""Wu, Leng, Wang, Hu and Cheng, "Quantized Convolutional Neural Networks for Mobile Devices" (CVPR
2016, arXiv 1512.06473): product quantization of convolution and fully connected weights, fitted to the
layers' responses, layer by layer with error correction.

``qcnn_quantize`` has a rewrite and an apply step. The rewrite turns each layer it names into the
plugin's ``qcnn_linear`` or ``qcnn_conv2d`` (:mod:`papers_plugins.compression.qcnn_layers`: sub-codebooks
of ``codewords`` vectors over subspaces of ``dim`` inputs or input channels, and the assignments, run by
lookup tables). The apply step fills them from the trained layer (``context.before``):

- every layer starts from k-means (scikit-learn's) of its weights' sub-vectors, one sub-codebook per
  subspace (a convolution's shared by its kernel positions);
- where data is given (``papers compress --data``), each layer's sub-codebooks and assignments are
  then fitted to its responses on a random sample of rows (a fully connected layer's input rows, a
  convolution's receptive fields: image × output location) from a batch of training images,
  alternating, subspace by subspace, the best codeword for each output unit and the least-squares
  sub-codewords for the assignments (the paper's minimisation of the response's estimation error); a
  convolution's sub-codebook is shared by its kernel positions (as in the paper's quantization of the
  convolutional layer, so that a table is computed once per input location), so its codewords are one
  joint least-squares system over the positions, of which the fully connected case is the one-position
  instance (:func:`fit_responses` is the one fit for both); with ``error_correction``, layers are
  quantized in order and each is fitted on the inputs the already quantized layers give, towards the
  original network's responses, so that errors do not accumulate.

Hand-written: the response fit (least squares and arg-mins; no library fits product quantizers to
layer responses) and the sampling of receptive fields (``F.unfold`` a chunk of images at a time, so
that no whole unfolded batch is held).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from pydantic import Field

from papers.errors import SpecError
from papers.graph import FlatGraph
from papers.methods import Method, MethodContext, Settings

if TYPE_CHECKING:
    import torch

Q_OPS = {"linear": "qcnn_linear", "conv2d": "qcnn_conv2d"}


class QCNNSettings(Settings):
    """The settings of ``qcnn_quantize``."""

    dim: int = Field(ge=1, description="Inputs (input channels) per subspace (the paper's C's).")
    codewords: int = Field(
        ge=2, le=256, description="Sub-codewords per subspace (the paper's K); indices of 1 to 8 bits."
    )
    layers: list[str] = Field(
        [], description="Convolution and fully connected layers quantized (default: every one)."
    )
    error_correction: bool = Field(
        True, description="Fit each layer on the inputs the quantized layers before it give."
    )
    iterations: int = Field(3, ge=0, le=100, description="Alternating rounds of the response fit.")
    images: int = Field(256, ge=1, le=100000, description="Training images the responses are taken on.")
    samples: int = Field(
        2000,
        ge=1,
        le=10**7,
        description="Response rows each fit uses (a random subset of input rows or receptive fields).",
    )


def _chosen(flat: FlatGraph, settings: QCNNSettings) -> list[str]:
    layers = [node.name for node in flat.nodes if node.op in Q_OPS and node.module is None]
    return list(settings.layers) or layers


def rewrite(flat: FlatGraph, settings: QCNNSettings) -> FlatGraph:
    """Each quantized layer becomes its Q-CNN op, once each named layer is a plain convolution or a
    fully connected layer whose inputs ``dim`` divides."""
    from papers.build import build
    from papers.registry import get_registry

    candidates = [node.name for node in flat.nodes if node.op in Q_OPS]
    for position, name in enumerate(settings.layers):
        if name not in candidates:
            raise SpecError(
                f"settings.layers[{position}] names {name!r}, which is no convolution or fully connected "
                f"layer of the base model (its layers: {', '.join(candidates[:12]) or 'none'})"
            )
    chosen = _chosen(flat, settings)
    if not chosen:
        raise SpecError("the base model has no convolution or fully connected layer to quantize")
    model = build(flat, get_registry().catalogue, device="meta")
    nodes = []
    for node in flat.nodes:
        if node.name in chosen:
            layer = model.get_submodule(node.name)
            inputs = layer.in_features if node.op == "linear" else layer.in_channels
            if inputs % settings.dim:
                raise SpecError(f"settings.dim {settings.dim} does not divide {node.name}'s {inputs} inputs")
            args = dict(node.args)
            if node.op == "conv2d":
                for key, plain in (("groups", 1), ("dilation", 1)):
                    if args.get(key, plain) not in (plain, [plain, plain]):
                        raise SpecError(f"{node.name} has {key} {args[key]!r}: Q-CNN layers are plain")
                    args.pop(key, None)
            args.update(dim=settings.dim, codewords=settings.codewords)
            node = replace(node, op=Q_OPS[node.op], args=args)
        nodes.append(node)
    return replace(flat, nodes=tuple(nodes))


def kmeans_init(weight: torch.Tensor, dim: int, codewords: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sub-codebooks (subspaces × codewords × dim) and assignments by k-means of the weight's
    sub-vectors: a fully connected weight's (out × subspace pieces), a kernel's (out × position ×
    subspace pieces, the sub-codebook shared by positions). Assignments: (subspaces × out) or
    (positions × subspaces × out)."""
    import numpy as np
    import torch

    from papers_plugins.compression.vector_quantization import _kmeans

    w = weight.detach().cpu().double()
    out, inputs = w.shape[0], w.shape[1]
    subspaces = inputs // dim
    if w.dim() == 2:
        pieces = w.view(out, subspaces, dim).permute(1, 0, 2)  # subspaces × out × dim
        shape = (subspaces, out)
    else:
        positions = w.shape[2] * w.shape[3]
        pieces = w.view(out, subspaces, dim, positions).permute(1, 3, 0, 2)  # s × positions × out × dim
        shape = (subspaces, positions, out)
    books = np.zeros((subspaces, codewords, dim))
    codes = np.zeros(shape, dtype=np.int64)
    for s in range(subspaces):
        points = pieces[s].reshape(-1, dim).numpy()
        books[s], labels = _kmeans(points, codewords, 100)
        codes[s] = labels.reshape(shape[1:])
    assignments = torch.from_numpy(codes)
    if w.dim() == 4:
        assignments = assignments.permute(1, 0, 2)  # positions × subspaces × out
    return torch.from_numpy(books), assignments


def fit_responses(
    inputs: torch.Tensor,
    targets: torch.Tensor,
    books: torch.Tensor,
    assignments: torch.Tensor,
    iterations: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fit a layer's sub-codebooks and assignments to ``targets`` (N × out, the original responses
    without bias). A fully connected layer gives ``inputs`` N × in and ``assignments`` subspaces × out;
    a convolution gives its receptive fields, ``inputs`` N × positions × in_channels, and
    ``assignments`` positions × subspaces × out, each subspace's sub-codebook shared by the kernel
    positions. In turn for each subspace, with the others fixed: each output unit (at each position)
    takes the codeword that best explains what the rest leave; then the subspace's codewords become
    the least-squares fit of what the rest leave, one joint system over the positions sharing them
    (for a fully connected layer, each codeword the fit of the mean of what its units leave)."""
    import torch

    linear = assignments.dim() == 2
    if linear:  # one kernel position
        inputs, assignments = inputs.unsqueeze(1), assignments.unsqueeze(0)
    s_count, k_count, dim = books.shape
    p_count = assignments.shape[0]
    books, assignments = books.clone().double(), assignments.clone().long()
    pieces = inputs.double().reshape(len(inputs), p_count, s_count, dim)  # N × positions × s × dim
    targets = targets.double()

    def block(p: int, s: int) -> torch.Tensor:  # N × out: what subspace s at position p gives
        return pieces[:, p, s] @ books[s][assignments[p, s]].T

    def part(s: int) -> torch.Tensor:
        return sum(block(p, s) for p in range(p_count))

    grams = [torch.einsum("npa,nqb->paqb", pieces[:, :, s], pieces[:, :, s]) for s in range(s_count)]
    total = sum(part(s) for s in range(s_count))
    for _ in range(iterations):
        for s in range(s_count):
            for p in range(p_count):
                own = block(p, s)
                residual = targets - (total - own)
                responses = pieces[:, p, s] @ books[s].T  # N × K
                scores = (responses * responses).sum(0).unsqueeze(1) - 2 * responses.T @ residual  # K × out
                assignments[p, s] = scores.argmin(0)
                total = total - own + block(p, s)
            own = part(s)
            residual = targets - (total - own)
            onehot = torch.nn.functional.one_hot(assignments[:, s], k_count).double()  # P × out × K
            used = onehot.sum((0, 1)) > 0
            # normal equations in the codewords: Σ_pq (A_pᵀA_q ⊗ X_pᵀX_q) d = Σ_p X_pᵀ R A_p
            system = torch.einsum("pjk,qjl,paqb->kalb", onehot, onehot, grams[s])
            rhs = torch.einsum("npa,nj,pjk->ka", pieces[:, :, s], residual, onehot)
            system, rhs = system[used][:, :, used], rhs[used]
            size = int(used.sum()) * dim
            fitted = torch.linalg.pinv(system.reshape(size, size), hermitian=True) @ rhs.reshape(size)
            books[s][used] = fitted.reshape(-1, dim)
            total = total - own + part(s)
    return books, assignments[0] if linear else assignments


def _layer_inputs(model: Any, names: list[str], images: torch.Tensor) -> dict[str, torch.Tensor]:
    """The input each named layer receives on ``images`` (a forward pass without gradients)."""
    import torch

    seen: dict[str, torch.Tensor] = {}
    hooks = [
        model.get_submodule(name).register_forward_pre_hook(
            lambda module, args, name=name: seen.setdefault(name, args[0].detach())
        )
        for name in names
    ]
    try:
        with torch.no_grad():
            model(images)
    finally:
        for hook in hooks:
            hook.remove()
    return seen


def _locations(layer: torch.nn.Conv2d, images: torch.Tensor) -> int:
    """Output locations of convolution ``layer`` on each of ``images``."""
    sizes = [
        (size + 2 * pad - kernel) // stride + 1
        for size, pad, kernel, stride in zip(
            images.shape[-2:], layer.padding, layer.kernel_size, layer.stride, strict=True
        )
    ]
    return sizes[0] * sizes[1]


def receptive_fields(
    layer: torch.nn.Conv2d, images: torch.Tensor, rows: torch.Tensor, chunk: int = 256
) -> torch.Tensor:
    """Rows ``rows`` (indices into image × output location) of a convolution's receptive fields on its
    input ``images``: ``len(rows) × positions × in_channels`` (kernel positions row-major, as the
    Q-CNN layer's assignments), unfolded a chunk of images at a time."""
    import torch
    import torch.nn.functional as F

    locations = _locations(layer, images)
    image, location = rows // locations, rows % locations
    fields = torch.empty(len(rows), layer.in_channels * layer.kernel_size[0] * layer.kernel_size[1])
    for start in range(0, len(images), chunk):
        wanted = (image >= start) & (image < start + chunk)
        if wanted.any():
            columns = F.unfold(
                images[start : start + chunk], layer.kernel_size, padding=layer.padding, stride=layer.stride
            )  # chunk × (in_channels · positions) × locations
            fields[wanted] = columns[image[wanted] - start, :, location[wanted]].cpu().float()
    return fields.view(len(rows), layer.in_channels, -1).transpose(1, 2)


def _response_rows(
    trained: Any, given: torch.Tensor, original: torch.Tensor, samples: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """The fit's inputs (from ``given``) and targets (the trained layer on ``original``, without bias)
    at ``samples`` random rows: input rows for a fully connected layer, receptive fields (image ×
    output location) for a convolution."""
    import torch

    linear = isinstance(trained, torch.nn.Linear)
    count = len(given) * (1 if linear else _locations(trained, given))
    rows = torch.randperm(count, generator=generator)[:samples]
    weight = trained.weight.detach().cpu().double()
    if linear:
        inputs = given.reshape(len(given), -1)[rows].cpu()
        return inputs, original.reshape(len(original), -1)[rows].cpu().double() @ weight.T
    inputs = receptive_fields(trained, given, rows)
    fields = receptive_fields(trained, original, rows).double()  # rows × positions × in_channels
    return inputs, fields.transpose(1, 2).reshape(len(rows), -1) @ weight.reshape(len(weight), -1).T


def qcnn_quantize(model: Any, settings: QCNNSettings, context: MethodContext) -> Any:
    """Quantize each Q-CNN layer from the trained layer it replaced (k-means), then, where data is
    given, fit each layer (fully connected or convolution) to its responses, in order, with error
    correction."""
    import torch

    assert context.before is not None, "the rewrite gives the model before it"
    names = [node.name for node in context.flat.nodes if node.op in Q_OPS.values()]
    images = None
    if context.data is not None and settings.iterations:
        from papers_plugins.compression.pruning import training_split

        shape = tuple(next(iter(context.flat.inputs.values())))
        all_images, _ = training_split(str(context.data), shape)
        order = torch.randperm(len(all_images), generator=torch.Generator().manual_seed(0))
        images = all_images[order[: settings.images]].to(context.device)
    original = _layer_inputs(context.before, names, images) if images is not None else {}
    generator = torch.Generator().manual_seed(0)
    for name in names:
        layer, trained = model.get_submodule(name), context.before.get_submodule(name)
        books, assignments = kmeans_init(trained.weight, settings.dim, settings.codewords)
        if images is not None:
            given = (
                _layer_inputs(model, [name], images)[name] if settings.error_correction else original[name]
            )
            inputs, targets = _response_rows(trained, given, original[name], settings.samples, generator)
            books, assignments = fit_responses(inputs, targets, books, assignments, settings.iterations)
        with torch.no_grad():
            layer.codebooks.copy_(books.to(layer.codebooks.dtype))
            layer.set_indices(assignments)
            if layer.bias is not None and trained.bias is not None:
                layer.bias.copy_(trained.bias)
    return model


def layer_bits(out: int, inputs: int, positions: int, dim: int, codewords: int) -> int:
    """Bits of one quantized layer: sub-codebooks at 32 bits per value (inputs × codewords values in
    all) and one index of ceil(log2 codewords) bits per output unit, subspace and kernel position."""
    subspaces = inputs // dim
    return 32 * subspaces * codewords * dim + math.ceil(math.log2(codewords)) * positions * subspaces * out


def static_measure(flat: FlatGraph, settings: QCNNSettings) -> dict[str, float]:
    """The network's compression ratio from the settings: each Q-CNN layer as :func:`layer_bits`,
    every other parameter (biases included) at 32 bits."""
    from papers_plugins.compression.vector_quantization import compression_ratio

    def weight_bits(module: Any) -> tuple[int, int] | None:
        kind = type(module).__name__
        if kind not in ("QLinear", "QConv2d"):
            return None
        inputs = module.in_features if kind == "QLinear" else module.in_channels
        out = module.out_features if kind == "QLinear" else module.out_channels
        positions = 1 if kind == "QLinear" else module.kernel_size[0] * module.kernel_size[1]
        return 32 * out * inputs * positions, layer_bits(out, inputs, positions, module.dim, module.codewords)

    return compression_ratio(flat, weight_bits)


QCNN_QUANTIZE = Method(
    name="qcnn_quantize",
    settings=QCNNSettings,
    description="Q-CNN (Wu et al. 2016): product quantization of convolution and fully connected weights, "
    "sub-codebooks fitted to the layers' responses with error correction, run by lookup tables.",
    rewrite=rewrite,
    apply=qcnn_quantize,
    measure=static_measure,
)


# -- the small-scale reproduction (`papers check qcnn --run`) ----------------------------------------

PROXY_VARIANT = "qcnn-lenet5_caffe"
PROXY_DATA = "builtin:mnist5k"
PROXY_EPOCHS = 20
PROXY_MARGIN = 1.0
"""The abstract's "merely one percentage loss", as a bar on top-1."""


def qcnn_proxy(
    variant_id: str = PROXY_VARIANT,
    data: str = PROXY_DATA,
    *,
    epochs: int = PROXY_EPOCHS,
    limit: int | None = None,
    latency_runs: int = 5,
) -> dict[str, Any]:
    """Train the variant's base on ``data`` (its recipe, ``epochs`` passes, a fixed seed, one thread),
    then ``papers compress`` it with the data (k-means, the response fit with error correction, written
    as sub-codebooks and assignments, read back into lookup-table layers). Returns the report's top-1
    before and after, bytes and latencies."""
    from papers_plugins.compression.proxy_compress import compress_pretrained

    report = compress_pretrained(
        variant_id, "qcnn_quantize", data, epochs=epochs, limit=limit, latency_runs=latency_runs
    )
    keys = ("metric_before", "metric_after", "bytes_before", "bytes_after", "compression_ratio")
    return {key: report[key] for key in (*keys, "latency_ms_before", "latency_ms_after", "speedup")}


def _proxy_runner(progress: bool) -> tuple[float, float]:
    measured = qcnn_proxy()
    if progress:
        import click

        click.echo(
            f"{PROXY_VARIANT}: top-1 {measured['metric_before']:g}% → {measured['metric_after']:g}%; "
            f"{measured['bytes_before']:,} → {measured['bytes_after']:,} bytes "
            f"({measured['compression_ratio']:g}×); batch 1 {measured['latency_ms_before']:g} → "
            f"{measured['latency_ms_after']:g} ms (lookup tables)",
            err=True,
        )
    return measured["metric_after"], measured["metric_before"] - PROXY_MARGIN


def proxy_checks() -> list:
    """The paper's proxy check."""
    from papers_plugins.compression.pruning import mnist5k_check

    return [
        mnist5k_check(
            PROXY_VARIANT,
            _proxy_runner,
            f"Caffe's LeNet-5 trained on 5,000 of MNIST's digits for {PROXY_EPOCHS} epochs with Caffe's SGD "
            "settings, not the paper's ImageNet networks; then `papers compress` with the data: conv2, fc1 "
            "and fc2 product-quantized at the variant's subspaces and codewords (k-means, then fitted to "
            "their responses on 2,000 training images with error correction), written as sub-codebooks and "
            "assignments, run by lookup tables; passes within "
            f"{PROXY_MARGIN:g} point of the float model's top-1 (the abstract's 'one percentage loss')",
        )
    ]
