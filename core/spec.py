"""The spec of a paper: pydantic models for everything a paper contributes.

Every model forbids unknown fields, is frozen, and is strict: a string where a number is due is an
error, never a conversion. ``Spec.model_json_schema()`` is what ``papers schema`` prints.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError
from typing_extensions import TypeAliasType

from papers.errors import SpecError
from papers.topics import COMPRESSION_KINDS, TOPICS

SLUG = r"^[a-z][a-z0-9_\-]*$"
VARIANT_ID = r"^[a-z][a-z0-9_\-]*(\.(torchvision|timm))?$"
NAME = r"^[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*$|^.*\$\{.*\}.*$"

Value = TypeAliasType("Value", Union[bool, int, float, str, list["Value"], None])
"""A literal argument: a number, a string (``${...}`` marks an expression), a bool, or a list."""

Topic = Literal[TOPICS]
CompressionKind = Literal[COMPRESSION_KINDS]


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, strict=True, populate_by_name=True, allow_inf_nan=False, defer_build=True
    )


# --- citation -------------------------------------------------------------------------------

# Identifiers and addresses end up in links on the site and in BibTeX, so each is checked against what
# it can really be: a scheme other than http(s), and characters that could close a Markdown link
# target or an HTML attribute (a space, a double quote, a bracket; a parenthesis in a DOI or an arXiv
# id) are refused here. The site escapes link targets again (``papers.site.link_target``): a URL may
# hold parentheses, which are percent-encoded there.
ARXIV_ID = r"^(\d{4}\.\d{4,5}|[a-z\-]+(\.[A-Z]{2})?/\d{7})(v\d+)?$"
DOI = r"^10\.\d{4,9}/[A-Za-z0-9\-._;:/+]+$"
WEB_ADDRESS = (
    r"^https?://[A-Za-z0-9]([A-Za-z0-9\-.]*[A-Za-z0-9])?(:\d{1,5})?"
    r"([/?#][A-Za-z0-9\-._~:/?#@!$&'()*+,;=%]*)?$"
)
_LINK_MAX = 2000


def _link_type(pattern: str, kind: str, expected: str) -> Any:
    """A string type checked against ``pattern``, refused with one message saying what was expected."""
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if len(value) > _LINK_MAX or not compiled.fullmatch(value):
            raise PydanticCustomError(kind, expected)
        return value

    return Annotated[str, AfterValidator(check), WithJsonSchema({"type": "string", "pattern": pattern})]


ArxivId = _link_type(
    ARXIV_ID, "arxiv_id", "not an arXiv id: expected one such as 1409.1556, 1409.1556v6 or hep-th/9901001"
)
Doi = _link_type(
    DOI,
    "doi",
    "not a DOI: expected 10.NNNN/suffix, of letters, digits and - . _ ; : / + only "
    "(no spaces, quotes, brackets or parentheses)",
)
WebAddress = _link_type(
    WEB_ADDRESS,
    "web_address",
    "not a web address: expected http:// or https://, a host, and no spaces, double quotes, "
    "square or angle brackets, braces or backslashes",
)


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
    arxiv: ArxivId | None = None
    doi: Doi | None = None
    url: WebAddress | None = Field(None, description="http or https only.")


# --- hyperparameters ------------------------------------------------------------------------


class Optimizer(_Model):
    name: str = Field(
        pattern=r"^[a-z][a-z0-9_]*$",
        max_length=100,
        description="An optimizer of the registry, checked when the recipe is resolved: the core's sgd, "
        "adam, adamw, rmsprop and adagrad, or one a plugin contributes (LeNet-5's sdlm).",
    )
    lr: float | None = Field(None, gt=0, description="Initial learning rate, where the paper gives it.")
    momentum: float | None = Field(None, ge=0, lt=1)
    nesterov: bool | None = None
    betas: list[float] | None = Field(None, min_length=2, max_length=2)
    eps: float | None = Field(None, gt=0)
    alpha: float | None = Field(None, gt=0, description="RMSProp smoothing constant.")


class Schedule(_Model):
    name: Literal["constant", "step", "multistep", "piecewise", "plateau", "poly", "cosine", "exponential"]
    factor: float | None = Field(None, gt=0, description="Multiplier applied at each decrease.")
    step_size: int | None = Field(None, gt=0)
    milestones: list[int] | None = None
    values: list[float] | None = Field(
        None,
        min_length=1,
        description="A piecewise schedule's rates: values[0] until milestones[0], values[i] from "
        "milestones[i-1] on (one value more than milestones).",
    )
    unit: Literal["epoch", "iteration"] = "epoch"
    times: int | None = Field(None, ge=0, description="How many times the rate was decreased.")
    monitor: str | None = Field(None, description="What a plateau schedule watches.")
    patience: int | None = Field(None, ge=0)
    power: float | None = None

    @model_validator(mode="after")
    def _piecewise(self) -> Schedule:
        if self.name == "piecewise":
            problem = piecewise_problem(self.milestones, self.values)
            if problem:
                raise ValueError(problem)
        return self


def piecewise_problem(milestones: list[int] | None, values: list[float] | None) -> str | None:
    """What keeps ``milestones`` and ``values`` from being a piecewise-constant schedule, if anything."""
    if not values or milestones is None:
        return "piecewise needs `values` and `milestones`"
    if len(values) != len(milestones) + 1:
        return f"piecewise gives {len(values)} values for {len(milestones)} milestones; it needs one more"
    if any(v <= 0 for v in values):
        return f"piecewise values are positive rates, not {values}"
    if any(m < 1 for m in milestones) or sorted(set(milestones)) != milestones:
        return f"piecewise milestones increase from 1 on, not {milestones}"
    return None


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
        "rand_augment",
    ]
    args: dict[str, Value] = {}


class Warmup(_Model):
    """A lower learning rate at the start of training, until a length or a training error is reached
    (ResNet-110 on CIFAR: 0.01 until the training error is below 80 %, then the recipe's rate)."""

    lr: float = Field(gt=0, description="The rate during the warm-up.")
    epochs: int | None = Field(None, gt=0)
    iterations: int | None = Field(None, gt=0)
    until_train_error: float | None = Field(
        None, gt=0, le=100, description="Ends once the training error (percent) is below this."
    )

    @model_validator(mode="after")
    def _one_end(self) -> Warmup:
        given = [self.epochs, self.iterations, self.until_train_error]
        if sum(value is not None for value in given) != 1:
            raise ValueError("warmup ends by exactly one of epochs, iterations and until_train_error")
        return self


class Hyperparameters(_Model):
    """The training recipe, typed so that a run can be driven from it."""

    optimizer: Optimizer
    warmup: Warmup | None = None
    aux_weight: float | None = Field(
        None, ge=0, description="Each auxiliary classifier's loss is added with this weight."
    )
    label_smoothing: float | None = Field(None, ge=0, lt=1)
    grad_clip: float | None = Field(None, gt=0, description="Clip the gradients' global norm at this.")
    ema_decay: float | None = Field(
        None, gt=0, lt=1, description="Evaluate an exponential moving average of the weights."
    )
    weight_averaging: bool | None = Field(
        None, description="The paper evaluates an average of the weights (its decay in ema_decay, if given)."
    )
    not_followed: list[str] = Field(
        [],
        description="What of the paper's training the recipe cannot say or run, in words: each "
        "becomes a deviation of the resolved recipe.",
    )
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
    criterion: str | None = Field(
        None,
        pattern=r"^[a-z][a-z0-9_]*$",
        max_length=100,
        description="The loss training runs, a criterion of the registry checked when the recipe is "
        "resolved: the core's cross_entropy on logits (the default), or one a plugin contributes "
        "(LeNet-5's rbf_penalty).",
    )
    source: str | None = Field(None, description="Where in the paper the recipe is given.")
    notes: str | None = None


class Recipe(_Model):
    """The recipe of a group of variants the paper trains otherwise (its CIFAR networks): it replaces
    the paper-level ``hyperparameters`` for those variants, whole, so each value is read in one place."""

    variants: list[str] = Field(min_length=1, description="Variants of this spec trained this way.")
    hyperparameters: Hyperparameters


# --- architecture graphs --------------------------------------------------------------------


class _NodeBase(_Model):
    name: str | None = Field(None, pattern=NAME, max_length=200)
    inputs: str | list[str] | None = Field(
        None, alias="in", description="Names of the nodes this one reads; default: the previous node."
    )
    when: bool | str | None = Field(None, description="Expression; the node exists only where it is true.")
    feature: str | None = Field(None, description="Names this node's output as a feature stage.")
    shares: str | None = Field(
        None,
        description="A node or block instance whose modules this one calls instead of owning its own: one "
        "set of weights over several inputs (a head run on every pyramid level).",
    )


class OpNode(_NodeBase):
    """One operation from the op catalogue."""

    op: str = Field(
        pattern=r"^[a-z][a-z0-9_]*$|^\$\{.*\}$",
        description="An op of the catalogue, or an expression giving one (`${norm}`).",
    )
    args: dict[str, Value] = {}


class BlockNode(_NodeBase):
    """An instance of a block defined in the spec's ``blocks``."""

    block: str = Field(
        pattern=r"^([a-z][a-z0-9_\-]*\.)?[a-z][a-z0-9_\-]*$|^\$\{.*\}$",
        description="A block of this spec, or `paper.block` for a block of a paper listed in `uses`.",
    )
    args: dict[str, Value] = {}


class GraphNode(_NodeBase):
    """Another graph inlined: this spec's, or `paper.graph` of a paper listed in `uses`.

    Its layers are named under this node's name (`backbone.body.layer1`), or as in the other graph
    when the node has no name. Its outputs and feature stages are items: `body.stage4`.
    """

    graph: str = Field(
        pattern=r"^([a-z][a-z0-9_\-]*\.)?[a-z][a-z0-9_]*$",
        description="A graph of this spec, or `paper.graph` for a graph of a paper listed in `uses`.",
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
        for key in ("op", "block", "group", "repeat", "graph"):
            if key in value:
                return f"{key} node"
        return None
    if isinstance(value, BaseModel):
        kinds = {
            OpNode: "op node",
            BlockNode: "block node",
            GroupNode: "group node",
            RepeatNode: "repeat node",
            GraphNode: "graph node",
        }
        return kinds.get(type(value))
    return None


Node = Annotated[
    Union[
        Annotated[OpNode, Tag("op node")],
        Annotated[BlockNode, Tag("block node")],
        Annotated[GroupNode, Tag("group node")],
        Annotated[RepeatNode, Tag("repeat node")],
        Annotated[GraphNode, Tag("graph node")],
    ],
    Discriminator(
        _node_kind,
        custom_error_type="node_kind",
        custom_error_message="a node needs one of the keys op, block, group, repeat or graph",
    ),
]
NODE_TAGS = frozenset({"op node", "block node", "group node", "repeat node", "graph node"})


class Block(_Model):
    """A reusable subgraph with parameters (a bottleneck, an inception module)."""

    params: dict[str, Value] = {}
    inputs: list[str] = Field(["input"], min_length=1)
    nodes: list[Node] = Field(min_length=1)
    output: str | None = Field(None, description="The node whose output is the block's; default: the last.")
    outputs: dict[str, str] | None = Field(
        None,
        min_length=1,
        description="Several outputs, item name to node (`{out: pool, indices: pool.indices}`): an "
        "instance's items (`enc.indices`); the first is the instance's own output.",
    )

    @model_validator(mode="after")
    def _one_output(self) -> Block:
        if self.output is not None and self.outputs is not None:
            raise ValueError("a block takes `output` or `outputs`, not both")
        return self


class Output(_Model):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    node: str
    when: bool | str | None = None


class InitRule(_Model):
    """Initialise one parameter of every module made by ``op`` (after PyTorch's defaults); ``args`` are
    the function's keywords, where ``${...}`` resolves in the params of the graph that holds the rule."""

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
        "bilinear",
    ]
    args: dict[str, Value] = {}


# --- task layers: what is not a layer ---------------------------------------------------------


class Anchors(_Model):
    """Anchor boxes laid on each pyramid level (torchvision's AnchorGenerator)."""

    sizes: list[list[float]] = Field(
        min_length=1, description="Per level, the anchors' sizes (the square root of their area) in pixels."
    )
    aspect_ratios: list[list[float]] = Field(
        min_length=1, description="Per level (or one list for every level), height / width of the anchors."
    )

    @model_validator(mode="after")
    def _per_level(self) -> Anchors:
        if len(self.aspect_ratios) not in (1, len(self.sizes)):
            raise ValueError("aspect_ratios gives one list for every level, or one for all")
        if any(value <= 0 for row in (*self.sizes, *self.aspect_ratios) for value in row):
            raise ValueError("anchor sizes and aspect ratios are positive")
        return self


class DetectionTransform(_Model):
    """How images are normalised, resized and batched before the network (GeneralizedRCNNTransform)."""

    min_size: int = Field(800, gt=0, le=4096)
    max_size: int = Field(1333, gt=0, le=8192)
    image_mean: list[float] = Field([0.485, 0.456, 0.406], min_length=1)
    image_std: list[float] = Field([0.229, 0.224, 0.225], min_length=1)
    size_divisible: int = Field(32, gt=0, le=512)


class DenseDetection(_Model):
    """A single-stage detector's task layer: anchors on the graph's pyramid maps, the graph's per-anchor
    class scores and box deltas decoded, matched and scored as torchvision's RetinaNet does."""

    levels: list[str] = Field(
        min_length=1, description="Graph outputs that are the pyramid maps, finest first."
    )
    scores: str = Field("cls_logits", description="Graph output [N, anchors, classes]: class logits.")
    boxes: str = Field("bbox_regression", description="Graph output [N, anchors, 4]: box deltas.")
    anchors: Anchors
    box_weights: list[float] = Field(
        [1.0, 1.0, 1.0, 1.0], min_length=4, max_length=4, description="The box coder's (wx, wy, ww, wh)."
    )
    fg_iou_thresh: float = Field(0.5, ge=0, le=1)
    bg_iou_thresh: float = Field(0.4, ge=0, le=1)
    allow_low_quality_matches: bool = True
    focal_alpha: float = Field(0.25, ge=0, le=1)
    focal_gamma: float = Field(2.0, ge=0)
    box_loss: Literal["l1", "smooth_l1", "giou"] = "l1"
    score_thresh: float = Field(0.05, ge=0, le=1)
    nms_thresh: float = Field(0.5, ge=0, le=1)
    detections_per_img: int = Field(300, gt=0)
    topk_candidates: int = Field(1000, gt=0)
    transform: DetectionTransform = DetectionTransform()

    @model_validator(mode="after")
    def _thresholds(self) -> DenseDetection:
        if self.bg_iou_thresh > self.fg_iou_thresh:
            raise ValueError("bg_iou_thresh is at most fg_iou_thresh")
        if len(self.anchors.sizes) != len(self.levels):
            raise ValueError(
                f"anchors.sizes gives {len(self.anchors.sizes)} levels, `levels` {len(self.levels)}"
            )
        return self


class BoxHead(_Model):
    """The second stage's graph: pooled RoI features [K, C, h, w] in, class logits and box deltas out."""

    graph: str = Field(
        description="A graph of this spec whose one input [C, s, s] is the pooled RoI features."
    )
    args: dict[str, Value] = Field(
        {}, description="Its arguments; parameters it shares by name with the detector's graph follow it."
    )
    class_logits: str = Field("class_logits", description="Its output [K, classes].")
    box_regression: str = Field("box_regression", description="Its output [K, 4 × classes].")


class RoIPooling(_Model):
    """How each proposal is pooled from the maps: RoIAlign over the FPN levels (MultiScaleRoIAlign,
    level by box size), or on one map RoI max pooling (Fast R-CNN's), position-sensitive RoI pooling
    (R-FCN's ``ps_pool``) or position-sensitive RoIAlign (Light-Head R-CNN's ``ps_align``), to the
    box head graph's input size (a position-sensitive map of C·s² channels gives [C, s, s])."""

    kind: Literal["align", "pool", "ps_pool", "ps_align"] = "align"
    levels: list[str] = Field(
        min_length=1, description="Graph outputs pooled from (all kinds but `align`: exactly one)."
    )
    sampling_ratio: int = Field(2, ge=0, le=16, description="RoIAlign's samples per bin (0: adaptive).")

    @model_validator(mode="after")
    def _one_map(self) -> RoIPooling:
        if self.kind != "align" and len(self.levels) != 1:
            raise ValueError(f"`kind: {self.kind}` reads one map: give one level")
        return self


class RegionDetection(_Model):
    """A two-stage detector's task layer (Faster R-CNN): the graph's maps and per-level RPN objectness
    and deltas become proposals (torchvision's RegionProposalNetwork); each proposal is pooled and
    classified by the `box_head` graph (torchvision's RoIHeads). Field names are torchvision's
    FasterRCNN keyword names, so each is also a build option."""

    kind: Literal["two_stage"]
    levels: list[str] = Field(min_length=1, description="Graph outputs the anchors lie on, finest first.")
    objectness: list[str] = Field(min_length=1, description="Per level, the RPN's [N, A, H, W] logits.")
    rpn_deltas: list[str] = Field(min_length=1, description="Per level, the RPN's [N, 4A, H, W] deltas.")
    anchors: Anchors
    roi_pool: RoIPooling
    box_head: BoxHead
    rpn_pre_nms_top_n_train: int = Field(2000, gt=0)
    rpn_pre_nms_top_n_test: int = Field(1000, gt=0)
    rpn_post_nms_top_n_train: int = Field(2000, gt=0)
    rpn_post_nms_top_n_test: int = Field(1000, gt=0)
    rpn_nms_thresh: float = Field(0.7, ge=0, le=1)
    rpn_fg_iou_thresh: float = Field(0.7, ge=0, le=1)
    rpn_bg_iou_thresh: float = Field(0.3, ge=0, le=1)
    rpn_batch_size_per_image: int = Field(256, gt=0)
    rpn_positive_fraction: float = Field(0.5, ge=0, le=1)
    rpn_score_thresh: float = Field(0.0, ge=0, le=1)
    box_score_thresh: float = Field(0.05, ge=0, le=1)
    box_nms_thresh: float = Field(0.5, ge=0, le=1)
    box_detections_per_img: int = Field(100, gt=0)
    box_fg_iou_thresh: float = Field(0.5, ge=0, le=1)
    box_bg_iou_thresh: float = Field(0.5, ge=0, le=1)
    box_batch_size_per_image: int = Field(512, gt=0)
    box_positive_fraction: float = Field(0.25, ge=0, le=1)
    bbox_reg_weights: list[float] = Field(
        [10.0, 10.0, 5.0, 5.0],
        min_length=4,
        max_length=4,
        description="The second stage's box coder (wx, wy, ww, wh).",
    )
    transform: DetectionTransform = DetectionTransform()

    @model_validator(mode="after")
    def _per_level(self) -> RegionDetection:
        for name in ("objectness", "rpn_deltas"):
            if len(getattr(self, name)) != len(self.levels):
                raise ValueError(
                    f"{name} names {len(getattr(self, name))} outputs, `levels` {len(self.levels)}"
                )
        if len(self.anchors.sizes) != len(self.levels):
            raise ValueError(
                f"anchors.sizes gives {len(self.anchors.sizes)} levels, `levels` {len(self.levels)}"
            )
        for stage in ("rpn", "box"):
            if getattr(self, f"{stage}_bg_iou_thresh") > getattr(self, f"{stage}_fg_iou_thresh"):
                raise ValueError(f"{stage}_bg_iou_thresh is at most {stage}_fg_iou_thresh")
        return self


class DefaultBoxes(_Model):
    """SSD's default boxes on each map (torchvision's DefaultBoxGenerator): per level a square box of
    scale s_k and one of scale √(s_k s_k+1), and for each ratio r a box of r and one of 1/r at s_k."""

    aspect_ratios: list[list[float]] = Field(
        min_length=1, description="Per level, the ratios r (width / height) besides 1; each adds r and 1/r."
    )
    scales: list[float] | None = Field(
        None,
        description="s_1 ... s_m+1, fractions of the image side, one more than the levels (the last one "
        "only sizes the last level's extra square box); default: min_ratio to max_ratio evenly, then 1.",
    )
    min_ratio: float = Field(0.15, gt=0, le=1, description="s_min, where `scales` is not given.")
    max_ratio: float = Field(0.9, gt=0, le=1, description="s_max, where `scales` is not given.")
    steps: list[int] | None = Field(
        None,
        description="Per level, the pixel distance between box centres; default: the image side divided "
        "by the map's (the centres ((i + 0.5)/|f_k|, (j + 0.5)/|f_k|) of the paper).",
    )
    clip: bool = Field(True, description="Clip the boxes (in fractions of the image) to [0, 1].")

    @model_validator(mode="after")
    def _per_level(self) -> DefaultBoxes:
        levels = len(self.aspect_ratios)
        if self.scales is not None and len(self.scales) != levels + 1:
            raise ValueError(
                f"scales gives {len(self.scales)} values, one more than the {levels} levels needed"
            )
        if self.steps is not None and len(self.steps) != levels:
            raise ValueError(f"steps gives {len(self.steps)} values for {levels} levels")
        if self.min_ratio > self.max_ratio:
            raise ValueError("min_ratio is at most max_ratio")
        if any(value <= 0 for row in self.aspect_ratios for value in row) or any(
            value <= 0 for value in (*(self.scales or ()), *(self.steps or ()))
        ):
            raise ValueError("aspect ratios, scales and steps are positive")
        return self


class SingleShotDetection(DenseDetection):
    """SSD's task layer (`kind: ssd`): default boxes on the graph's maps, each matched to the ground
    truth at IoU ≥ `iou_thresh` and to the box that overlaps it most, hard negatives mined to
    (1 − `positive_fraction`)/`positive_fraction` per positive, smooth L1 and softmax cross-entropy
    (class 0 the background), per-class NMS in inference; every image resized to `size` × `size`.
    torchvision's SSD does it all, and the field names are its keyword names (each a build option)."""

    kind: Literal["ssd"]
    anchors: Anchors | None = Field(None, description="Not used: `default_boxes` lays the boxes.")
    default_boxes: DefaultBoxes
    size: int = Field(300, gt=0, le=4096, description="The fixed square side every image is resized to.")
    box_weights: list[float] = Field(
        [10.0, 10.0, 5.0, 5.0],
        min_length=4,
        max_length=4,
        description="The box coder's (wx, wy, ww, wh): 1/0.1 for the centre, 1/0.2 for the size.",
    )
    iou_thresh: float = Field(
        0.5, ge=0, le=1, description="A default box matches a ground truth from this IoU."
    )
    positive_fraction: float = Field(
        0.25, gt=0, le=1, description="Positives among the kept boxes: 0.25 keeps 3 negatives per positive."
    )
    score_thresh: float = Field(0.01, ge=0, le=1)
    nms_thresh: float = Field(0.45, ge=0, le=1)
    detections_per_img: int = Field(200, gt=0)
    topk_candidates: int = Field(400, gt=0, description="Per class, the best boxes kept before NMS.")

    @model_validator(mode="before")
    @classmethod
    def _fixed_size(cls, data: Any) -> Any:
        """The transform resizes to `size` × `size` with no padding: its sizes are `size`'s."""
        if not isinstance(data, dict):
            return data
        size = data.get("size", 300)
        transform = dict(data.get("transform") or {})
        for key, value in (("min_size", size), ("max_size", size), ("size_divisible", 1)):
            if transform.setdefault(key, value) != value:
                raise ValueError(
                    f"`kind: ssd` resizes every image to `size` × `size`: transform.{key} is {value}"
                )
        return {**data, "transform": transform}

    @model_validator(mode="after")
    def _thresholds(self) -> SingleShotDetection:
        unused = self.model_fields_set & _DENSE_ONLY
        if unused:
            raise ValueError(f"`kind: ssd` does not use {', '.join(sorted(unused))}")
        if len(self.default_boxes.aspect_ratios) != len(self.levels):
            raise ValueError(
                f"default_boxes.aspect_ratios gives {len(self.default_boxes.aspect_ratios)} levels, "
                f"`levels` {len(self.levels)}"
            )
        return self


_DENSE_ONLY = frozenset(
    {
        "anchors",
        "fg_iou_thresh",
        "bg_iou_thresh",
        "allow_low_quality_matches",
        "focal_alpha",
        "focal_gamma",
        "box_loss",
    }
)
"""RetinaNet's fields, which SSD's task layer does not read."""


def _detection_kind(value: Any) -> str:
    kind = value.get("kind") if isinstance(value, dict) else getattr(value, "kind", None)
    return kind if kind in ("two_stage", "ssd") else "dense"


Detection = Annotated[
    Union[
        Annotated[DenseDetection, Tag("dense")],
        Annotated[RegionDetection, Tag("two_stage")],
        Annotated[SingleShotDetection, Tag("ssd")],
    ],
    Discriminator(_detection_kind),
]
"""A graph's `detection` section: single-stage (RetinaNet's), with `kind: ssd` SSD's, or with
`kind: two_stage` Faster R-CNN's."""


class DenseCRF(_Model):
    """The fully connected CRF a segmenter's paper runs on its scores (DeepLab): mean-field inference
    with an appearance (bilateral) and a smoothness (Gaussian) Potts kernel (``papers segment --crf``)."""

    appearance_weight: float = Field(
        5.0, gt=0, description="w1, the bilateral kernel's weight (the paper cross-validates it)."
    )
    appearance_xy: float = Field(50.0, gt=0, description="θα, the bilateral kernel's position std (pixels).")
    appearance_rgb: float = Field(3.0, gt=0, description="θβ, the bilateral kernel's colour std (0-255).")
    smoothness_weight: float = Field(3.0, gt=0, description="w2, the Gaussian kernel's weight.")
    smoothness_xy: float = Field(3.0, gt=0, description="θγ, the Gaussian kernel's position std (pixels).")
    iterations: int = Field(10, ge=1, le=1000, description="Mean-field iterations.")


class Segmentation(_Model):
    """A segmenter's task layer: the graph's class maps resized to the input, as torchvision's
    segmentation models return them (``{"out": ..., "aux": ...}``)."""

    out: str = Field("output", description="Graph output with the class logits.")
    aux: str | None = Field(None, description="Graph output of an auxiliary classifier, if any.")
    mode: Literal["bilinear", "nearest"] = "bilinear"
    align_corners: bool = False
    crf: DenseCRF | None = Field(None, description="The paper's CRF post-processing, if it has one.")
    msc_scales: list[Annotated[float, Field(gt=0, le=4)]] | None = Field(
        None,
        min_length=2,
        description="The paper's multi-scale inputs (DeepLab v2's MSC), if it has them: the image's "
        "scales, the score maps fused by a per-pixel maximum.",
    )


class Graph(_Model):
    """A parametrised architecture; variants bind its parameters."""

    params: dict[str, Value] = {}
    inputs: dict[str, list[int | str]] = Field(
        min_length=1, description="Input name to its shape without the batch dimension (C, H, W)."
    )
    unbatched: list[str] = Field(
        [], description="Inputs whose shape is the whole shape, with no batch dimension (rois: [K, 5])."
    )
    nodes: list[Node] = Field(min_length=1)
    outputs: list[Output] | None = Field(None, description="Default: the last node, as `output`.")
    classifier: list[str] = Field([], description="Nodes that form the classification head.")
    init: list[InitRule] = []
    detection: Detection | None = Field(None, description="The task layer of a detector.")
    segmentation: Segmentation | None = Field(None, description="The task layer of a segmenter.")

    @model_validator(mode="after")
    def _one_task(self) -> Graph:
        if self.detection is not None and self.segmentation is not None:
            raise ValueError("a graph has one task layer: `detection` or `segmentation`")
        return self


# --- results ---------------------------------------------------------------------------------

Metric = Literal[
    "params",
    "macs",
    "flops",
    "output_shape",
    # a node's receptive field, in input pixels along one side (papers.receptive_field)
    "receptive_field",
    "top1_error",
    "top5_error",
    "top1_accuracy",
    "top5_accuracy",
    "error",
    "accuracy",
    "map",
    "map50",
    # segmentation, as papers.segmentation_metrics computes them from one confusion matrix
    "miou",
    "pixel_acc",
    "mean_acc",
    "fwiou",
    # detection, as papers.detection_metrics computes them: VOC's mAP@0.5 (2007's 11-point, 2010+'s
    # area) and COCO's AP (0.5:0.95), AP at IoU 0.5 and 0.75, AP of small, medium and large objects
    "voc07_map",
    "voc_map",
    "coco_ap",
    "ap50",
    "ap75",
    "ap_s",
    "ap_m",
    "ap_l",
    "compression_ratio",
    "speedup",
    "top1_error_change",
    "top5_error_change",
    # what compression papers report besides the ratio and the speed-up
    "sparsity",
    "nonzero_params",
    "bits_per_weight",
    "model_size",
    "latency",
    "fps",
    "energy",
    # an energy estimate's reduction, dense over pruned (Yang et al. 2017's energy model)
    "energy_reduction",
    "top1_accuracy_change",
    "top5_accuracy_change",
    "map_change",
    "miou_change",
    # a structured pruning's removal, in percent: of the multiply-adds, of the weighted layers' parameters
    "flops_reduction",
    "params_reduction",
]
METRIC_DIRECTION: dict[str, str] = {
    "params": "lower",
    "macs": "lower",
    "flops": "lower",
    "output_shape": "exact",
    "receptive_field": "exact",
    "top1_error": "lower",
    "top5_error": "lower",
    "top1_accuracy": "higher",
    "top5_accuracy": "higher",
    "error": "lower",
    "accuracy": "higher",
    "map": "higher",
    "map50": "higher",
    **dict.fromkeys(("miou", "pixel_acc", "mean_acc", "fwiou"), "higher"),
    **dict.fromkeys(("voc07_map", "voc_map", "coco_ap", "ap50", "ap75", "ap_s", "ap_m", "ap_l"), "higher"),
    "compression_ratio": "higher",
    "speedup": "higher",
    "top1_error_change": "lower",
    "top5_error_change": "lower",
    "sparsity": "higher",
    "nonzero_params": "lower",
    "bits_per_weight": "lower",
    "model_size": "lower",
    "latency": "lower",
    "fps": "higher",
    "energy": "lower",
    "energy_reduction": "higher",
    "top1_accuracy_change": "higher",
    "top5_accuracy_change": "higher",
    "map_change": "higher",
    "miou_change": "higher",
    "flops_reduction": "higher",
    "params_reduction": "higher",
}
STATIC_METRICS = frozenset({"params", "macs", "flops", "output_shape", "receptive_field"})
Unit = Literal[
    "count",
    "thousand",
    "million",
    "billion",
    "percent",
    "ratio",
    "shape",
    "bits",
    "bytes",
    "kilobytes",
    "megabytes",
    "milliseconds",
    "seconds",
    "per_second",
    "millijoules",
    "joules",
]
# Each unit's size in its base (a count, a bit, a byte, a second, a joule). Kilo- and megabytes are
# decimal, as compression papers mostly mean them (AlexNet's 61 M float weights are "240 MB").
UNIT_SCALE = {
    "count": 1,
    "thousand": 1e3,
    "million": 1e6,
    "billion": 1e9,
    "percent": 1,
    "ratio": 1,
    "bits": 1,
    "bytes": 1,
    "kilobytes": 1e3,
    "megabytes": 1e6,
    "milliseconds": 1e-3,
    "seconds": 1,
    "per_second": 1,
    "millijoules": 1e-3,
    "joules": 1,
}
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
    inconsistent: str | None = Field(
        None,
        min_length=1,
        description="Why the paper's own numbers contradict this one (another table, its own filter "
        "counts); checked and shown as 'paper inconsistent', never as a failure.",
    )

    @model_validator(mode="after")
    def _shape_or_number(self) -> Result:
        is_shape = self.metric == "output_shape"
        if is_shape != (self.unit == "shape") or is_shape != isinstance(self.value, list):
            raise ValueError("output_shape results take a list value and unit 'shape'; others a number")
        if (self.scope == "node") != (self.node is not None):
            raise ValueError("scope 'node' needs `node`, and `node` needs scope 'node'")
        if self.metric == "receptive_field" and self.scope != "node":
            raise ValueError("a receptive_field result is a node's: it needs scope 'node' and `node`")
        return self


# --- variants, methods and the spec ----------------------------------------------------------


class MethodStep(_Model):
    """One method of a method variant, with its settings (typed by the method: see ``papers.methods``)."""

    name: str = Field(
        pattern=r"^[a-z][a-z0-9_]*$", max_length=60, description="A method a plugin contributes."
    )
    settings: dict[str, Value | dict[str, Value]] = Field(
        {}, description="The method's settings; a mapping gives one value per layer (`kept: {fc1: 0.08}`)."
    )


class Equivalence(_Model):
    """One comparison of a variant with its `reference`: the library's model built with `kwargs`, ours
    with `options`, the library's state_dict loaded into ours, the same outputs on a random input."""

    kwargs: dict[str, Value] = Field(
        {}, description="The library constructor's keyword arguments: {aux_logits: true}."
    )
    options: dict[str, Value] = Field(
        {},
        description="Our build options; the input has the graph's input shape under them, so "
        "{image_size: 32} compares at 32×32.",
    )
    outputs: dict[str, str] | None = Field(
        None,
        description="Our outputs' names to the library's (its named tuple's fields), where both return "
        "several; default: matched by position.",
    )
    training_flag: bool = Field(
        False,
        description="Set the library model's own `training` flag, every layer staying in eval mode: "
        "torchvision's GoogLeNet and Inception-v3 return their auxiliary heads only then.",
    )


class Variant(_Model):
    """A model: a graph with arguments, or (a method variant) a base variant and the methods applied to it."""

    id: str = Field(pattern=VARIANT_ID, max_length=80)
    name: str = Field(min_length=1, max_length=120, description="Display name: 'VGG-16 (D)'.")
    graph: str | None = Field(
        None, description="The graph this variant binds; a method variant has `base` instead."
    )
    args: dict[str, Value] = {}
    base: str | None = Field(
        None,
        pattern=VARIANT_ID,
        max_length=80,
        description="Method variants: the variant (of any paper) the methods are applied to.",
    )
    methods: list[MethodStep] = Field(
        [], max_length=32, description="Method variants: the methods applied to `base`, in order."
    )
    origin: Literal["paper", "torchvision", "timm", "derived"] = Field(
        "paper", description="Whose model this is; only 'paper' variants are the paper's own."
    )
    origin_note: str | None = Field(None, description="How it differs from the paper, where it does.")
    reference: str | None = Field(
        None,
        pattern=r"^(torchvision|timm):[a-z0-9_.]+$",
        description="A library model with the same graph and state_dict names: 'torchvision:vgg16'.",
    )
    equivalence: list[Equivalence] = Field(
        [],
        max_length=8,
        description="How the equivalence test compares this variant with `reference`, one comparison an "
        "entry; default: one, with the library's defaults and ours (at the graph's input size).",
    )

    @model_validator(mode="after")
    def _origin_explained(self) -> Variant:
        if self.origin != "paper" and not self.origin_note:
            raise ValueError("a variant that is not the paper's own needs an origin_note")
        if self.equivalence and self.reference is None:
            raise _at("equivalence", "`equivalence` compares with `reference`, which this variant lacks")
        return self

    @model_validator(mode="after")
    def _graph_or_base(self) -> Variant:
        if (self.graph is None) == (self.base is None):
            raise ValueError("a variant has either `graph` or (a method variant) `base`, not both or neither")
        if self.base is None and self.methods:
            raise _at("methods", "`methods` needs `base`: the variant the methods are applied to")
        if self.base is not None:
            if not self.methods:
                raise _at("methods", "a method variant lists at least one method")
            if self.args:
                raise _at("args", "a method variant takes its base's arguments; it has no `args`")
            if self.reference is not None:
                raise _at("reference", "a method variant is no library's model")
            if self.base == self.id:
                raise _at("base", "a method variant cannot be its own base")
        return self


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
    recipes: list[Recipe] = Field(
        [],
        description="Recipes of variant groups the paper trains otherwise (CIFAR and ImageNet): each "
        "replaces `hyperparameters` for the variants it names.",
    )
    uses: list[str] = Field(
        [],
        description="Papers this spec builds on: their blocks and graphs are reused as `paper.block` "
        "and `paper.graph`, and the site's lineage page draws an edge from each.",
    )
    blocks: dict[str, Block] = {}
    graphs: dict[str, Graph] = {}
    variants: list[Variant] = []
    results: list[Result] = []

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
            if variant.base is not None:
                _method_variant_id(self.id, variant, f"variants[{index}].id")
            elif variant.graph not in self.graphs:
                raise _at(f"variants[{index}].graph", f"no graph {variant.graph!r} in `graphs`")
        for name, graph in self.graphs.items():
            head = getattr(graph.detection, "box_head", None)
            if head is not None and head.graph not in self.graphs:
                raise _at(f"graphs.{name}.detection.box_head.graph", f"no graph {head.graph!r} in `graphs`")
        for index, result in enumerate(self.results):
            if result.variant not in seen:
                raise _at(f"results[{index}].variant", f"no variant {result.variant!r} in this spec")
        with_recipe: set[str] = set()
        for index, recipe in enumerate(self.recipes):
            for position, name in enumerate(recipe.variants):
                where = f"recipes[{index}].variants[{position}]"
                if name not in seen:
                    raise _at(where, f"no variant {name!r} in this spec")
                if name in with_recipe:
                    raise _at(where, f"variant {name!r} is named by two recipes")
                with_recipe.add(name)
        return self

    def hyperparameters_of(self, variant_id: str) -> Hyperparameters | None:
        """The recipe ``variant_id`` trains with: its group's in ``recipes``, else ``hyperparameters``."""
        for recipe in self.recipes:
            if variant_id in recipe.variants:
                return recipe.hyperparameters
        return self.hyperparameters

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


_LIBRARY_SUFFIX = re.compile(r"\.(torchvision|timm)$")


def _method_variant_id(paper: str, variant: Variant, field: str) -> None:
    """A method variant is ``<paper-id>-<base>[-setting]`` (a library suffix of the base stays last:
    ``<paper-id>-resnet50-90.torchvision``)."""
    assert variant.base is not None
    base_stem, suffix = _LIBRARY_SUFFIX.sub("", variant.base), _LIBRARY_SUFFIX.search(variant.base)
    own_suffix = _LIBRARY_SUFFIX.search(variant.id)
    stem = _LIBRARY_SUFFIX.sub("", variant.id)
    prefix = f"{paper}-{base_stem}"
    same_library = (suffix and suffix.group()) == (own_suffix and own_suffix.group())
    if not same_library or not (stem == prefix or stem.startswith(prefix + "-")):
        example = f"{prefix}{suffix.group() if suffix else ''}"
        raise _at(field, f"a method variant's id is <paper-id>-<base>[-setting]: {example!r} or {prefix}-...")


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
