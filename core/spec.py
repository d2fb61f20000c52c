"""The spec of a paper: pydantic models for everything a paper contributes.

Every model forbids unknown fields, is frozen, and is strict: a string where a number is due is an
error, never a conversion. ``Spec.model_json_schema()`` is what ``papers schema`` prints.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    model_validator,
)
from typing_extensions import TypeAliasType

from papers.errors import SpecError

SLUG = r"^[a-z][a-z0-9_\-]*$"
VARIANT_ID = r"^[a-z][a-z0-9_\-]*(\.(torchvision|timm))?$"
NAME = r"^[A-Za-z_][A-Za-z0-9_\-]*(\.[A-Za-z0-9_\-]+)*$|^.*\$\{.*\}.*$"

Value = TypeAliasType("Value", Union[bool, int, float, str, list["Value"], None])
"""A literal argument: a number, a string (``${...}`` marks an expression), a bool, or a list."""

Topic = Literal["classification", "detection", "segmentation", "compression"]
CompressionKind = Literal["pruning", "quantization", "low-rank", "distillation", "review"]


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, strict=True, populate_by_name=True, allow_inf_nan=False, defer_build=True
    )


# --- citation -------------------------------------------------------------------------------


class Citation(_Model):
    """Where the paper was published; BibTeX is rendered from this, never stored."""

    title: str = Field(min_length=1, max_length=400)
    authors: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(min_length=1, max_length=100)
    year: int = Field(ge=1900, le=2100)
    venue: str = Field(min_length=1, max_length=40, description="Short venue name: ICLR, CVPR, NIPS, arXiv.")
    venue_full: str | None = Field(None, max_length=300, description="booktitle or journal in BibTeX.")
    kind: Literal["conference", "journal", "preprint", "report", "thesis"] = Field(
        description="Decides the BibTeX entry type."
    )
    volume: str | None = None
    number: str | None = None
    pages: str | None = None
    publisher: str | None = None
    arxiv: str | None = Field(None, pattern=r"^(\d{4}\.\d{4,5}|[a-z\-]+/\d{7})$")
    doi: str | None = Field(None, pattern=r"^10\.\d{4,9}/\S+$")
    url: str | None = Field(None, pattern=r"^https?://\S+$")


# --- hyperparameters ------------------------------------------------------------------------


class Optimizer(_Model):
    name: Literal["sgd", "adam", "adamw", "rmsprop", "adagrad", "sdlm"] = Field(
        description="sdlm: stochastic diagonal Levenberg-Marquardt (LeCun et al. 1998)."
    )
    lr: float | None = Field(None, gt=0, description="Initial learning rate, where the paper gives it.")
    momentum: float | None = Field(None, ge=0, lt=1)
    nesterov: bool | None = None
    betas: list[float] | None = Field(None, min_length=2, max_length=2)
    eps: float | None = Field(None, gt=0)
    alpha: float | None = Field(None, gt=0, description="RMSProp smoothing constant.")


class Schedule(_Model):
    name: Literal["constant", "step", "multistep", "plateau", "poly", "cosine", "exponential"]
    factor: float | None = Field(None, gt=0, description="Multiplier applied at each decrease.")
    step_size: int | None = Field(None, gt=0)
    milestones: list[int] | None = None
    unit: Literal["epoch", "iteration"] = "epoch"
    times: int | None = Field(None, ge=0, description="How many times the rate was decreased.")
    monitor: str | None = Field(None, description="What a plateau schedule watches.")
    patience: int | None = Field(None, ge=0)
    power: float | None = None


class Augmentation(_Model):
    name: Literal[
        "random_crop",
        "random_resized_crop",
        "resize",
        "center_crop",
        "horizontal_flip",
        "color_jitter",
        "rgb_shift",
        "scale_jitter",
        "mean_subtraction",
        "normalize",
    ]
    args: dict[str, Value] = {}


class Hyperparameters(_Model):
    """The training recipe, typed so that a run can be driven from it."""

    optimizer: Optimizer
    batch_size: int | None = Field(None, gt=0)
    schedule: Schedule | None = None
    epochs: float | None = Field(None, gt=0)
    iterations: int | None = Field(None, gt=0)
    weight_decay: float | None = Field(None, ge=0)
    dropout: float | None = Field(None, ge=0, lt=1)
    input_size: list[int] | None = Field(
        None, min_length=2, max_length=2, description="Training crop (H, W)."
    )
    augmentation: list[Augmentation] = []
    initialisation: str | None = Field(None, description="The paper's initialisation, in words.")
    loss: str | None = None
    criterion: Literal["cross_entropy", "rbf_penalty"] | None = Field(
        None,
        description="The loss, typed for training: cross_entropy on logits (the default); rbf_penalty when "
        "the outputs are penalties (smallest wins), trained by cross-entropy on their negatives.",
    )
    source: str | None = Field(None, description="Where in the paper the recipe is given.")
    notes: str | None = None


# --- architecture graphs --------------------------------------------------------------------


class _NodeBase(_Model):
    name: str | None = Field(None, pattern=NAME, max_length=200)
    inputs: str | list[str] | None = Field(
        None, alias="in", description="Names of the nodes this one reads; default: the previous node."
    )
    when: bool | str | None = Field(None, description="Expression; the node exists only where it is true.")
    feature: str | None = Field(None, description="Names this node's output as a feature stage.")


class OpNode(_NodeBase):
    """One operation from the op catalogue."""

    op: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    args: dict[str, Value] = {}


class BlockNode(_NodeBase):
    """An instance of a block defined in the spec's ``blocks``."""

    block: str = Field(
        pattern=r"^([a-z][a-z0-9_\-]*\.)?[a-z][a-z0-9_\-]*$",
        description="A block of this spec, or `paper.block` for a block of a paper listed in `uses`.",
    )
    args: dict[str, Value] = {}


class GroupNode(_NodeBase):
    """A sequential group: its unnamed children are named by position (``features.0``, ...)."""

    name: str = Field(pattern=NAME, max_length=200)
    group: list[Node] = Field(min_length=1)


class RepeatNode(_Model):
    """Its body, emitted ``repeat`` times with the loop variable ``as`` bound to 0, 1, ..."""

    repeat: int | str = Field(description="Count, or an expression giving it.")
    var: str = Field("i", alias="as", pattern=r"^[a-z_][a-z0-9_]*$")
    body: list[Node] = Field(min_length=1)
    when: bool | str | None = None


def _node_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        for key in ("op", "block", "group", "repeat"):
            if key in value:
                return f"{key} node"
        return None
    if isinstance(value, BaseModel):
        kinds = {
            OpNode: "op node",
            BlockNode: "block node",
            GroupNode: "group node",
            RepeatNode: "repeat node",
        }
        return kinds.get(type(value))
    return None


Node = Annotated[
    Union[
        Annotated[OpNode, Tag("op node")],
        Annotated[BlockNode, Tag("block node")],
        Annotated[GroupNode, Tag("group node")],
        Annotated[RepeatNode, Tag("repeat node")],
    ],
    Discriminator(
        _node_kind,
        custom_error_type="node_kind",
        custom_error_message="a node needs one of the keys op, block, group or repeat",
    ),
]
NODE_TAGS = frozenset({"op node", "block node", "group node", "repeat node"})


class Block(_Model):
    """A reusable subgraph with parameters (a bottleneck, an inception module)."""

    params: dict[str, Value] = {}
    inputs: list[str] = Field(["input"], min_length=1)
    nodes: list[Node] = Field(min_length=1)
    output: str | None = Field(None, description="The node whose output is the block's; default: the last.")


class Output(_Model):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    node: str
    when: bool | str | None = None


class InitRule(_Model):
    """Initialise one parameter of every module made by ``op`` (after PyTorch's defaults)."""

    op: str
    param: Literal["weight", "bias"]
    fn: Literal[
        "normal",
        "uniform",
        "constant",
        "zeros",
        "ones",
        "kaiming_normal",
        "kaiming_uniform",
        "xavier_normal",
        "xavier_uniform",
        "trunc_normal",
    ]
    args: dict[str, Value] = {}


class Graph(_Model):
    """A parametrised architecture; variants bind its parameters."""

    params: dict[str, Value] = {}
    inputs: dict[str, list[int | str]] = Field(
        min_length=1, description="Input name to its shape without the batch dimension (C, H, W)."
    )
    nodes: list[Node] = Field(min_length=1)
    outputs: list[Output] | None = Field(None, description="Default: the last node, as `output`.")
    classifier: list[str] = Field([], description="Nodes that form the classification head.")
    init: list[InitRule] = []


# --- results ---------------------------------------------------------------------------------

Metric = Literal[
    "params",
    "macs",
    "flops",
    "output_shape",
    "top1_error",
    "top5_error",
    "top1_accuracy",
    "top5_accuracy",
    "error",
    "accuracy",
    "map",
    "map50",
    "miou",
    "pixel_accuracy",
    "compression_ratio",
    "speedup",
    "top1_error_change",
    "top5_error_change",
]
METRIC_DIRECTION: dict[str, str] = {
    "params": "lower",
    "macs": "lower",
    "flops": "lower",
    "output_shape": "exact",
    "top1_error": "lower",
    "top5_error": "lower",
    "top1_accuracy": "higher",
    "top5_accuracy": "higher",
    "error": "lower",
    "accuracy": "higher",
    "map": "higher",
    "map50": "higher",
    "miou": "higher",
    "pixel_accuracy": "higher",
    "compression_ratio": "higher",
    "speedup": "higher",
    "top1_error_change": "lower",
    "top5_error_change": "lower",
}
STATIC_METRICS = frozenset({"params", "macs", "flops", "output_shape"})
Unit = Literal["count", "thousand", "million", "billion", "percent", "ratio", "shape"]
UNIT_SCALE = {"count": 1, "thousand": 1e3, "million": 1e6, "billion": 1e9, "percent": 1, "ratio": 1}
Protocol = Literal[
    "single_crop",
    "center_crop",
    "ten_crop",
    "multi_crop",
    "dense",
    "multi_crop_dense",
    "single_scale",
    "multi_scale",
]


class Result(_Model):
    """One number (or shape) the paper reports, with where it is printed and how to check it."""

    variant: str
    metric: Metric
    value: float | list[int]
    unit: Unit
    dataset: str | None = Field(None, description="ImageNet (ILSVRC-2012), CIFAR-10, ...")
    split: Literal["train", "val", "test", "test-dev"] | None = None
    protocol: Protocol | None = None
    conditions: dict[str, Value] = Field({}, description="Settings of the row: train/test scale, ...")
    scope: Literal["model", "backbone", "node"] = Field(
        "model", description="model: everything; backbone: without the classifier; node: one node's output."
    )
    node: str | None = None
    source: str = Field(min_length=1, description="Where the paper prints it: 'Table 2'.")
    tolerance: float | None = Field(
        None, ge=0, description="In the result's unit; default: half a unit of the last printed digit."
    )
    note: str | None = None

    @model_validator(mode="after")
    def _shape_or_number(self) -> Result:
        is_shape = self.metric == "output_shape"
        if is_shape != (self.unit == "shape") or is_shape != isinstance(self.value, list):
            raise ValueError("output_shape results take a list value and unit 'shape'; others a number")
        if (self.scope == "node") != (self.node is not None):
            raise ValueError("scope 'node' needs `node`, and `node` needs scope 'node'")
        return self


# --- variants, methods and the spec ----------------------------------------------------------


class Variant(_Model):
    id: str = Field(pattern=VARIANT_ID, max_length=80)
    name: str = Field(min_length=1, max_length=120, description="Display name: 'VGG-16 (D)'.")
    graph: str
    args: dict[str, Value] = {}
    origin: Literal["paper", "torchvision", "timm", "derived"] = Field(
        "paper", description="Whose model this is; only 'paper' variants are the paper's own."
    )
    origin_note: str | None = Field(None, description="How it differs from the paper, where it does.")
    reference: str | None = Field(
        None,
        pattern=r"^(torchvision|timm):[a-z0-9_.]+$",
        description="A library model with the same graph and state_dict names: 'torchvision:vgg16'.",
    )

    @model_validator(mode="after")
    def _origin_explained(self) -> Variant:
        if self.origin != "paper" and not self.origin_note:
            raise ValueError("a variant that is not the paper's own needs an origin_note")
        return self


class Method(_Model):
    """A compression paper's method applied to another spec's variant."""

    base: str = Field(description="Variant id of the model the paper compresses.")
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    settings: dict[str, Value] = {}


class Spec(_Model):
    """Everything the registry knows about one paper."""

    schema_version: Literal[1] = 1
    id: str = Field(pattern=SLUG, max_length=60)
    name: str = Field(min_length=1, max_length=80, description="Short display name: 'VGGNet'.")
    topics: list[Topic] = Field(min_length=1)
    kind: CompressionKind | None = Field(None, description="Required for compression papers.")
    citation: Citation
    summary: str = Field(min_length=1, description="The idea, and what changed, in our own words.")
    hyperparameters: Hyperparameters | None = None
    uses: list[str] = Field([], description="Papers whose blocks this spec reuses, as `paper.block`.")
    blocks: dict[str, Block] = {}
    graphs: dict[str, Graph] = {}
    variants: list[Variant] = []
    results: list[Result] = []
    method: Method | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Spec:
        if len(set(self.topics)) != len(self.topics):
            raise ValueError("topics repeat")
        if ("compression" in self.topics) != (self.kind is not None):
            raise ValueError("compression papers need `kind`, and only they take it")
        seen: set[str] = set()
        for index, variant in enumerate(self.variants):
            if variant.id in seen:
                raise _at(f"variants[{index}].id", f"variant id {variant.id!r} repeats")
            seen.add(variant.id)
            if variant.graph not in self.graphs:
                raise _at(f"variants[{index}].graph", f"no graph {variant.graph!r} in `graphs`")
        for index, result in enumerate(self.results):
            if result.variant not in seen:
                raise _at(f"results[{index}].variant", f"no variant {result.variant!r} in this spec")
        return self

    def variant(self, variant_id: str) -> Variant:
        for variant in self.variants:
            if variant.id == variant_id:
                return variant
        raise KeyError(variant_id)


class _FieldValueError(ValueError):
    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def _at(field: str, message: str) -> _FieldValueError:
    return _FieldValueError(field, message)


GroupNode.model_rebuild()
RepeatNode.model_rebuild()
Block.model_rebuild()
Graph.model_rebuild()


def field_path(loc: tuple[Any, ...]) -> str:
    """``('variants', 2, 'id')`` -> ``variants[2].id``; union tags are left out."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in NODE_TAGS:
            continue
        else:
            path += f".{part}" if path else str(part)
    return path


def validate_spec(data: Any, *, file: str | None = None) -> Spec:
    """Validate parsed YAML into a :class:`Spec`, raising :class:`SpecError` with the field path."""
    if not isinstance(data, dict):
        kind = "empty" if data is None else f"a {type(data).__name__}"
        raise SpecError(f"a spec is a mapping at the top level, this file is {kind}", file=file)
    try:
        return Spec.model_validate(data)
    except ValidationError as exc:
        raise _spec_error(exc, file) from None


def validate_spec_json(document: bytes, *, file: str | None = None) -> Spec | None:
    """Validate a cached JSON document (pydantic parses and validates it in one pass, about twice as
    fast as from Python objects); ``None`` where the document is not JSON at all (a damaged cache)."""
    try:
        return Spec.model_validate_json(document)
    except ValidationError as exc:
        if any(error["type"] == "json_invalid" for error in exc.errors()):
            return None
        raise _spec_error(exc, file) from None


def _spec_error(exc: ValidationError, file: str | None) -> SpecError:
    errors = exc.errors(include_url=False)
    first = errors[0]
    field = field_path(first["loc"])
    message = first["msg"]
    original = (first.get("ctx") or {}).get("error")
    if isinstance(original, _FieldValueError):
        field = f"{field}.{original.field}" if field else original.field
        message = str(original)
    elif first["type"] not in ("missing", "extra_forbidden") and "input" in first:
        shown = repr(first["input"])
        message += f" (got {shown[:60] + '...' if len(shown) > 60 else shown})"
    if first["type"] == "extra_forbidden":
        message = "unknown field"
    more = len(errors) - 1
    if more:
        message += f" (and {more} more error{'s' if more > 1 else ''})"
    return SpecError(message, file=file, field=field or None)
