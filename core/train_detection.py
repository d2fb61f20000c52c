"""``papers train`` for detectors (variants whose graph has a ``detection`` section): the model's own
losses (``model(images, targets)`` in train mode, torchvision's contract), summed.

The data are :mod:`papers.detection_data`'s (a PASCAL VOC folder, a COCO folder or ``builtin:shapes``):
the ``train`` split trains, the ``val`` split is scored after each epoch (or every ``-r val_interval=``
epochs and after the last) with VOC 2007's 11-point mAP (``voc07_map``, percent). Batches are lists of
images of different sizes; the detector's transform resizes them (its ``min_size`` / ``max_size`` build
options). Random horizontal flips move the boxes with the image.

The recipe is the paper's where its spec gives one (``hyperparameters``: optimizer, rate and
momentum, weight decay, batch, schedule, and length in epochs or iterations), resolved as a
classification recipe is (:func:`papers.recipe.resolve`: ``-r optimizer.lr=``, ``-r lr=`` for short,
``--epochs`` in place of the paper's iterations), what the loop does not run (the paper's other
augmentations, its input sizes) listed under ``deviations`` in ``recipe.json``. A detector whose spec
gives none (or a proxy check asking for it) trains with the registry's: SGD with momentum 0.9 and
weight decay 5e-4 (Faster R-CNN's, Section 3.3 of its paper), lr 0.01 with a linear warm-up over the
first 100 steps and DeepLab's "poly" decay after, batch 2 (Fast R-CNN's two images per mini-batch),
overridable with ``--epochs``, ``--batch-size`` and ``-r lr=``, ``-r weight_decay=``,
``-r grad_clip=`` (the gradients' global norm; none by default) and ``-r seed=``.
A run folder (:mod:`papers.task_runs`) holds ``model.safetensors``, ``recipe.json``, ``metrics.json``
and an epoch checkpoint that ``--resume`` continues; ``papers eval`` scores the weights with every VOC
and COCO metric. Runs train on the first CUDA GPU when there is one (:func:`papers.task_runs.device`).

A plugin's own detector (YOLO, MultiBox: :func:`papers.detect.class_detector`) trains the same way
with its plugin's loss; YOLO counts its classes without the background, and a class-agnostic one
(MultiBox) takes every object as the one class "object", scored by that class's VOC07 AP (said under
``evaluation`` in ``recipe.json``), its build options completed from the train split by the plugin's
``training_options`` (MultiBox's k-means priors).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from papers.errors import PapersError
from papers.train_segmentation import SegmentationRun as DetectionRun
from papers.train_segmentation import scores_after, task_recipe

DEFAULTS = {
    "epochs": 10,
    "batch_size": 2,
    "lr": 0.01,
    "weight_decay": 5e-4,
    "grad_clip": 0.0,
    "seed": 0,
    "augment": "flip",
    "channels_last": False,
    "val_interval": 1,
}
"""The registry's recipe for detectors whose spec gives none (``grad_clip``: the gradients' global norm
is clipped at it; 0, none; ``augment``: :data:`AUGMENTS`; ``channels_last``:
:func:`papers.task_runs.place`; ``val_interval``: :func:`papers.train_segmentation.scores_after`).
``augment`` and ``val_interval`` apply to a paper's recipe too."""
AUGMENTS = ("flip", "ssd")
"""``-r augment=``: ``flip``, random horizontal flips only; ``ssd``, SSD's sampling before the flip
(Liu et al. 2016: photometric distortions and patches sampled by their IoU with the objects, Section
2.2; the "zoom out" expansion onto a canvas up to 16 times the area, Section 3.6), by torchvision's
``transforms.v2`` (RandomPhotometricDistort, RandomZoomOut, RandomIoUCrop, SanitizeBoundingBoxes)."""
WARMUP_STEPS = 100
POLY_POWER = 0.9
_SHORT = {"lr": "optimizer.lr", "momentum": "optimizer.momentum"}
"""``-r`` names that stand for a paper recipe's dotted fields."""


def recipe(
    overrides: Mapping[str, Any] | None, variant: str | None = None, *, paper: bool = True
) -> dict[str, Any]:
    """The recipe a detector trains with, JSON-ready: ``variant``'s paper's (``paper``; its spec's
    ``hyperparameters``, ``recipe: paper``) or the registry's (``recipe: registry``), ``overrides``
    applied."""
    hyperparameters = None
    if variant is not None and paper:
        from papers.api import get_spec

        hyperparameters = get_spec(variant).hyperparameters_of(variant)
    choices = {"augment": AUGMENTS}
    if hyperparameters is None:
        return {"recipe": "registry", **task_recipe(overrides, DEFAULTS, "a detector", choices)}
    from papers.recipe import RecipeError, check_length, resolve

    overrides = dict(overrides or {})
    loop = {key: overrides.pop(key) for key in ("augment", "val_interval") if key in overrides}
    augment = task_recipe(loop, DEFAULTS, "a detector", choices)
    dotted = {_SHORT.get(key, key): value for key, value in overrides.items()}
    if "epochs" in dotted and "iterations" not in dotted:
        dotted["iterations"] = None  # the epochs asked replace the paper's length in steps
    config = resolve(get_spec(variant), dotted, variant=variant)  # type: ignore[arg-type]
    check_length(config)
    if config.schedule.name == "plateau":
        raise RecipeError("a detector's loop runs no plateau schedule", field="schedule")
    made = config.model_dump(mode="json", exclude_defaults=True, exclude={"deviations"})
    deviations = list(config.deviations)
    for a in config.augmentation:
        if a.name != "horizontal_flip":
            deviations.append(f"augmentation {a.name}: not run (the detection loop flips images only)")
    if augment["augment"] != "flip":
        deviations.append(
            f"augment {augment['augment']}: run beside the paper's augmentation list (-r augment=)"
        )
    if config.input_size is not None:
        deviations.append("input_size: the detector's transform sizes images (its min_size / max_size)")
    for name in ("warmup", "ema_decay", "dropout"):
        if getattr(config, name) is not None:
            deviations.append(f"{name}: not run by the detection loop")
    return {
        "recipe": "paper",
        "source": hyperparameters.source,
        **made,
        "augment": augment["augment"],
        "val_interval": augment["val_interval"],
        "deviations": deviations,
    }


def _ssd_sampling() -> Any:
    """SSD's augmentation before the flip (:data:`AUGMENTS`), on an image in [0, 1] and its boxes."""
    from torchvision import tv_tensors
    from torchvision.transforms import v2

    return v2.Compose(
        [
            v2.RandomPhotometricDistort(p=0.5),
            v2.RandomZoomOut(fill={tv_tensors.Image: 0.5, "others": 0.0}, side_range=(1.0, 4.0), p=0.5),
            v2.RandomIoUCrop(),
            v2.SanitizeBoundingBoxes(),
        ]
    )


def _sampled(sampling: Any, image: Any, target: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    import torch
    from torchvision import tv_tensors

    boxes = tv_tensors.BoundingBoxes(target["boxes"], format="XYXY", canvas_size=tuple(image.shape[-2:]))
    image, made = sampling(tv_tensors.Image(image), {"boxes": boxes, "labels": target["labels"]})
    return image.as_subclass(torch.Tensor), {
        "boxes": made["boxes"].as_subclass(torch.Tensor),
        "labels": made["labels"],
    }


def _flipped(image: Any, target: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    width = image.shape[-1]
    boxes = target["boxes"].clone()
    boxes[:, [0, 2]] = width - target["boxes"][:, [2, 0]]
    return image.flip(-1), {**target, "boxes": boxes}


def _optimization(config: Mapping[str, Any], model: Any, steps_per_epoch: int) -> tuple[Any, Any, bool]:
    """The optimizer and schedule of a recipe, and whether the schedule steps every iteration."""
    import torch

    parameters = [p for p in model.parameters() if p.requires_grad]
    if config["recipe"] == "registry":
        optimizer = torch.optim.SGD(
            parameters, lr=config["lr"], momentum=0.9, weight_decay=config["weight_decay"]
        )
        steps = config["epochs"] * steps_per_epoch

        def factor(step: int) -> float:
            warm = min(1.0, (step + 1) / WARMUP_STEPS)
            return warm * max(0.0, 1 - step / steps) ** POLY_POWER

        return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor), True
    from papers.recipe import TrainConfig, make_optimizer, make_scheduler

    train_config = TrainConfig.model_validate(
        {k: v for k, v in config.items() if k in TrainConfig.model_fields}
    )
    optimizer = make_optimizer(train_config, parameters)
    schedule = make_scheduler(
        train_config, optimizer, epochs=config["epochs"], steps_per_epoch=steps_per_epoch
    )
    return optimizer, schedule, train_config.schedule.unit == "iteration"


def train_detector(
    variant: str,
    data: str | None,
    *,
    overrides: Mapping[str, Any] | None = None,
    out: str | Path | None = None,
    options: Mapping[str, Any] | None = None,
    log: Callable[[str], None] | None = None,
    resume: str | Path | None = None,
    weights: str | Path | None = None,
    stop_after: int | None = None,
    paper_recipe: bool = True,
    processes: Any = None,
) -> DetectionRun:
    """Train ``variant`` on ``data``'s train split; score VOC07 mAP on its val split after each epoch
    (or each ``val_interval``-th and the last).

    ``paper_recipe=False`` trains with the registry's recipe even where the spec gives the paper's
    (the proxy checks'); ``resume``, ``weights``, ``stop_after`` and ``processes`` (data-parallel under
    torchrun; the val split's detections gathered from every process) as in
    :func:`papers.train_segmentation.train_segmenter`."""
    import torch

    import papers
    from papers import task_runs
    from papers.data import readable
    from papers.detect import (
        AGNOSTIC_EVALUATION,
        as_objects,
        class_agnostic,
        class_detector,
        is_detector,
        training_options,
    )
    from papers.detection_data import detection_split, is_detection_source
    from papers.detection_metrics import voc_map

    processes = processes or task_runs.OneProcess()
    resumed = None
    if resume is not None:
        resumed = task_runs.resume(resume, variant, data, overrides)
        folder: Path | None = resumed.folder
        config, data, build = resumed.recipe, resumed.recipe["data"], dict(resumed.recipe["options"])
    else:
        config = recipe(overrides, variant, paper=paper_recipe)
        build = dict(options or {})
    assert data is not None
    if not is_detection_source(data):
        raise PapersError(
            "a detector trains on builtin:shapes, a PASCAL VOC folder or a COCO folder", file=data
        )
    if resumed is None:
        folder = task_runs.new_folder(out) if processes.main else None  # only rank 0 asks and writes
    with readable(data):
        train_set, val_set = detection_split(data, "train"), detection_split(data, "val")
    own = None if is_detector(variant) else class_detector(variant)
    agnostic = own is not None and class_agnostic(variant)  # MultiBox: every object is "object"
    # a plugin's own detector (YOLO) counts its object classes only; a task layer's, the background too
    classes = train_set.num_classes - (0 if own is None else 1)
    wanted = classes if agnostic else build.setdefault("num_classes", classes)
    if wanted != classes:
        raise PapersError(
            f"the data has {train_set.num_classes} classes with the background; "
            f"the model is built for {wanted}" + ("" if own is None else " without it"),
            file=data,
            field="num_classes",
        )
    torch.manual_seed(config.get("seed", 0))
    if own is None:
        model = network = papers.build_model(variant, **build)
    else:
        prepare = training_options(variant) if resumed is None else None
        if prepare is not None:
            with readable(data):
                build.update(prepare(variant, data=data, options=build))
        model = own(variant, weights=None, options=build)
        if not agnostic and getattr(model, "loss", None) is None:
            raise PapersError(f"{variant} has no training loss in the registry (papers detect and eval only)")
        network = model.network  # the run's weights are the network's, as papers detect loads them
    if weights is not None:
        task_runs.start_weights(network, weights, variant)
    device = task_runs.place(model, bool(config.get("channels_last", False)), processes)
    batch = config["batch_size"]
    task_runs.share(batch, processes)
    per_epoch = -(-len(train_set.dataset) // batch)
    if resumed is None:
        if config.get("iterations") is not None:  # the paper's length in steps, as whole epochs
            config["epochs"] = -(-config["iterations"] // per_epoch)
        config = {"variant": variant, "data": data, "options": build, "classes": train_set.classes, **config}
        if agnostic:
            config["evaluation"] = AGNOSTIC_EVALUATION
    optimizer, schedule, per_step = _optimization(config, model, per_epoch)
    generator = torch.Generator().manual_seed(config.get("seed", 0))
    run = DetectionRun(folder if processes.main else None, config)
    first, step = 1, 0
    if resumed is not None:
        task_runs.restore(resumed, network, optimizer, schedule, generator)
        run.metrics, first = list(resumed.metrics), resumed.state["epoch"] + 1
        step = resumed.state.get("step", (first - 1) * per_epoch)
    say = (log if processes.main else None) or (lambda line: None)
    clip, last = config.get("grad_clip") or None, config.get("iterations")
    sampling = _ssd_sampling() if config.get("augment", "flip") == "ssd" else None
    trained = task_runs.parallel(model, processes)
    world, rank = processes.world, processes.rank
    for epoch in range(first, config["epochs"] + 1):
        task_runs.seed_epoch(config.get("seed", 0), epoch, processes)
        model.train()
        started, total, batches = time.perf_counter(), 0.0, 0
        order = torch.randperm(len(train_set.dataset), generator=generator).tolist()
        for begin in range(0, len(order), batch):
            if last is not None and step >= last:
                break
            if len(order[begin : begin + batch]) < world:  # too small to share: skipped by every process
                break
            images, targets = [], []
            with readable(data):
                for position, index in enumerate(order[begin : begin + batch]):
                    # every process draws every image's flip, so their generators stay in step,
                    # and loads every world-th image
                    flip = bool(torch.rand(1, generator=generator) < 0.5)
                    if position % world != rank:
                        continue
                    image, target = train_set.dataset[index]
                    target = {"boxes": target["boxes"], "labels": target["labels"]}
                    target = as_objects(target) if agnostic else target
                    if sampling is not None:
                        image, target = _sampled(sampling, image, target)
                    if flip:
                        image, target = _flipped(image, target)
                    images.append(image.to(device))
                    targets.append({k: v.to(device) for k, v in target.items()})
            losses = trained(images, targets)
            loss = sum(losses.values())
            if not torch.isfinite(loss):
                raise PapersError(
                    f"the loss is {loss.item()} at epoch {epoch}; lower the learning rate", field="-r lr"
                )
            optimizer.zero_grad()
            loss.backward()
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            optimizer.step()
            if per_step and schedule is not None:
                schedule.step()
            step, total, batches = step + 1, total + loss.item(), batches + 1
        if not per_step and schedule is not None:
            schedule.step()
        total, batches = processes.total([total, batches])
        row = {"epoch": epoch, "train_loss": total / max(batches, 1)}
        processes.same_as_main(model)  # the running statistics rank 0 saves
        if scores_after(epoch, config):
            model.eval()
            detections, truths = [], []
            with torch.inference_mode(), readable(data):
                for index in range(rank, len(val_set.dataset), world):
                    image, target = val_set.dataset[index]
                    detections.append({k: v.cpu() for k, v in model([image.to(device)])[0].items()})
                    truths.append(as_objects(target) if agnostic else target)
            shares = processes.gather((detections, truths))
            detections = [one for share in shares for one in share[0]]
            truths = [one for share in shares for one in share[1]]
            row["val_voc07_map"] = 100.0 * voc_map(detections, truths, use_07_metric=True)[0]
        row["seconds"] = time.perf_counter() - started
        run.metrics.append(row)
        run.save(network, epoch, {**task_runs.state_of(optimizer, schedule, generator), "step": step})
        say(
            f"epoch {epoch}/{config['epochs']}: loss {row['train_loss']:.4f}"
            + (f"  VOC07 mAP {row['val_voc07_map']:.2f}%" if "val_voc07_map" in row else "")
        )
        if stop_after is not None and epoch - first + 1 >= stop_after and epoch < config["epochs"]:
            run.finished = False
            break
    return run


def shapes_check(plugin: Any, proxy: str) -> Any:
    """A detection paper's proxy check on ``builtin:shapes``, as its plugin module declares it:
    ``PROXY_NAME``, ``PROXY_VARIANT`` built with ``PROXY_OPTIONS`` (a narrow network), trained on
    ``PROXY_DATA``'s train split with the registry's recipe changed by ``PROXY_RECIPE``; it passes when
    VOC07 mAP on the val split reaches ``MIN_MAP`` percent. The data and recipe are read from the
    module when the check runs. ``papers check PAPER --run`` runs it beside the paper's VOC07 figure."""
    from papers.checks import TrainingCheck

    def run(progress: bool) -> tuple[float, float]:
        name = plugin.PROXY_NAME
        trained = train_detector(
            plugin.PROXY_VARIANT,
            plugin.PROXY_DATA,
            overrides=plugin.PROXY_RECIPE,
            options=plugin.PROXY_OPTIONS,
            paper_recipe=False,
            log=(lambda line: print(f"{name}: {line}", flush=True)) if progress else None,
        )
        return trained.final["val_voc07_map"], plugin.MIN_MAP

    return TrainingCheck(
        name=plugin.PROXY_NAME,
        variant=plugin.PROXY_VARIANT,
        data=plugin.PROXY_DATA,
        min_accuracy=plugin.MIN_MAP,
        proxy=proxy,
        overrides=dict(plugin.PROXY_RECIPE),
        compares_with={"metric": "voc07_map"},
        max_seconds=300.0,
        metric="voc07_map",
        runner=run,
    )
