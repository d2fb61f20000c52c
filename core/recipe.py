"""A paper's recipe as a runnable training configuration, and the factories that make it run.

``resolve(spec)`` turns the spec's typed hyperparameters into a :class:`TrainConfig`: every field
the paper leaves out gets a documented default, every setting torch cannot follow is mapped to one
it can, and each such decision is written into ``deviations`` so a run says how it departs from the
paper. ``-r field=value`` overrides (``optimizer.lr=0.01``) are validated as strictly as a spec.
torch and torchvision are imported inside the factories only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from papers.errors import PapersError
from papers.spec import Augmentation, Hyperparameters, Spec, field_path

if TYPE_CHECKING:
    import torch


class RecipeError(PapersError):
    """A recipe that cannot be run, or an override that does not fit it."""


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class OptimizerConfig(_Config):
    name: Literal["sgd", "adam", "adamw", "rmsprop", "adagrad"]
    lr: float = Field(gt=0)
    momentum: float = Field(0.0, ge=0, lt=1)
    nesterov: bool = False
    betas: list[float] | None = Field(None, min_length=2, max_length=2)
    eps: float | None = Field(None, gt=0)
    alpha: float | None = Field(None, gt=0, description="RMSProp smoothing constant.")


Monitor = Literal["val_loss", "val_error", "val_accuracy", "train_loss", "train_accuracy"]


class ScheduleConfig(_Config):
    name: Literal["constant", "step", "multistep", "exponential", "cosine", "poly", "plateau"]
    factor: float | None = Field(None, gt=0)
    step_size: int | None = Field(None, gt=0)
    milestones: list[int] | None = None
    unit: Literal["epoch", "iteration"] = "epoch"
    times: int | None = Field(None, ge=0)
    monitor: Monitor | None = None
    patience: int | None = Field(None, ge=0)
    power: float | None = Field(None, gt=0)


class TrainConfig(_Config):
    """A resolved recipe: everything a training run needs, each field typed."""

    optimizer: OptimizerConfig
    schedule: ScheduleConfig = ScheduleConfig(name="constant")
    epochs: int | None = Field(None, gt=0)
    iterations: int | None = Field(None, gt=0, description="Stop after this many optimisation steps.")
    batch_size: int = Field(gt=0, description="The global batch, split evenly across processes.")
    weight_decay: float = Field(0.0, ge=0)
    dropout: float | None = Field(None, ge=0, lt=1, description="Sets the graph's `dropout` parameter.")
    input_size: list[int] | None = Field(None, min_length=2, max_length=2)
    augmentation: list[Augmentation] = []
    criterion: Literal["cross_entropy", "rbf_penalty"] = "cross_entropy"
    seed: int = Field(0, ge=0)
    deviations: list[str] = Field([], description="How this configuration departs from the paper's recipe.")


# PyTorch's own default learning rates, used where a paper does not print one.
_DEFAULT_LR = {"sgd": 1e-3, "adam": 1e-3, "adamw": 1e-3, "rmsprop": 1e-2, "adagrad": 1e-2}
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


def resolve(spec: Spec, overrides: Mapping[str, Any] | None = None) -> TrainConfig:
    """The spec's recipe as a :class:`TrainConfig`, with dotted-path ``overrides`` applied."""
    if spec.hyperparameters is None:
        raise RecipeError(f"paper {spec.id!r} gives no training recipe (no `hyperparameters`)")
    data = _from_hyperparameters(spec.hyperparameters)
    for path, value in (overrides or {}).items():
        _set(data, path, value)
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        raise _override_error(exc, overrides or {}) from None


def _from_hyperparameters(h: Hyperparameters) -> dict[str, Any]:
    deviations: list[str] = []
    optimizer = h.optimizer.model_dump(exclude_none=True)
    if optimizer["name"] == "sdlm":
        optimizer["name"] = "sgd"
        deviations.append(
            "optimizer: stochastic diagonal Levenberg-Marquardt is not implemented; plain SGD runs at the "
            "paper's global rate (no per-parameter η/(μ + h_kk) scaling)"
        )
    if "lr" not in optimizer:
        optimizer["lr"] = _DEFAULT_LR[optimizer["name"]]
        deviations.append(f"optimizer.lr: not given by the paper; PyTorch's default {optimizer['lr']}")
    schedule = _schedule(h, deviations)
    if h.batch_size is None:
        deviations.append("batch_size: not given by the paper; 32")
    data: dict[str, Any] = {
        "optimizer": optimizer,
        "schedule": schedule,
        "batch_size": h.batch_size or 32,
        "weight_decay": h.weight_decay or 0.0,
        "augmentation": [a.model_dump() for a in h.augmentation],
        "criterion": h.criterion or "cross_entropy",
        "deviations": deviations,
    }
    if h.epochs is not None:
        data["epochs"] = math.ceil(h.epochs)
        if data["epochs"] != h.epochs:
            deviations.append(f"epochs: {h.epochs} rounded up to whole epochs")
    if h.iterations is not None:
        data["iterations"] = h.iterations
    for name in ("dropout", "input_size"):
        if getattr(h, name) is not None:
            data[name] = getattr(h, name)
    for augmentation in h.augmentation:
        note = _AUGMENTATION_NOTES.get(augmentation.name)
        if note:
            deviations.append(f"augmentation {augmentation.name}: {note}")
    return data


_AUGMENTATION_NOTES = {
    "rgb_shift": "principal components of each image's own pixels, not of the whole training set",
    "color_jitter": "ColorJitter(0.4, 0.4, 0.4), a stand-in for the paper's photometric distortions",
    "normalize": "per-channel mean and standard deviation of the training images (no ZCA whitening)",
    "mean_subtraction": "per-channel mean of the training images",
    "scale_jitter": "shorter side drawn uniformly from [min, max] (torchvision RandomShortestSize)",
}


def _schedule(h: Hyperparameters, deviations: list[str]) -> dict[str, Any]:
    if h.schedule is None:
        return {"name": "constant"}
    s = h.schedule.model_dump(exclude_none=True)
    name = s["name"]
    if name in ("multistep", "step", "plateau") and "factor" not in s:
        s["factor"] = 0.1
        deviations.append("schedule.factor: not given by the paper; PyTorch's default 0.1")
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
            raise RecipeError(f"plateau schedule monitors {monitor!r}; known: {', '.join(_MONITORS)}")
        s["monitor"] = _MONITORS[monitor]
        if s.get("unit") == "iteration":
            deviations.append("schedule: the plateau is checked once per epoch, not per iteration")
            s["unit"] = "epoch"
        if "patience" not in s:
            s["patience"] = 10
            deviations.append("schedule.patience: not given by the paper; PyTorch's default 10")
    return s


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
    given = field in overrides or any(
        field.startswith(f"{k}.") or k.startswith(f"{field}.") for k in overrides
    )
    shown = repr(first.get("input"))[:60]
    where = f"-r {field}" if given else f"hyperparameters.{field}"
    return RecipeError(f"{first['msg']} (got {shown})", field=where)


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
    """The optimizer of the recipe over ``parameters`` (weight decay on every parameter, as the papers)."""
    import torch

    o, decay = config.optimizer, config.weight_decay
    if o.name == "sgd":
        return torch.optim.SGD(
            parameters, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov, weight_decay=decay
        )
    extra: dict[str, Any] = {}
    if o.eps is not None:
        extra["eps"] = o.eps
    if o.name in ("adam", "adamw"):
        if o.betas is not None:
            extra["betas"] = tuple(o.betas)
        cls = torch.optim.Adam if o.name == "adam" else torch.optim.AdamW
        return cls(parameters, lr=o.lr, weight_decay=decay, **extra)
    if o.name == "rmsprop":
        if o.alpha is not None:
            extra["alpha"] = o.alpha
        return torch.optim.RMSprop(parameters, lr=o.lr, momentum=o.momentum, weight_decay=decay, **extra)
    return torch.optim.Adagrad(parameters, lr=o.lr, weight_decay=decay, **extra)


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
