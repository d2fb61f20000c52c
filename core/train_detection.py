"""``papers train`` for detectors (variants whose graph has a ``detection`` section): the model's own
losses (``model(images, targets)`` in train mode, torchvision's contract), summed.

The data are :mod:`papers.detection_data`'s (a PASCAL VOC folder, a COCO folder or
``builtin:shapes``): the ``train`` split trains, the ``val`` split is scored after each epoch with
VOC 2007's 11-point mAP (``voc07_map``, percent). Batches are lists of images of different sizes;
the detector's transform resizes them (its ``min_size`` / ``max_size`` build options). Random
horizontal flips move the boxes with the image.

No detection spec carries a training recipe the loop reads yet, so the registry's stands in
(overridable with ``--epochs``, ``--batch-size`` and ``-r lr=``, ``-r weight_decay=``, ``-r seed=``):
SGD with momentum 0.9 and weight decay 5e-4 (Faster R-CNN's, Section 3.3 of its paper), lr 0.01 with
a linear warm-up over the first 100 steps and DeepLab's "poly" decay after, batch 2 (Fast R-CNN's two
images per mini-batch). A run folder holds ``model.safetensors``, ``recipe.json`` and
``metrics.json``; ``papers eval`` scores the weights with every VOC and COCO metric.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from papers.errors import PapersError
from papers.train_segmentation import SegmentationRun as DetectionRun
from papers.train_segmentation import task_recipe, write_run

DEFAULTS = {"epochs": 10, "batch_size": 2, "lr": 0.01, "weight_decay": 5e-4, "seed": 0}
"""The registry's recipe for detectors."""
WARMUP_STEPS = 100
POLY_POWER = 0.9


def recipe(overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    return task_recipe(overrides, DEFAULTS, "a detector")


def _flipped(image: Any, target: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    width = image.shape[-1]
    boxes = target["boxes"].clone()
    boxes[:, [0, 2]] = width - target["boxes"][:, [2, 0]]
    return image.flip(-1), {**target, "boxes": boxes}


def train_detector(
    variant: str,
    data: str,
    *,
    overrides: Mapping[str, Any] | None = None,
    out: str | Path | None = None,
    options: Mapping[str, Any] | None = None,
    log: Callable[[str], None] | None = None,
) -> DetectionRun:
    """Train ``variant`` on ``data``'s train split; score VOC07 mAP on its val split after each epoch."""
    import torch

    import papers
    from papers.data import readable
    from papers.detection_data import detection_split, is_detection_source
    from papers.detection_metrics import voc_map

    config = recipe(overrides)
    if not is_detection_source(data):
        raise PapersError(
            "a detector trains on builtin:shapes, a PASCAL VOC folder or a COCO folder", file=data
        )
    folder = Path(out) if out is not None else None
    if folder is not None and folder.exists() and any(folder.iterdir()):
        raise PapersError("run folder exists and is not empty", file=str(folder))
    with readable(data):
        train_set, val_set = detection_split(data, "train"), detection_split(data, "val")
    build = dict(options or {})
    wanted = build.setdefault("num_classes", train_set.num_classes)
    if wanted != train_set.num_classes:
        raise PapersError(
            f"the data has {train_set.num_classes} classes with the background; "
            f"the model is built for {wanted}",
            file=data,
            field="num_classes",
        )
    torch.manual_seed(config["seed"])
    model = papers.build_model(variant, **build)
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(
        parameters, lr=config["lr"], momentum=0.9, weight_decay=config["weight_decay"]
    )
    steps = config["epochs"] * -(-len(train_set.dataset) // config["batch_size"])

    def factor(step: int) -> float:
        warm = min(1.0, (step + 1) / WARMUP_STEPS)
        return warm * (1 - step / steps) ** POLY_POWER

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    generator = torch.Generator().manual_seed(config["seed"])
    run = DetectionRun(
        folder, {"variant": variant, "data": data, "options": build, "classes": train_set.classes, **config}
    )
    say = log or (lambda line: None)
    for epoch in range(1, config["epochs"] + 1):
        model.train()
        started, total, batches = time.perf_counter(), 0.0, 0
        order = torch.randperm(len(train_set.dataset), generator=generator).tolist()
        for first in range(0, len(order), config["batch_size"]):
            images, targets = [], []
            with readable(data):
                for index in order[first : first + config["batch_size"]]:
                    image, target = train_set.dataset[index]
                    target = {"boxes": target["boxes"], "labels": target["labels"]}
                    if bool(torch.rand(1, generator=generator) < 0.5):
                        image, target = _flipped(image, target)
                    images.append(image)
                    targets.append(target)
            losses = model(images, targets)
            loss = sum(losses.values())
            if not torch.isfinite(loss):
                raise PapersError(
                    f"the loss is {float(loss)} at epoch {epoch}; lower the learning rate", field="-r lr"
                )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total, batches = total + loss.item(), batches + 1
        model.eval()
        detections, truths = [], []
        with torch.inference_mode(), readable(data):
            for index in range(len(val_set.dataset)):
                image, target = val_set.dataset[index]
                detections.append({k: v.cpu() for k, v in model([image])[0].items()})
                truths.append(target)
        voc07, _ = voc_map(detections, truths, use_07_metric=True)
        row = {
            "epoch": epoch,
            "train_loss": total / batches,
            "val_voc07_map": 100.0 * voc07,
            "seconds": time.perf_counter() - started,
        }
        run.metrics.append(row)
        say(
            f"epoch {epoch}/{config['epochs']}: loss {row['train_loss']:.4f}  "
            f"VOC07 mAP {row['val_voc07_map']:.2f}%"
        )
    write_run(run, model)
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
