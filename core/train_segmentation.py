"""``papers train`` and ``papers eval`` for segmenters (variants whose graph has a ``segmentation``
section): pixel-wise cross-entropy with label 255 ignored, scored by one confusion matrix.

No segmentation spec carries a training recipe yet, so the registry's defaults stand in (overridable
with ``--epochs``, ``--batch-size`` and ``-r lr=``, ``-r crop=``, ``-r weight_decay=``, ``-r seed=``,
``-r scale_min=``, ``-r scale_max=``, ``-r channels_last=true``, :func:`papers.task_runs.place`,
``-r val_interval=``, :func:`scores_after`):
SGD with momentum 0.9 and weight decay 5e-4, the "poly" schedule (lr × (1 − step/steps)^0.9) of
DeepLab, each image scaled by a factor drawn uniformly from
[``scale_min``, ``scale_max``] (default 1, no scaling; DeepLabv3's Section 4.1 draws from 0.5 to 2.0,
as torchvision's segmentation references do; the mask by nearest neighbour), then random crops of
``crop`` pixels with random horizontal flips (masks padded with 255), and the auxiliary head's loss
weighted 0.5 as torchvision's references do. Evaluation runs each image whole, one at a time, the
network's scores argmax-ed at the input's resolution; the confusion matrix lives on the model's device.
A run folder holds ``model.safetensors``, ``recipe.json`` (what was trained, on what, with what) and
``metrics.json`` (per epoch: loss and the held-out metrics).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from papers.errors import PapersError
from papers.shapes import SOURCE
from papers.task_runs import TaskRun

DEFAULTS = {
    "epochs": 10,
    "batch_size": 8,
    "lr": 0.01,
    "weight_decay": 5e-4,
    "crop": 128,
    "seed": 0,
    "scale_min": 1.0,
    "scale_max": 1.0,
    "channels_last": False,
    "val_interval": 1,
}
"""The registry's recipe for segmenters (no segmentation paper's recipe is in a spec yet)."""
AUX_WEIGHT = 0.5
POLY_POWER = 0.9
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def is_segmenter(variant: str) -> bool:
    import papers
    from papers.spec import Segmentation

    return isinstance(papers.expand_variant(variant).task, Segmentation)


SegmentationRun = TaskRun
"""A segmenter's run: its folder, its per-epoch metrics, and the recipe it used."""


def recipe(overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    made = task_recipe(overrides, DEFAULTS, "a segmenter")
    if made["scale_min"] > made["scale_max"]:
        raise PapersError(
            f"scale_min {made['scale_min']:g} is above scale_max {made['scale_max']:g}", field="-r scale_min"
        )
    return made


def task_recipe(
    overrides: Mapping[str, Any] | None,
    defaults: Mapping[str, Any],
    who: str,
    choices: Mapping[str, tuple[str, ...]] | None = None,
) -> dict[str, Any]:
    """``defaults`` with the ``-r`` overrides of a task loop's recipe, each checked (``who``: "a
    segmenter", "a detector"; ``choices``: the values a field of words may take)."""
    made = dict(defaults)
    for key, value in (overrides or {}).items():
        name = "lr" if key == "optimizer.lr" else key
        if name not in defaults:
            raise PapersError(f"{who}'s recipe has {', '.join(defaults)}; not {key!r}", field=f"-r {key}")
        if choices and name in choices:
            if value not in choices[name]:
                allowed = " or ".join(choices[name])
                raise PapersError(f"{key} is {allowed}, not {value!r}", field=f"-r {key}")
            made[name] = value
            continue
        if isinstance(defaults[name], bool):
            if not isinstance(value, bool):
                raise PapersError(f"{key} is true or false, not {value!r}", field=f"-r {key}")
            made[name] = value
            continue
        kind = float if name in ("lr", "weight_decay", "grad_clip", "scale_min", "scale_max") else int
        try:
            made[name] = kind(value)
        except (TypeError, ValueError):
            raise PapersError(f"{key} must be a number, not {value!r}", field=f"-r {key}") from None
        if made[name] <= 0 and name not in ("weight_decay", "seed", "grad_clip"):
            raise PapersError(f"{key} must be positive, not {value!r}", field=f"-r {key}")
    return made


def _tensors(image: Any, mask: Any) -> tuple[Any, Any]:
    import numpy as np
    import torch

    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (pixels - mean) / std, torch.from_numpy(np.asarray(mask, dtype=np.int64))


def _crop(
    pixels: Any, labels: Any, size: int, generator: Any, scales: tuple[float, float] = (1.0, 1.0)
) -> tuple[Any, Any]:
    import torch
    import torch.nn.functional as F

    low, high = scales
    if (low, high) != (1.0, 1.0):
        factor = low + (high - low) * float(torch.rand(1, generator=generator))
        side = (max(1, round(labels.shape[0] * factor)), max(1, round(labels.shape[1] * factor)))
        pixels = F.interpolate(pixels[None], size=side, mode="bilinear", align_corners=False)[0]
        labels = F.interpolate(labels[None, None].float(), size=side, mode="nearest-exact")[0, 0].long()
    height, width = labels.shape
    pad_h, pad_w = max(0, size - height), max(0, size - width)
    if pad_h or pad_w:
        pixels = F.pad(pixels, (0, pad_w, 0, pad_h))
        labels = F.pad(labels, (0, pad_w, 0, pad_h), value=255)
    top = int(torch.randint(0, labels.shape[0] - size + 1, (1,), generator=generator))
    left = int(torch.randint(0, labels.shape[1] - size + 1, (1,), generator=generator))
    pixels, labels = (
        pixels[:, top : top + size, left : left + size],
        labels[top : top + size, left : left + size],
    )
    if bool(torch.rand(1, generator=generator) < 0.5):
        pixels, labels = pixels.flip(-1), labels.flip(-1)
    return pixels, labels


def _loaded(pairs: list[Any], classes: int) -> list[tuple[Any, Any]]:
    from papers.segmentation_data import read_pair

    return [_tensors(*read_pair(pair, classes)) for pair in pairs]


def train_segmenter(
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
    processes: Any = None,
) -> SegmentationRun:
    """Train ``variant`` on ``data``'s train split and score it on its val split after each epoch (or
    each ``val_interval``-th and the last, :func:`scores_after`).

    ``resume`` continues a run folder from its last epoch (:mod:`papers.task_runs`); ``weights`` are
    the starting weights of a new run; ``stop_after`` ends this call after that many epochs.
    ``processes`` (:class:`papers.train._Distributed`, under torchrun) trains data-parallel: every
    process draws the same batches and crops, takes every ``world``-th image of each, and their
    gradients are averaged (DistributedDataParallel; batch norm's statistics stay each process's
    own); the val split is scored in shares and their confusion matrices summed; only rank 0 writes."""
    import torch
    import torch.nn.functional as F

    import papers
    from papers import task_runs
    from papers.segmentation_data import segmentation_pairs

    processes = processes or task_runs.OneProcess()
    resumed = None
    if resume is not None:
        resumed = task_runs.resume(resume, variant, data, overrides)
        folder: Path | None = resumed.folder
        data, build = resumed.recipe["data"], dict(resumed.recipe["options"])
        config = {key: resumed.recipe.get(key, DEFAULTS[key]) for key in DEFAULTS}
    else:
        if data is None:
            raise PapersError("name the training data with --data", field="--data")
        config, build = recipe(overrides), dict(options or {})
        folder = task_runs.new_folder(out) if processes.main else None  # only rank 0 asks and writes
    task_runs.share(config["batch_size"], processes)
    train_pairs, names = segmentation_pairs(data, "train")
    val_pairs, _ = segmentation_pairs(data, "val")
    if names is not None:
        build.setdefault("num_classes", len(names))
    torch.manual_seed(config["seed"])
    model = papers.build_model(variant, **build)
    if weights is not None:
        task_runs.start_weights(model, weights, variant)
    device = task_runs.place(model, config["channels_last"], processes)
    classes = _classes(model, build)
    if names is not None and classes != len(names):
        raise PapersError(f"{variant} scores {classes} classes and {data} has {len(names)}", field="--data")
    train_set, val_set = _loaded(train_pairs, classes), _loaded(val_pairs, classes)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=config["lr"], momentum=0.9, weight_decay=config["weight_decay"]
    )
    steps = config["epochs"] * -(-len(train_set) // config["batch_size"])
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: max(0.0, 1 - step / steps) ** POLY_POWER
    )
    generator = torch.Generator().manual_seed(config["seed"])
    run = SegmentationRun(
        folder if processes.main else None, {"variant": variant, "data": data, "options": build, **config}
    )
    first = 1
    if resumed is not None:
        task_runs.restore(resumed, model, optimizer, schedule, generator)
        run.metrics, first = list(resumed.metrics), resumed.state["epoch"] + 1
    say = (log if processes.main else None) or (lambda line: None)
    network = task_runs.parallel(model, processes)
    world, rank = processes.world, processes.rank
    for epoch in range(first, config["epochs"] + 1):
        task_runs.seed_epoch(config["seed"], epoch, processes)
        model.train()
        started, total, seen = time.perf_counter(), 0.0, 0
        order = torch.randperm(len(train_set), generator=generator).tolist()
        for begin in range(0, len(order), config["batch_size"]):
            batch = order[begin : begin + config["batch_size"]]
            if len(batch) < world:  # a last batch too small to share: skipped by every process
                break
            crops = [  # every process crops the whole batch, so their generators stay in step
                _crop(*train_set[i], config["crop"], generator, (config["scale_min"], config["scale_max"]))
                for i in batch
            ][rank::world]
            pixels = torch.stack([c[0] for c in crops]).to(device)
            labels = torch.stack([c[1] for c in crops]).to(device)
            output = network(pixels)
            loss = F.cross_entropy(output["out"], labels, ignore_index=255)
            if "aux" in output:
                loss = loss + AUX_WEIGHT * F.cross_entropy(output["aux"], labels, ignore_index=255)
            if not torch.isfinite(loss):
                raise PapersError(
                    f"the loss is {loss.item()} at epoch {epoch}; lower the learning rate", field="-r lr"
                )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total, seen = total + loss.item() * len(crops), seen + len(crops)
        total, seen = processes.total([total, seen])
        processes.same_as_main(model)
        scored = score(model, val_set, classes, processes) if scores_after(epoch, config) else {}
        row = {"epoch": epoch, "train_loss": total / seen, "seconds": time.perf_counter() - started}
        row.update({f"val_{k}": v for k, v in scored.items()})
        run.metrics.append(row)
        run.save(model, epoch, task_runs.state_of(optimizer, schedule, generator))
        say(
            f"epoch {epoch}/{config['epochs']}: loss {row['train_loss']:.4f}"
            + (f"  mIoU {100 * scored['miou']:.2f}%" if scored else "")
        )
        if stop_after is not None and epoch - first + 1 >= stop_after and epoch < config["epochs"]:
            run.finished = False
            break
    return run


def scores_after(epoch: int, config: Mapping[str, Any]) -> bool:
    """Whether a task loop scores the val split after ``epoch``: after every ``val_interval``-th epoch
    (``-r val_interval=N``, OpenMMLab's ``train_cfg.val_interval``; default 1) and after the last. The
    epochs between keep their loss and time only. Scoring changes nothing the training draws or
    updates, so the last epoch's metrics are the same at any interval."""
    return epoch % config.get("val_interval", 1) == 0 or epoch == config["epochs"]


def _classes(model: Any, options: Mapping[str, Any]) -> int:
    import torch

    model.eval()
    with torch.no_grad():
        probe = model(torch.zeros(1, 3, 64, 64, device=next(model.parameters()).device))["out"]
    return int(probe.shape[1])


def score(model: Any, pairs: list[tuple[Any, Any]], classes: int, processes: Any = None) -> dict[str, Any]:
    """miou, pixel_acc, mean_acc, fwiou (fractions) and per-class IoU of ``model`` on whole images
    (``processes``: each scores every ``world``-th image, their confusion matrices summed)."""
    import torch

    from papers.segmentation_metrics import confusion_matrix, scores

    world, rank = (1, 0) if processes is None else (processes.world, processes.rank)
    device = next(model.parameters()).device
    model.eval()
    confusion = torch.zeros(classes, classes, dtype=torch.long, device=device)
    with torch.no_grad():
        for pixels, labels in pairs[rank::world]:
            predicted = model(pixels[None].to(device))["out"][0].argmax(0)
            confusion += confusion_matrix(predicted, labels.to(device), classes)
    if world > 1:
        summed = processes.total(confusion.flatten().tolist())
        confusion = torch.tensor(summed, dtype=torch.float64).round().long().view(classes, classes)
    return scores(confusion)


def evaluate_segmenter(
    variant: str, weights: str, data: str, *, split: str = "val", options: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """``papers eval`` of a segmenter: the four metrics in percent, per-class IoU, images and classes."""
    import papers
    from papers.evaluate import fit_weights, load_weights
    from papers.segmentation_data import segmentation_pairs

    pairs, names = segmentation_pairs(data, split)
    build = dict(options or {})
    if names is not None:
        build.setdefault("num_classes", len(names))
    model = papers.build_model(variant, **build)
    fit_weights(model, load_weights(weights), file=weights)
    classes = _classes(model, build)
    scored = score(model, _loaded(pairs, classes), classes)
    measured: dict[str, Any] = {k: 100 * scored[k] for k in ("miou", "pixel_acc", "mean_acc", "fwiou")}
    labels = names or [str(c) for c in range(classes)]
    measured["per_class_iou"] = {
        name: (None if value != value else round(100 * value, 4))
        for name, value in zip(labels, scored["per_class"], strict=True)
    }
    return measured | {"images": len(pairs), "classes": classes, "split": split, "protocol": "whole_image"}


def shapes_check(
    name: str,
    variant: str,
    *,
    options: Mapping[str, Any],
    overrides: Mapping[str, Any],
    min_miou: float,
    proxy: str,
    compares_with: Mapping[str, Any] | None = None,
    max_seconds: float | None = None,
    data: str = SOURCE,
) -> Any:
    """A segmentation paper's proxy check: train ``variant`` built with ``options`` (a narrow network)
    on the train split of ``data`` (``builtin:shapes`` or another set of its generator) with the
    registry's recipe changed by ``overrides``; it passes when the mIoU on its val split reaches
    ``min_miou`` percent. ``papers check PAPER --run`` runs it, beside the paper's figure that
    ``compares_with`` selects."""
    from papers.checks import TrainingCheck

    def run(progress: bool) -> tuple[float, float]:
        trained = train_segmenter(
            variant,
            data,
            overrides=overrides,
            options=options,
            log=(lambda line: print(f"{name}: {line}", flush=True)) if progress else None,
        )
        return 100.0 * trained.final["val_miou"], min_miou

    return TrainingCheck(
        name=name,
        variant=variant,
        data=data,
        min_accuracy=min_miou,
        proxy=proxy,
        overrides=dict(overrides),
        compares_with=dict(compares_with or {}),
        max_seconds=max_seconds,
        metric="miou",
        runner=run,
    )
