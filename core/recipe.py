"""A paper's recipe as a runnable training configuration, and the factories that make it run.

``resolve(spec)`` turns the spec's typed hyperparameters into a :class:`TrainConfig`: every field
the paper leaves out gets a documented default, every setting torch cannot follow is mapped to one
it can, and each such decision is written into ``deviations`` so a run says how it departs from the
paper. ``-r field=value`` overrides (``optimizer.lr=0.01``) are validated as strictly as a spec.

A recipe names its optimizer and its criterion (loss); the names stand for :class:`Optimizer` and
:class:`Criterion` objects in the registry: the core's common ones, and those plugins contribute
through ``papers_optimizers`` and ``papers_criteria`` (LeNet-5's ``sdlm`` and ``rbf_penalty``). A
name nobody contributes is refused when the recipe is resolved. torch and torchvision are imported
inside the factories only.
"""

from __future__ import annotations

import bisect
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from papers.errors import PapersError, PluginError
from papers.spec import Augmentation, Hyperparameters, Spec, field_path, piecewise_problem

if TYPE_CHECKING:
    import torch


class RecipeError(PapersError):
    """A recipe that cannot be run, or an override that does not fit it."""


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


# The names a recipe gives its optimizer and criterion, and a plugin its contributions.
TRAINING_NAME = r"^[a-z][a-z0-9_]*$"


class OptimizerConfig(_Config):
    name: str = Field(pattern=TRAINING_NAME, description="An optimizer of the registry.")
    lr: float = Field(gt=0)
    momentum: float = Field(0.0, ge=0, lt=1)
    nesterov: bool = False
    betas: list[float] | None = Field(None, min_length=2, max_length=2)
    eps: float | None = Field(None, gt=0)
    alpha: float | None = Field(None, gt=0, description="RMSProp smoothing constant.")


Monitor = Literal["val_loss", "val_error", "val_accuracy", "train_loss", "train_accuracy"]


class ScheduleConfig(_Config):
    name: Literal["constant", "step", "multistep", "piecewise", "exponential", "cosine", "poly", "plateau"]
    factor: float | None = Field(None, gt=0)
    step_size: int | None = Field(None, gt=0)
    milestones: list[int] | None = None
    values: list[float] | None = Field(
        None,
        min_length=1,
        description="A piecewise schedule's rates, one more than its milestones; each is applied as "
        "values[i] / values[0] times optimizer.lr, so the rates are the paper's at its own lr.",
    )
    unit: Literal["epoch", "iteration"] = "epoch"
    times: int | None = Field(None, ge=0)
    monitor: Monitor | None = None
    patience: int | None = Field(None, ge=0)
    power: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _piecewise(self) -> ScheduleConfig:
        if self.name == "piecewise":
            problem = piecewise_problem(self.milestones, self.values)
            if problem:
                raise ValueError(f"schedule: {problem}")
        return self


class WarmupConfig(_Config):
    """A lower rate at the start of training, ended by a length or by the training error (checked
    after every step on the epoch's running error)."""

    lr: float = Field(gt=0)
    epochs: int | None = Field(None, gt=0)
    iterations: int | None = Field(None, gt=0)
    until_train_error: float | None = Field(None, gt=0, le=100)

    @model_validator(mode="after")
    def _one_end(self) -> WarmupConfig:
        if sum(v is not None for v in (self.epochs, self.iterations, self.until_train_error)) != 1:
            raise ValueError("warmup ends by exactly one of epochs, iterations and until_train_error")
        return self


class TrainConfig(_Config):
    """A resolved recipe: everything a training run needs, each field typed."""

    optimizer: OptimizerConfig
    warmup: WarmupConfig | None = None
    aux_weight: float | None = Field(
        None, ge=0, description="Train the auxiliary classifiers, each loss added with this weight."
    )
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    grad_clip: float | None = Field(None, gt=0, description="Clip the gradients' global norm at this.")
    ema_decay: float | None = Field(
        None, gt=0, lt=1, description="Evaluate and save an exponential moving average of the weights."
    )
    accumulation_steps: int = Field(
        1, ge=1, description="Each process's batch runs in this many equal parts, gradients summed."
    )
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32", description="Autocast of the forward pass: bf16 on CPU or GPU, fp16 on GPU only."
    )
    channels_last: bool = False
    mixup_alpha: float = Field(0.0, ge=0, description="MixUp on each batch (Beta(α, α)); 0: none.")
    cutmix_alpha: float = Field(0.0, ge=0, description="CutMix on each batch; with mixup, one of the two.")
    keep_last: int = Field(1, ge=1, description="How many epoch checkpoints are kept.")
    log_steps: int = Field(
        0, ge=0, description="Write every N-th step's loss and rate to steps.csv; 0: none."
    )
    sync_batchnorm: bool = Field(
        False, description="Under DDP on GPUs, batch-norm statistics over every process (SyncBatchNorm)."
    )
    schedule: ScheduleConfig = ScheduleConfig(name="constant")
    epochs: int | None = Field(None, gt=0)
    iterations: int | None = Field(None, gt=0, description="Stop after this many optimisation steps.")
    batch_size: int = Field(gt=0, description="The global batch, split evenly across processes.")
    weight_decay: float = Field(0.0, ge=0)
    dropout: float | None = Field(None, ge=0, lt=1, description="Sets the graph's `dropout` parameter.")
    input_size: list[int] | None = Field(None, min_length=2, max_length=2)
    augmentation: list[Augmentation] = []
    criterion: str = Field("cross_entropy", pattern=TRAINING_NAME, description="A criterion of the registry.")
    seed: int = Field(0, ge=0)
    deviations: list[str] = Field([], description="How this configuration departs from the paper's recipe.")

    @field_validator("augmentation")
    @classmethod
    def _augmentation_args(cls, augmentation: list[Augmentation]) -> list[Augmentation]:
        for index, a in enumerate(augmentation):
            problem = augmentation_problem(a)
            if problem:
                raise ValueError(f"augmentation[{index}] {a.name}: {problem}")
        return augmentation

    @field_validator("input_size")
    @classmethod
    def _positive_size(cls, size: list[int] | None) -> list[int] | None:
        if size is not None and any(side < 1 for side in size):
            raise ValueError(f"input_size must be positive, not {size}")
        return size


_PADDING_MODES = ("constant", "edge", "reflect", "symmetric")


def augmentation_problem(a: Augmentation) -> str | None:
    """What is wrong with the arguments the transforms read (sizes, probabilities, ranges), if anything.

    Other arguments (``method``, ``mode``) describe the paper's procedure in words and are kept."""
    args = a.args

    def number(value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

    def positive_int(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 1

    def pair(value: Any) -> bool:
        return isinstance(value, list) and len(value) == 2 and all(number(v) for v in value)

    if "size" in args and a.name in ("random_crop", "random_resized_crop", "resize", "center_crop"):
        size = args["size"]
        if not (
            positive_int(size) or (isinstance(size, list) and len(size) == 2 and all(map(positive_int, size)))
        ):
            return f"size must be a positive integer or [height, width] of positive integers, not {size!r}"
    if a.name == "random_crop":
        padding = args.get("padding", 0)
        if not (isinstance(padding, int) and not isinstance(padding, bool) and padding >= 0):
            return f"padding must be a whole number of pixels ≥ 0, not {padding!r}"
        if args.get("padding_mode", "constant") not in _PADDING_MODES:
            return f"padding_mode must be one of {', '.join(_PADDING_MODES)}, not {args['padding_mode']!r}"
    if a.name == "random_resized_crop":
        area, ratio = args.get("area", [0.08, 1.0]), args.get("aspect_ratio", [0.75, 4 / 3])
        if not (pair(area) and 0 < area[0] <= area[1] <= 1):
            return f"area must be [low, high] with 0 < low ≤ high ≤ 1, not {area!r}"
        if not (pair(ratio) and 0 < ratio[0] <= ratio[1]):
            return f"aspect_ratio must be [low, high] with 0 < low ≤ high, not {ratio!r}"
    if a.name == "horizontal_flip":
        p = args.get("p", 0.5)
        if not (number(p) and 0 <= p <= 1):
            return f"p is a probability in [0, 1], not {p!r}"
    if a.name == "rgb_shift":
        std = args.get("std", 0.1)
        if not (number(std) and std >= 0):
            return f"std must be a number ≥ 0, not {std!r}"
    if a.name == "scale_jitter":
        low, high = args.get("min", 256), args.get("max", 512)
        if not (positive_int(low) and positive_int(high) and low <= high):
            return f"min and max must be positive integers with min ≤ max, not {low!r} and {high!r}"
    if a.name == "rand_augment":
        ops, magnitude = args.get("num_ops", 2), args.get("magnitude", 9)
        if not (positive_int(ops) and isinstance(magnitude, int) and not isinstance(magnitude, bool)):
            return f"num_ops and magnitude are whole numbers (num_ops ≥ 1), not {ops!r} and {magnitude!r}"
        if not 0 <= magnitude < 31:
            return f"magnitude lies in [0, 30], not {magnitude}"
    if a.name == "normalize" and ("mean" in args or "std" in args):
        mean, std = args.get("mean"), args.get("std")
        if not (isinstance(mean, list) and isinstance(std, list) and mean and len(mean) == len(std)):
            return "mean and std are given together, as lists of one number per channel"
        if not all(number(m) for m in mean) or not all(number(s) and s > 0 for s in std):
            return f"mean must be numbers and std positive numbers, not {mean!r} and {std!r}"
    return None


# --- what a recipe's names stand for: criteria and optimizers --------------------------------


def logits(output: torch.Tensor) -> torch.Tensor:
    """A model's output read as it is: logits, the highest class wins."""
    return output


@dataclass(frozen=True)
class Criterion:
    """A loss a recipe names (``criterion: NAME``): the core's ``cross_entropy``, or one a plugin
    contributes through ``papers_criteria``. Nothing in it runs until a model trains or is evaluated,
    so a plugin module defines it without importing torch.

    The loss and the scores read the model's output: its first item where it gives a tuple (a model
    with auxiliary heads gives its logits first).
    """

    name: str
    doc: str = ""
    scores: Callable[[Any], Any] = logits
    """How predictions are read: the model's output as class scores, the highest wins. Accuracy in
    training and evaluation is read through it, and ten-crop evaluation averages its softmax."""
    build: Callable[[Any, TrainConfig], Callable[[Any, Any], Any]] | None = None
    """``build(model, config)`` gives the loss, called as ``loss(output, labels)`` and giving the
    batch's mean (an ``nn.Module`` is moved to the model's device). ``None``: cross-entropy on the
    scores."""


@dataclass(frozen=True)
class Optimizer:
    """An optimizer a recipe names (``optimizer: {name: NAME}``): the core's ``sgd``, ``adam``,
    ``adamw``, ``rmsprop`` and ``adagrad``, or one a plugin contributes through ``papers_optimizers``."""

    name: str
    build: Callable[[Iterable[Any], TrainConfig], Any]
    """``build(parameters, config)`` gives the torch optimizer over ``parameters``, from the recipe's
    ``optimizer`` settings (``lr``, ``momentum``, ...) and its ``weight_decay``."""
    doc: str = ""
    default_lr: float | None = None
    """The learning rate where the paper prints none (PyTorch's default); ``None``: a recipe must give one."""
    deviation: str | None = None
    """How what runs departs from the method the name stands for, written into the ``deviations`` of
    every recipe that uses it."""


def _torch_optimizer(class_name: str, *settings: str) -> Callable[[Iterable[Any], TrainConfig], Any]:
    """A factory of ``torch.optim.<class_name>`` with the recipe's rate and weight decay (on every
    parameter, as the papers) and those of ``settings`` the recipe gives."""

    def build(parameters: Iterable[Any], config: TrainConfig) -> Any:
        import torch

        o = config.optimizer
        given = {
            "momentum": o.momentum,
            "nesterov": o.nesterov,
            "betas": None if o.betas is None else tuple(o.betas),
            "eps": o.eps,
            "alpha": o.alpha,
        }
        extra = {name: given[name] for name in settings if given[name] is not None}
        return getattr(torch.optim, class_name)(
            parameters, lr=o.lr, weight_decay=config.weight_decay, **extra
        )

    return build


# The default rates are PyTorch's own, used where a paper does not print one.
BUILTIN_OPTIMIZERS = tuple(
    Optimizer(name, _torch_optimizer(torch_name, *settings), doc=f"torch.optim.{torch_name}", default_lr=lr)
    for name, torch_name, settings, lr in (
        ("sgd", "SGD", ("momentum", "nesterov"), 1e-3),
        ("adam", "Adam", ("betas", "eps"), 1e-3),
        ("adamw", "AdamW", ("betas", "eps"), 1e-3),
        ("rmsprop", "RMSprop", ("momentum", "alpha", "eps"), 1e-2),
        ("adagrad", "Adagrad", ("eps",), 1e-2),
    )
)
BUILTIN_CRITERIA = (Criterion("cross_entropy", "Cross-entropy on the model's logits (the default)."),)


def get_criterion(name: str) -> Criterion:
    """The registry's criterion ``name``; an unknown name is refused with the known ones."""
    from papers.registry import get_registry

    return _named("criterion", name, get_registry().criteria, "criterion")


def get_optimizer(name: str) -> Optimizer:
    """The registry's optimizer ``name``; an unknown name is refused with the known ones."""
    from papers.registry import get_registry

    return _named("optimizer", name, get_registry().optimizers, "optimizer.name")


def criterion_of(spec: Spec) -> Criterion:
    """The criterion a spec's recipe trains with (``cross_entropy`` where it names none): how its
    model's outputs are read."""
    h = spec.hyperparameters
    name = h.criterion if h is not None and h.criterion is not None else "cross_entropy"
    try:
        return get_criterion(name)
    except RecipeError as error:
        raise error.located(field="hyperparameters") from None


def _named(kind: str, name: str, known: Mapping[str, tuple[str, Any]], field: str) -> Any:
    if name not in known:
        raise RecipeError(f"unknown {kind} {name!r}; known: {', '.join(sorted(known))}", field=field)
    return known[name][1]


def check_criterion(item: Any) -> Criterion:
    """Refuse a contribution that is not a well-formed :class:`Criterion` (raises :class:`PluginError`)."""
    _check_named(item, Criterion, "papers_criteria", "criterion")
    if not callable(item.scores):
        raise PluginError(f"criterion {item.name!r}: scores is not callable")
    if item.build is not None and not callable(item.build):
        raise PluginError(f"criterion {item.name!r}: build is not callable")
    return item


def check_optimizer(item: Any) -> Optimizer:
    """Refuse a contribution that is not a well-formed :class:`Optimizer` (raises :class:`PluginError`)."""
    _check_named(item, Optimizer, "papers_optimizers", "optimizer")
    if not callable(item.build):
        raise PluginError(f"optimizer {item.name!r}: build is not callable")
    lr = item.default_lr
    if lr is not None and not (type(lr) in (int, float) and math.isfinite(lr) and lr > 0):
        raise PluginError(f"optimizer {item.name!r}: default_lr is {lr!r}, not a positive number")
    if item.deviation is not None and type(item.deviation) is not str:
        raise PluginError(f"optimizer {item.name!r}: deviation is {type(item.deviation).__name__}, not str")
    return item


def _check_named(item: Any, cls: type, hook: str, kind: str) -> None:
    if not isinstance(item, cls):
        raise PluginError(f"{hook}() returned {type(item).__name__}, not papers.recipe.{cls.__name__}")
    for name in ("name", "doc"):
        if type(getattr(item, name)) is not str:
            raise PluginError(f"{kind} {name} is {type(getattr(item, name)).__name__}, not str")
    if not re.fullmatch(TRAINING_NAME, item.name):
        raise PluginError(f"{kind} name {item.name[:60]!r} is not lower-case letters, digits and _")


_MONITORS: dict[str, Monitor] = {
    "error": "val_error",
    "val_error": "val_error",
    "val_accuracy": "val_accuracy",
    "accuracy": "val_accuracy",
    "train_accuracy": "train_accuracy",
    "loss": "val_loss",
    "val_loss": "val_loss",
    "train_loss": "train_loss",
}


def resolve(
    spec: Spec, overrides: Mapping[str, Any] | None = None, *, variant: str | None = None
) -> TrainConfig:
    """The recipe of ``variant`` (its group's in the spec's ``recipes``, else the paper's
    ``hyperparameters``; no variant: the paper's) as a :class:`TrainConfig`, with dotted-path
    ``overrides`` applied.

    A recipe that gives neither epochs nor iterations resolves (``check_length`` refuses it)."""
    hyperparameters = spec.hyperparameters if variant is None else spec.hyperparameters_of(variant)
    if hyperparameters is None:
        raise RecipeError(f"paper {spec.id!r} gives no training recipe (no `hyperparameters`)")
    overrides = overrides or {}
    data = _from_hyperparameters(hyperparameters)
    for path, value in overrides.items():
        _set(data, path, value)
    # what departs from the paper is decided on the recipe that runs, overrides applied
    _settle(data, overrides, hyperparameters)
    if (
        variant is not None
        and data.get("aux_weight") is None
        and "aux_logits" in _graph_params(spec, variant)
    ):
        data["deviations"].append(
            "aux_weight: not set; the auxiliary classifiers are left out of the model and not trained"
        )
    _look_up_names(data, overrides)
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        raise _override_error(exc, overrides) from None


def resolve_variant(variant: str, overrides: Mapping[str, Any] | None = None) -> TrainConfig:
    """The registry's variant's recipe, resolved with ``overrides`` and refused unless it says how long
    to train (what ``papers train VARIANT --dry-run`` prints)."""
    from papers.registry import get_registry

    registry = get_registry()
    registry.variant(variant)
    config = resolve(registry.paper(variant).spec, overrides, variant=variant)
    check_length(config)
    check_processes(config, int(os.environ.get("WORLD_SIZE", "1") or "1"))
    return config


def check_processes(config: TrainConfig, processes: int) -> None:
    """Refuse a global batch that does not split evenly over ``processes`` (torchrun's WORLD_SIZE), or
    whose share does not split into ``accumulation_steps`` equal parts."""
    field = "-r batch_size"
    if config.batch_size % processes:
        raise RecipeError(
            f"batch_size {config.batch_size} does not split evenly over {processes} processes", field=field
        )
    if (config.batch_size // processes) % config.accumulation_steps:
        raise RecipeError(
            f"each process's batch of {config.batch_size // processes} does not split into "
            f"{config.accumulation_steps} equal parts",
            field="-r accumulation_steps",
        )


def check_length(config: TrainConfig) -> None:
    """Refuse a recipe that gives neither epochs nor iterations, naming what is missing."""
    if config.epochs is None and config.iterations is None:
        raise RecipeError(
            "the recipe gives neither epochs nor iterations; give --epochs N or -r iterations=N",
            field="epochs",
        )


def _look_up_names(data: dict[str, Any], overrides: Mapping[str, Any]) -> None:
    """Find the recipe's criterion and optimizer in the registry (an unknown name is refused, naming
    the field and the known names), give the optimizer its default rate where the recipe has none,
    and write down how the optimizer departs from its name. Values of the wrong type are left to the
    validation that follows."""
    from papers.registry import get_registry

    registry = get_registry()
    criterion, optimizer = data.get("criterion"), data.get("optimizer")
    if isinstance(criterion, str):
        _named("criterion", criterion, registry.criteria, _where("criterion", overrides))
    if not (isinstance(optimizer, dict) and isinstance(optimizer.get("name"), str)):
        return
    found_criterion = registry.criteria.get(criterion, ("", None))[1] if isinstance(criterion, str) else None
    if found_criterion is not None and found_criterion.build is not None:
        for field in ("label_smoothing", "mixup_alpha", "cutmix_alpha"):
            if data.get(field):
                raise RecipeError(
                    f"{field} needs the cross_entropy criterion; {criterion} computes its own loss",
                    field=_where(field, overrides),
                )
    name = optimizer["name"]
    found: Optimizer = _named("optimizer", name, registry.optimizers, _where("optimizer.name", overrides))
    notes = []
    if found.deviation:
        notes.append(f"optimizer {name}: {found.deviation}")
    if "lr" not in optimizer:
        if found.default_lr is None:
            raise RecipeError(
                f"optimizer {name!r} has no default learning rate; give one",
                field=_where("optimizer.lr", overrides),
            )
        optimizer["lr"] = found.default_lr
        notes.append(f"optimizer.lr: not given by the paper; PyTorch's default {found.default_lr}")
    if isinstance(data.get("deviations"), list):
        data["deviations"][:0] = notes


def _where(field: str, overrides: Mapping[str, Any]) -> str:
    """Where a recipe field's value came from: an override (``-r field``) or the spec."""
    given = field in overrides or any(
        field.startswith(f"{k}.") or k.startswith(f"{field}.") for k in overrides
    )
    return f"-r {field}" if given else f"hyperparameters.{field}"


def _from_hyperparameters(h: Hyperparameters) -> dict[str, Any]:
    """The spec's recipe as TrainConfig's fields, before overrides and defaults."""
    data: dict[str, Any] = {
        "optimizer": h.optimizer.model_dump(exclude_none=True),
        "schedule": h.schedule.model_dump(exclude_none=True)
        if h.schedule is not None
        else {"name": "constant"},
        "weight_decay": h.weight_decay or 0.0,
        "augmentation": [a.model_dump() for a in h.augmentation],
        "criterion": h.criterion or "cross_entropy",
    }
    for name in (
        "batch_size",
        "epochs",
        "iterations",
        "dropout",
        "input_size",
        "aux_weight",
        "grad_clip",
        "ema_decay",
    ):
        if getattr(h, name) is not None:
            data[name] = getattr(h, name)
    if h.label_smoothing is not None:
        data["label_smoothing"] = h.label_smoothing
    if h.warmup is not None:
        data["warmup"] = h.warmup.model_dump(exclude_none=True)
    return data


def _settle(data: dict[str, Any], overrides: Mapping[str, Any], h: Hyperparameters) -> None:
    """Fill the defaults of what the recipe (spec and overrides) leaves out, and write ``deviations``
    from the recipe that runs. Values of the wrong type are left to the validation that follows."""
    deviations: list[str] = []
    schedule = data.get("schedule")
    if isinstance(schedule, dict) and isinstance(schedule.get("name"), str):
        data["schedule"] = _schedule(schedule, data, overrides, deviations)
    if "batch_size" not in data:
        data["batch_size"] = 32
        deviations.append("batch_size: not given by the paper; 32")
    epochs = data.get("epochs")
    if "epochs" not in overrides and isinstance(epochs, float) and math.isfinite(epochs):
        data["epochs"] = math.ceil(epochs)
        if data["epochs"] != epochs:
            deviations.append(f"epochs: {epochs} rounded up to whole epochs")
    augmentation = data.get("augmentation")
    for a in augmentation if isinstance(augmentation, list) else []:
        note = _AUGMENTATION_NOTES.get(a.get("name")) if isinstance(a, dict) else None
        if note:
            deviations.append(f"augmentation {a['name']}: {note}")
    if h.weight_averaging and data.get("ema_decay") is None:
        deviations.append(
            "ema_decay: the paper evaluates an average of the weights without giving its decay; "
            "none is kept (give -r ema_decay=D)"
        )
    deviations += [f"not followed: {text}" for text in h.not_followed]
    data["deviations"] = deviations


_AUGMENTATION_NOTES = {
    "rgb_shift": "principal components of each image's own pixels, not of the whole training set",
    "color_jitter": "ColorJitter(0.4, 0.4, 0.4), a stand-in for the paper's photometric distortions",
    "normalize": "per-channel mean and standard deviation of the training images (no ZCA whitening)",
    "mean_subtraction": "per-channel mean of the training images",
    "scale_jitter": "shorter side drawn uniformly from [min, max] (torchvision RandomShortestSize)",
}


def _schedule(
    s: dict[str, Any], data: dict[str, Any], overrides: Mapping[str, Any], deviations: list[str]
) -> dict[str, Any]:
    s = dict(s)
    name = s["name"]
    if name in ("multistep", "step", "plateau") and "factor" not in s:
        s["factor"] = 0.1
        deviations.append("schedule.factor: not given; PyTorch's default 0.1")
    if name == "piecewise":
        values, optimizer = s.get("values"), data.get("optimizer")
        if isinstance(values, list) and values and isinstance(optimizer, dict):
            lr = optimizer.setdefault("lr", values[0])
            from_spec = all(
                _where(f, overrides).startswith("hyper") for f in ("optimizer.lr", "schedule.values")
            )
            numbers = all(isinstance(v, (int, float)) for v in (lr, values[0]))
            if from_spec and numbers and not math.isclose(lr, values[0], rel_tol=1e-9):
                raise RecipeError(
                    f"schedule.values[0] ({values[0]}) is the initial rate; optimizer.lr is {lr}",
                    field=_where("schedule.values", overrides),
                )
        return s
    if name == "multistep" and not s.get("milestones"):
        deviations.append("schedule: multistep without milestones; the rate is kept constant")
        return {"name": "constant"}
    if name == "step" and "step_size" not in s and "times" not in s:
        deviations.append("schedule: step gives neither step_size nor times; the rate is kept constant")
        return {"name": "constant"}
    if name == "exponential" and "factor" not in s:
        deviations.append("schedule: exponential decay without a factor; the rate is kept constant")
        return {"name": "constant"}
    if name == "plateau":
        monitor = s.get("monitor", "val_error")
        if monitor not in _MONITORS:
            raise RecipeError(
                f"plateau schedule monitors {monitor!r}; known: {', '.join(_MONITORS)}",
                field=_where("schedule.monitor", overrides),
            )
        s["monitor"] = _MONITORS[monitor]
        if s.get("unit") == "iteration":
            deviations.append("schedule: the plateau is checked once per epoch, not per iteration")
            s["unit"] = "epoch"
        if "patience" not in s:
            s["patience"] = 10
            deviations.append("schedule.patience: not given; PyTorch's default 10")
    return s


def _graph_params(spec: Spec, variant: str) -> dict[str, Any]:
    """The graph parameters of ``variant`` (a method variant's base graph's); none where it has no graph."""
    chosen = next((v for v in spec.variants if v.id == variant), None)
    if chosen is None or chosen.graph is None or chosen.graph not in spec.graphs:
        return {}
    return dict(spec.graphs[chosen.graph].params)


def _set(data: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    target = data
    for index, part in enumerate(parts[:-1]):
        child = target.get(part)
        if child is None and part in ("optimizer", "schedule"):
            child = target[part] = {}
        if not isinstance(child, dict):
            known = "" if index else f" (fields: {', '.join(TrainConfig.model_fields)})"
            raise RecipeError(
                f"unknown recipe field {'.'.join(parts[: index + 1])!r}{known}", field=f"-r {path}"
            )
        target = child
    target[parts[-1]] = value


def _override_error(exc: ValidationError, overrides: Mapping[str, Any]) -> RecipeError:
    first = exc.errors(include_url=False)[0]
    field = field_path(first["loc"])
    if first["type"] == "extra_forbidden":
        return RecipeError(f"unknown recipe field {field!r}", field=f"-r {field}")
    shown = repr(first.get("input"))[:60]
    where = _where(field, overrides)
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "value_error":  # our own validators name the value already
        return RecipeError(message, field=where)
    return RecipeError(f"{message} (got {shown})", field=where)


def override_pairs(pairs: Sequence[str]) -> dict[str, Any]:
    """``-r key=value`` pairs, values read as YAML scalars (``0.01``, ``true``, ``[28, 28]``)."""
    from papers.errors import SpecError
    from papers.load import read_yaml

    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise RecipeError(f"override {pair!r} is not FIELD=VALUE", field="-r")
        try:
            overrides[key] = read_yaml(value)
        except SpecError as error:
            raise RecipeError(f"override {key}: {error.message}", field="-r") from None
    return overrides


# --- factories ------------------------------------------------------------------------------


def make_optimizer(config: TrainConfig, parameters: Any) -> torch.optim.Optimizer:
    """The optimizer of the recipe over ``parameters``."""
    return get_optimizer(config.optimizer.name).build(parameters, config)


def make_loss(config: TrainConfig, model: Any, device: Any = None) -> Callable[[Any, Any], Any]:
    """The recipe's criterion as a loss of (model output, labels), giving the batch's mean."""
    criterion = get_criterion(config.criterion)
    if criterion.build is None:
        return partial(_cross_entropy, criterion.scores, config.label_smoothing)
    import torch

    loss = criterion.build(model, config)
    return loss.to(device) if isinstance(loss, torch.nn.Module) and device is not None else loss


def _cross_entropy(scores: Callable[[Any], Any], smoothing: float, output: Any, labels: Any) -> Any:
    """Cross-entropy on the scores, against class indices or (mixed) class probabilities."""
    import torch.nn.functional as F

    return F.cross_entropy(scores(output), labels, label_smoothing=smoothing)


def make_scheduler(config: TrainConfig, optimizer: Any, *, epochs: int, steps_per_epoch: int) -> Any:
    """The learning-rate schedule, or ``None`` for a constant rate.

    Stepped once per optimisation step when ``schedule.unit`` is ``iteration``, else once per epoch
    (a plateau schedule always per epoch, with the monitored metric). ``times`` without a
    ``step_size`` spreads that many decreases evenly over the run.
    """
    from torch.optim import lr_scheduler

    s = config.schedule
    total = epochs * steps_per_epoch if s.unit == "iteration" else epochs
    if s.name == "constant":
        return None
    if s.name == "step":
        step_size = s.step_size or max(1, total // ((s.times or 0) + 1))
        return lr_scheduler.StepLR(optimizer, step_size=step_size, gamma=s.factor or 0.1)
    if s.name == "multistep":
        return lr_scheduler.MultiStepLR(optimizer, milestones=list(s.milestones or []), gamma=s.factor or 0.1)
    if s.name == "piecewise":
        rates = partial(_piecewise, list(s.milestones or []), list(s.values or []))
        return lr_scheduler.LambdaLR(optimizer, rates)
    if s.name == "exponential":
        if s.step_size:  # "× factor every step_size epochs", a staircase
            return lr_scheduler.StepLR(optimizer, step_size=s.step_size, gamma=s.factor or 1.0)
        return lr_scheduler.ExponentialLR(optimizer, gamma=s.factor or 1.0)
    if s.name == "cosine":
        return lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total))
    if s.name == "poly":
        return lr_scheduler.PolynomialLR(optimizer, total_iters=max(1, total), power=s.power or 1.0)
    mode = "max" if (s.monitor or "").endswith("accuracy") else "min"
    lowest = config.optimizer.lr * (s.factor or 0.1) ** s.times if s.times is not None else 0.0
    return lr_scheduler.ReduceLROnPlateau(
        optimizer,
        mode=mode,
        factor=s.factor or 0.1,
        patience=10 if s.patience is None else s.patience,
        min_lr=lowest * (1 - 1e-9),
    )


def _piecewise(milestones: list[int], values: list[float], step: int) -> float:
    """The piecewise schedule's multiplier of the initial rate at ``step`` (an epoch or iteration)."""
    return values[bisect.bisect_right(milestones, step)] / values[0]


class _PCALighting:
    """AlexNet's RGB shift: add multiples of the image's principal colour components, drawn N(0, std)."""

    def __init__(self, std: float = 0.1):
        self.std = float(std)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        import torch

        if image.shape[-3] != 3 or self.std == 0:
            return image
        pixels = image.reshape(3, -1).to(torch.float64)
        values, vectors = torch.linalg.eigh(torch.cov(pixels))
        alpha = torch.randn(3, dtype=torch.float64) * self.std
        shift = vectors @ (alpha * values.clamp(min=0))
        return image + shift.to(image.dtype).view(3, 1, 1)


def needs_statistics(config: TrainConfig) -> bool:
    """Whether the transforms need the training images' per-channel mean and standard deviation."""
    return any(
        a.name == "mean_subtraction" or (a.name == "normalize" and "mean" not in a.args)
        for a in config.augmentation
    )


def train_transform(
    config: TrainConfig,
    size: tuple[int, int],
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> Any:
    """The recipe's augmentation as torchvision transforms v2, on float image tensors in [0, 1].

    Random crops (else the last centre crop) give the model's input ``size``; the other sizes of the
    recipe (a resize, scale jitter, padding) scale with it, so a recipe written for 224×224 keeps its
    proportions at another size. Where the recipe has no crop, images are resized to ``size``.
    """
    from torchvision.transforms import v2

    crops = [a for a in config.augmentation if a.name in ("random_crop", "random_resized_crop")]
    crops = crops or [a for a in config.augmentation if a.name == "center_crop"]
    given = [_size(a.args["size"], size)[0] for a in crops if "size" in a.args]
    ratio = size[0] / given[-1] if given else 1.0

    def scaled(value: Any) -> int:
        return max(1, round(float(value) * ratio))

    steps: list[Any] = []
    sized = False
    for a in config.augmentation:
        args = dict(a.args)
        crop = list(size) if a in crops else [scaled(v) for v in _size(args.get("size"), size)]
        if a.name == "random_crop":
            padding = args.get("padding")
            steps.append(
                v2.RandomCrop(
                    crop,
                    padding=None if padding is None else scaled(padding),
                    pad_if_needed=True,
                    padding_mode=str(args.get("padding_mode", "constant")),
                )
            )
            sized = True
        elif a.name == "random_resized_crop":
            scale = tuple(args.get("area", (0.08, 1.0)))
            ratios = tuple(args.get("aspect_ratio", (3 / 4, 4 / 3)))
            steps.append(v2.RandomResizedCrop(crop, scale=scale, ratio=ratios, antialias=True))
            sized = True
        elif a.name == "resize":
            steps.append(
                v2.Resize(
                    crop if "size" not in args else scaled(_size(args["size"], size)[0]), antialias=True
                )
            )
        elif a.name == "center_crop":
            steps.append(v2.CenterCrop(crop))
            sized = sized or a in crops
        elif a.name == "horizontal_flip":
            steps.append(v2.RandomHorizontalFlip(float(args.get("p", 0.5))))
        elif a.name == "rand_augment":
            steps.append(
                v2.RandAugment(num_ops=int(args.get("num_ops", 2)), magnitude=int(args.get("magnitude", 9)))
            )
        elif a.name == "color_jitter":
            steps.append(v2.ColorJitter(0.4, 0.4, 0.4))
        elif a.name == "rgb_shift":
            steps.append(_PCALighting(float(args.get("std", 0.1))))
        elif a.name == "scale_jitter":
            low, high = scaled(args.get("min", 256)), scaled(args.get("max", 512))
            steps.append(v2.RandomShortestSize(list(range(low, high + 1)), antialias=True))
        elif a.name in ("mean_subtraction", "normalize"):
            chosen = normalization(config.model_copy(update={"augmentation": [a]}), mean, std)
            if chosen is not None:
                steps.append(v2.Normalize(chosen["mean"], chosen["std"]))
    if not sized:
        steps.append(v2.Resize(list(size), antialias=True))
    return v2.Compose(steps)


def normalization(
    config: TrainConfig, mean: Sequence[float] | None, std: Sequence[float] | None
) -> dict[str, list[float]] | None:
    """The per-channel mean and std the recipe normalises inputs with (std 1 for a mean subtraction)."""
    chosen = None
    for a in config.augmentation:
        given_mean, given_std = a.args.get("mean"), a.args.get("std")
        if a.name == "normalize" and isinstance(given_mean, list) and isinstance(given_std, list):
            chosen = {"mean": [float(m) for m in given_mean], "std": [float(s) for s in given_std]}
        elif a.name == "mean_subtraction" and mean is not None:
            chosen = {"mean": list(mean), "std": [1.0] * len(mean)}
        elif a.name == "normalize" and mean is not None and std is not None:
            chosen = {"mean": list(mean), "std": [max(s, 1e-6) for s in std]}
    return chosen


def eval_transform(
    config: TrainConfig,
    size: tuple[int, int],
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> Any:
    """No augmentation: only the recipe's normalisation, on images already at the model's size."""
    from torchvision.transforms import v2

    chosen = normalization(config, mean, std)
    return None if chosen is None else v2.Normalize(chosen["mean"], chosen["std"])


def _size(value: Any, default: tuple[int, int]) -> list[int]:
    if value is None:
        return list(default)
    if isinstance(value, int):
        return [value, value]
    return [int(v) for v in value]
