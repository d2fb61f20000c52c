"""Running a detector: ``papers detect`` on images, and ``papers eval`` of a detector on detection data.

Any variant whose graph has a ``detection`` section is a detector with torchvision's contract
(``model(list of (C, H, W) float images in [0, 1])`` → ``[{boxes, scores, labels}]``, boxes as
(x1, y1, x2, y2) in the input's pixels); the model resizes and normalises its inputs itself
(``min_size``, ``max_size``, ``image_mean``, ``image_std``), so nothing here does.

Label names come from the run record when the weights were written by ``papers train``, else from
the dataset the variant's reported results name (PASCAL VOC's 20 classes after the background, or
COCO's 91 category slots as torchvision's COCO weights number them) when the model has that many
classes, else ``class_<i>``.

Evaluation reads a VOC folder, a COCO folder or ``builtin:shapes`` (:mod:`papers.detection_data`) and
reports :mod:`papers.detection_metrics`' metrics in percent, as papers print them and results files
hold them, at the model's single test scale (``single_scale``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from papers.data import DataError
from papers.errors import PapersError

DETECTIONS_FILE = "detections.json"
MAX_BATCH = 8
"""The most images a detector evaluates in one pass: ``papers eval``'s default batch of 64 is a
classifier's, and 64 images at a detector's 800 × 1333 take tens of gigabytes."""


def is_detector(variant: str) -> bool:
    """Whether ``variant``'s graph has a ``detection`` task layer."""
    import papers
    from papers.spec import DenseDetection, RegionDetection

    return isinstance(papers.expand_variant(variant).task, DenseDetection | RegionDetection)


def proposal_detector(variant: str) -> Any:
    """The builder of ``variant`` as a detector on proposals (R-CNN's, Fast R-CNN's), or ``None``: the
    ``proposal_detector(variant, *, weights, options)`` function of the plugin module that contributes
    the variant's paper. What it builds is called ``model(images, proposals)`` (torchvision's
    contract, each image's proposals [P, 4] in its pixels) and may have ``label_names``,
    ``proposal_mode`` and ``max_proposals``. A module whose paper also has variants that are no
    detectors (SPP-net's classifier) names those that are in ``PROPOSAL_VARIANTS``."""
    return _plugin_builder(variant, "proposal_detector", "PROPOSAL_VARIANTS")


def image_detector(variant: str) -> Any:
    """The builder of ``variant`` as a detector whose decoding is its paper's own rather than a task
    layer's (MultiBox, YOLO), or ``None``: the plugin module's ``detector(variant, *, weights,
    options)``, for the variants it names in ``DETECTOR_VARIANTS`` (all of its paper's without it).
    What it builds has torchvision's contract: ``model(images)`` gives ``[{boxes, scores, labels}]``."""
    return _plugin_builder(variant, "detector", "DETECTOR_VARIANTS")


def class_detector(variant: str) -> Any:
    """The builder of ``variant`` as a plugin's own detector (:func:`image_detector`), which ``papers
    train`` and ``papers eval`` take: one that scores classes (its graph has a ``num_classes``
    parameter: YOLO's) with its object classes (no background), one whose boxes have no class
    (MultiBox's, :func:`class_agnostic`) with every object as the one class "object"; ``None`` for any
    other variant."""
    return image_detector(variant)


AGNOSTIC_EVALUATION = (
    "class-agnostic: every object is the one class 'object' (label 1); VOC07 mAP@0.5 is that one class's AP"
)
"""What a class-agnostic detector's run and evaluation record says of its scores."""


def class_agnostic(variant: str) -> bool:
    """Whether ``variant`` is a plugin's own detector whose boxes have no class (MultiBox's: its graph
    has no ``num_classes``): trained and scored on every object relabelled 1, "object"."""
    return class_detector(variant) is not None and model_classes(variant, {}) is None


def as_objects(target: Mapping[str, Any]) -> dict[str, Any]:
    """A target with every object's label 1, "object", as a class-agnostic detector sees it."""
    return {**target, "labels": target["labels"].new_ones(target["labels"].shape)}


def training_options(variant: str) -> Any:
    """The plugin's ``training_options(variant, *, data, options)`` for ``variant``, or ``None``: build
    options a plugin detector takes from its training data (MultiBox's k-means priors), recorded with
    the run so that ``papers eval`` and ``papers detect`` build the same detector."""
    return _plugin_builder(variant, "training_options", "DETECTOR_VARIANTS")


def _plugin_builder(variant: str, function: str, names: str) -> Any:
    import importlib

    from papers.registry import get_registry

    registry = get_registry()
    entry, _ = registry.variant(variant)
    info = registry.manager.plugins.get(entry.plugin)
    if info is None or not info.module:
        return None
    module = importlib.import_module(info.module)
    named = getattr(module, names, None)
    if named is not None and variant not in named:
        return None
    return getattr(module, function, None)


def model_classes(variant: str, options: Mapping[str, Any]) -> int | None:
    """The classes (background included) ``variant`` is built with under ``options``, where its graph
    has a ``num_classes`` parameter."""
    from papers.registry import get_registry

    entry, spec_variant = get_registry().variant(variant)
    graph = entry.spec.graphs.get(spec_variant.graph or "")
    if "num_classes" in options:
        value = options["num_classes"]
    elif "num_classes" in spec_variant.args:
        value = spec_variant.args["num_classes"]
    else:
        value = graph.params.get("num_classes") if graph is not None else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def label_names(variant: str, options: Mapping[str, Any], record: Any = None) -> list[str] | None:
    """The name of each label (see the module's docstring); ``None``: none known, use ``class_<i>``."""
    from papers.registry import get_registry

    if record is not None and record.classes:
        return list(record.classes)
    classes = model_classes(variant, options)
    entry, _ = get_registry().variant(variant)
    datasets = [r.dataset for r in entry.spec.results if r.variant == variant and r.dataset] + [
        r.dataset for r in entry.spec.results if r.dataset
    ]
    for dataset in datasets:
        names = _dataset_classes(dataset)
        if names is not None and len(names) == classes:
            return names
    return None


def _dataset_classes(dataset: str) -> list[str] | None:
    from papers.detection_data import BACKGROUND, VOC_CLASSES

    if "VOC" in dataset:
        return [BACKGROUND, *VOC_CLASSES]
    if "COCO" in dataset:
        from torchvision.models.detection import FasterRCNN_ResNet50_FPN_Weights

        return list(FasterRCNN_ResNet50_FPN_Weights.COCO_V1.meta["categories"])
    return None


def _name(names: Sequence[str] | None, label: int) -> str:
    return names[label] if names is not None and 0 <= label < len(names) else f"class_{label}"


def detect(
    variant: str,
    images: Sequence[str],
    *,
    weights: str | None = None,
    out: str | None = None,
    options: Mapping[str, Any] | None = None,
    proposals: str | None = None,
) -> list[dict[str, Any]]:
    """Detections in each of ``images``: ``[{image, boxes, scores, labels, label_names}]``. With
    ``out``, ``<out>/detections.json`` and each image with its boxes drawn, under its own name. A
    detector on proposals takes each image's from the ``proposals`` file (:mod:`papers.proposals`),
    else selective search's."""
    import numpy as np
    import torch

    import papers
    from papers.data import load_image
    from papers.evaluate import _run_record, fit_weights, load_weights

    on_proposals = proposal_detector(variant)
    own = image_detector(variant) if on_proposals is None and not is_detector(variant) else None
    if on_proposals is None and own is None and not is_detector(variant):
        raise PapersError(
            f"{variant} is not a detector (its graph has no `detection` section)", field="VARIANT"
        )
    if out is not None and Path(out).exists() and not Path(out).is_dir():
        raise PapersError("--out must be a folder", file=out)
    names_out = [Path(path).name for path in images]
    if out is not None:
        if len(set(names_out)) != len(names_out):
            raise PapersError("two images have the same name; their drawings would overwrite each other")
        if DETECTIONS_FILE in names_out:
            raise PapersError(
                f"an image named {DETECTIONS_FILE} would overwrite the detections", field="IMAGE"
            )
    loaded = []
    for path in images:
        try:
            loaded.append(load_image(path))
        except OSError as exc:
            raise PapersError(f"cannot read the image: {exc}", file=path) from None
    record = _run_record(Path(weights)) if weights is not None else None
    built = {**(record.options if record is not None else {}), **(options or {})}
    if proposals is not None and on_proposals is None:
        raise PapersError(
            f"{variant} makes its own proposals; --proposals is for those that take them (R-CNN, Fast R-CNN)",
            field="--proposals",
        )
    table = None
    if proposals is not None:
        from papers.proposals import load_proposals

        table = load_proposals(proposals)
    torch.manual_seed(0)
    if on_proposals is not None or own is not None:
        model = (on_proposals or own)(variant, weights=weights, options=built)
        names = getattr(model, "label_names", None) or label_names(variant, built, record)
    else:
        names = label_names(variant, built, record)
        model = papers.build_model(variant, **built)
        if weights is not None:
            fit_weights(model, load_weights(weights), file=weights)
    model.eval()
    results: list[dict[str, Any]] = []
    tensors = []
    for path, image in zip(images, loaded, strict=True):
        pixels = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)
        tensors.append(pixels)
        with torch.inference_mode():
            if on_proposals is not None:
                from papers.proposals import image_proposals

                boxes = image_proposals(
                    image, path, table=table, file=proposals,
                    mode=getattr(model, "proposal_mode", "fast"),
                    max_proposals=getattr(model, "max_proposals", 2000),
                )  # fmt: skip
                found = model([pixels.float() / 255.0], [torch.from_numpy(boxes)])[0]
            else:
                found = model([pixels.float() / 255.0])[0]
        labels = [int(label) for label in found["labels"]]
        results.append(
            {
                "image": path,
                "boxes": [[round(float(v), 2) for v in box] for box in found["boxes"]],
                "scores": [round(float(s), 4) for s in found["scores"]],
                "labels": labels,
                "label_names": [_name(names, label) for label in labels],
            }
        )
    if out is not None:
        _write(Path(out), results, tensors, names_out)
    return results


def _write(folder: Path, results: list[dict[str, Any]], images: list[Any], names: list[str]) -> None:
    """``detections.json`` and each image with its boxes and labels drawn."""
    import torch
    from torchvision.transforms.functional import to_pil_image
    from torchvision.utils import draw_bounding_boxes

    from papers.files import write_atomic

    try:
        folder.mkdir(parents=True, exist_ok=True)
        for result, pixels, name in zip(results, images, names, strict=True):
            boxes = torch.tensor(result["boxes"], dtype=torch.float32).reshape(-1, 4)
            captions = [f"{n} {s:.2f}" for n, s in zip(result["label_names"], result["scores"], strict=True)]
            drawn = draw_bounding_boxes(pixels, boxes, labels=captions, width=2)
            to_pil_image(drawn).save(folder / name)
            result["drawn"] = str(folder / name)
        write_atomic(folder / DETECTIONS_FILE, (json.dumps(results, indent=2) + "\n").encode())
    except (OSError, ValueError) as exc:
        raise PapersError(f"cannot write the detections: {exc}", file=str(folder)) from None


def _collate(batch: Sequence[tuple[Any, Any]]) -> tuple[list[Any], list[Any]]:
    images, targets = zip(*batch, strict=True)
    return list(images), list(targets)


def evaluate_detector(
    variant: str,
    weights: str | Path,
    data: str,
    *,
    batch_size: int = 8,
    workers: int = 0,
    options: Mapping[str, Any] | None = None,
    split: str | None = None,
) -> dict[str, Any]:
    """VOC's and COCO's detection metrics (percent) of ``variant`` with ``weights`` on ``data``, in
    batches of ``batch_size`` images (at most :data:`MAX_BATCH`)."""
    import torch

    import papers
    from papers.data import readable
    from papers.detection_data import detection_split, is_detection_source
    from papers.detection_metrics import DETECTION_METRICS, coco_metrics, voc_map
    from papers.evaluate import WeightsError, _record_file, _run_record, _runnable, fit_weights, load_weights

    if not is_detection_source(data):
        raise DataError(
            "a detector is evaluated on builtin:shapes, a PASCAL VOC folder or a COCO folder", file=data
        )
    state = load_weights(weights)
    detection = detection_split(data, split)
    record = _run_record(Path(weights))
    built = {**(record.options if record is not None else {}), **(options or {})}
    if (
        record is not None
        and record.classes
        and list(record.classes)
        not in (
            detection.classes,
            detection.classes[1:],
        )
    ):
        raise DataError(
            f"the weights were trained on the classes {', '.join(record.classes)}; "
            f"the data has {', '.join(detection.object_classes)}",
            file=_record_file(Path(weights)),
            field="classes",
        )
    own = None if is_detector(variant) else class_detector(variant)
    agnostic = own is not None and class_agnostic(variant)
    classes = detection.num_classes - (0 if own is None else 1)  # YOLO's count no background
    wanted = classes if agnostic else built.setdefault("num_classes", classes)
    if wanted != classes:
        raise DataError(
            f"the data has {detection.num_classes} classes with the background "
            f"({_shown(detection.object_classes)}); the model is built for {wanted}"
            + ("" if own is None else " without it"),
            file=data,
            field="num_classes",
        )
    model = papers.build_model(variant, **built) if own is None else own(variant, weights=None, options=built)
    try:
        fit_weights(getattr(model, "network", model) if own is not None else model, state, file=str(weights))
    except WeightsError as error:
        raise WeightsError(
            f"{error.message} (the model is built for the data's {detection.num_classes} classes "
            "with the background)",
            file=error.file,
        ) from None
    model.eval()
    loader = torch.utils.data.DataLoader(
        detection.dataset, batch_size=min(batch_size, MAX_BATCH), num_workers=workers, collate_fn=_collate
    )
    detections: list[dict[str, Any]] = []
    targets: list[dict[str, Any]] = []
    start = time.perf_counter()
    with torch.inference_mode(), readable(data):
        for images, batch_targets in loader:
            with _runnable(variant, weights, [len(images), *images[0].shape]):
                found = model(images)
            detections.extend({k: v.cpu() for k, v in d.items()} for d in found)
            targets.extend(as_objects(t) if agnostic else t for t in batch_targets)
    if not detections:
        raise PapersError("no images to evaluate", file=data)
    measured: dict[str, float | None] = {}
    measured["voc07_map"], per_class = voc_map(detections, targets, use_07_metric=True)
    measured["voc_map"], _ = voc_map(detections, targets, use_07_metric=False)
    names = [detection.classes[0], "object"] if agnostic else detection.classes
    if detection.coco is not None and not agnostic:
        ids = [detection.dataset.image_id(i) for i in range(len(detection.dataset))]
        measured |= coco_metrics(detections, coco=detection.coco, image_ids=ids)
    else:
        measured |= coco_metrics(detections, targets, classes=names)
    return {
        "variant": variant,
        "weights": str(weights),
        "data": data,
        "split": detection.split,
        "protocol": "single_scale",
        "images": len(detections),
        "classes": 1 if agnostic else len(detection.object_classes),
        **({"evaluation": AGNOSTIC_EVALUATION} if agnostic else {}),
        **{name: None if measured[name] is None else 100.0 * measured[name] for name in DETECTION_METRICS},
        "per_class_voc07_ap": {names[label]: 100.0 * ap for label, ap in per_class.items()},
        "seconds": round(time.perf_counter() - start, 3),
    }


def _shown(names: Sequence[str], limit: int = 8) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")
