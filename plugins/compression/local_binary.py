"""Juefei-Xu, Boddeti and Savvides, "Local Binary Convolutional Neural Networks" (CVPR 2017, arXiv
1608.06049): convolutions replaced by local binary convolutions, trained from scratch.

``local_binary_conv`` is a static rewrite: each convolution it names (default: every one) becomes the
plugin's ``lbc_conv2d`` (:class:`~papers_plugins.compression.lbc_conv.LBConv2d`) with the same output
channels, kernel, stride and padding: ``intermediate`` fixed sparse ternary anchor filters (``inputs``:
as many as the layer's input channels), a ReLU, and a learned 1×1 combination. The network is then
trained as any registry model; only the combinations learn.

Without weights, :func:`static_measure` gives the saving in learnable weights the settings imply for
the layers replaced: ``in × h × w × out`` learned by each convolution against ``intermediate × out``
learned by its LBC layer (biases aside, the same in both), which is h × w where ``intermediate`` is the
layer's input channels.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Literal

from pydantic import Field, field_validator

from papers.errors import SpecError
from papers.graph import FlatGraph
from papers.methods import Method, Settings

LBC_OP = "lbc_conv2d"


class LBCSettings(Settings):
    """The settings of ``local_binary_conv``."""

    intermediate: int | Literal["inputs"] = Field(
        "inputs",
        description="Anchor filters per layer (the paper's m): a number, or `inputs` for as many as the "
        "layer's input channels.",
    )
    nonzero: float = Field(
        0.5, gt=0, le=1, description="The fraction of each anchor filter's weights that are ±1 (the rest 0)."
    )
    layers: list[str] = Field([], description="The convolutions replaced, by node name (default: every one).")
    seed: int = Field(0, ge=0, description="The anchors' random seed (layer i draws from seed + i).")

    @field_validator("intermediate", mode="before")
    @classmethod
    def _count_or_inputs(cls, value: Any) -> Any:
        if value == "inputs" or (type(value) is int and value >= 1):
            return value
        raise ValueError(f"anchors per layer are a positive number or 'inputs', not {value!r}")


def _convolutions(flat: FlatGraph) -> list[str]:
    return [node.name for node in flat.nodes if node.op == "conv2d" and node.module is None]


def _geometry(flat: FlatGraph, names: list[str]) -> dict[str, tuple[int, int, int, int]]:
    """Each named convolution's (in, out, kh, kw) (a build on the meta device)."""
    from papers.build import build
    from papers.registry import get_registry

    model = build(flat, get_registry().catalogue, device="meta")
    shapes = {}
    for name in names:
        conv = model.get_submodule(name)
        shapes[name] = (conv.in_channels, conv.out_channels, *conv.kernel_size)
    return shapes


def rewrite(flat: FlatGraph, settings: LBCSettings) -> FlatGraph:
    """Each chosen convolution becomes ``lbc_conv2d``, once each named layer is a plain convolution
    (one group, no dilation) of the graph."""
    convs = _convolutions(flat)
    for position, name in enumerate(settings.layers):
        if name not in convs:
            known = ", ".join(convs[:12]) or "none"
            raise SpecError(
                f"settings.layers[{position}] names {name!r}, which is no convolution of the base model "
                f"(its convolutions: {known}{', ...' if len(convs) > 12 else ''})"
            )
    chosen = list(settings.layers) or convs
    if not chosen:
        raise SpecError("the base model has no convolution to replace")
    shapes = _geometry(flat, chosen) if settings.intermediate == "inputs" else {}
    nodes = []
    for index, node in enumerate(flat.nodes):
        if node.name in chosen:
            args = dict(node.args)
            for unsupported, plain in (("groups", 1), ("dilation", 1), ("padding_mode", "zeros")):
                if args.get(unsupported, plain) not in (plain, [plain, plain], (plain, plain)):
                    raise SpecError(
                        f"{node.name} has {unsupported} {args[unsupported]!r}: LBC layers are plain"
                    )
            if isinstance(args.get("padding"), str):
                raise SpecError(f"{node.name} has padding {args['padding']!r}: LBC layers take numbers")
            for dropped in ("groups", "dilation", "padding_mode"):
                args.pop(dropped, None)
            m = shapes[node.name][0] if settings.intermediate == "inputs" else settings.intermediate
            args.update(intermediate=m, nonzero=settings.nonzero, seed=settings.seed + index)
            node = replace(node, op=LBC_OP, args=args)
        nodes.append(node)
    return replace(flat, nodes=tuple(nodes))


def learnable_weights(flat: FlatGraph, settings: LBCSettings) -> tuple[int, int]:
    """The learned weights of the replaced convolutions before (in × h × w × out each) and after
    (intermediate × out each), from the graph after the rewrite."""
    from papers.build import build
    from papers.registry import get_registry

    model = build(flat, get_registry().catalogue, device="meta")
    before = after = 0
    for node in flat.nodes:
        if node.op == LBC_OP:
            layer = model.get_submodule(node.name)
            height, width = layer.kernel_size
            before += layer.in_channels * height * width * layer.out_channels
            after += layer.intermediate * layer.out_channels
    return before, after


def static_measure(flat: FlatGraph, settings: LBCSettings) -> dict[str, float]:
    """The saving in learnable weights of the replaced layers (the paper's count, biases aside)."""
    before, after = learnable_weights(flat, settings)
    return {"compression_ratio": before / after} if after else {}


LOCAL_BINARY_CONV = Method(
    name="local_binary_conv",
    settings=LBCSettings,
    description="Local binary convolution (Juefei-Xu et al. 2017): each convolution becomes fixed sparse "
    "ternary anchor filters, a ReLU and a learned 1×1 combination; the network is trained from scratch.",
    rewrite=rewrite,
    measure=static_measure,
)


# -- the small-scale reproduction (`papers check lbcnn --run`) --------------------------------------

PROXY_VARIANT = "lbcnn-lenet5_caffe"
PROXY_DATA = "builtin:mnist5k"
PROXY_EPOCHS = 15
"""Passes over the 4,000 training digits for each network: the registry's choice, not the paper's."""
PROXY_MARGIN = 1.0


def lbcnn_proxy(
    variant_id: str = PROXY_VARIANT,
    data: str = PROXY_DATA,
    *,
    epochs: int = PROXY_EPOCHS,
    limit: int | None = None,
) -> dict[str, Any]:
    """Train the base and the LBC network from the same seed with the base's recipe (``epochs`` passes
    over ``data``, one thread) and give both top-1 accuracies (percent, held-out split) and their
    learned parameter counts."""
    from papers_plugins.compression.pruning import pretrained, proxy_setup

    setup = proxy_setup(variant_id, "local_binary_conv", data, limit)
    with pretrained(setup, epochs) as (model, _, base):
        base_learned = sum(p.numel() for p in model.parameters())
    with pretrained(setup, epochs, build=variant_id) as (model, _, lbc):
        lbc_learned = sum(p.numel() for p in model.parameters())
    return {"base": base, "lbc": lbc, "base_params": base_learned, "lbc_params": lbc_learned}


def _proxy_runner(progress: bool) -> tuple[float, float]:
    measured = lbcnn_proxy()
    if progress:
        import click

        click.echo(
            f"{PROXY_VARIANT}: top-1 {measured['base']:g}% with convolutions ({measured['base_params']:,} "
            f"learned parameters), {measured['lbc']:g}% with LBC layers ({measured['lbc_params']:,})",
            err=True,
        )
    return measured["lbc"], measured["base"] - PROXY_MARGIN


def proxy_checks() -> list:
    """The paper's proxy check (its plugin's ``papers_checks``)."""
    from papers_plugins.compression.pruning import mnist5k_check

    return [
        mnist5k_check(
            PROXY_VARIANT,
            _proxy_runner,
            "Caffe's LeNet-5 with both convolutions replaced by LBC layers (the variant's anchors and "
            f"sparsity), trained from scratch on 5,000 of MNIST's digits for {PROXY_EPOCHS} epochs with "
            "Caffe's SGD settings beside the same network with its convolutions, trained alike; not the "
            f"paper's networks or MNIST's 60,000 images; passes within {PROXY_MARGIN:g} point of the "
            "convolutional network's top-1 (the paper's performance parity)",
        )
    ]
