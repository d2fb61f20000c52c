"""Evaluation: top-1 / top-5 under a paper's test protocol, and loading weights to evaluate.

Weights are ours (``.safetensors``) or a torchvision / timm checkpoint (``.pth``, ``.pt``, ``.bin``),
which is read only with ``torch.load(weights_only=True)``: nothing pickled is executed. Protocols:
``single_crop`` (resize the shorter side to size / 0.875, take the central crop; ``center_crop`` is
the same; inputs of at most 64 px, CIFAR's, are resized to the size itself: the original view) and
``ten_crop`` (the four corners and the centre, and their mirror images, softmax averaged).
``builtin:digits`` and ``builtin:mnist5k`` are evaluated on their held-out split at the model's size.

A torchvision / timm checkpoint's inputs are normalised with ImageNet's statistics where the model
takes three channels (and not at all otherwise); a run folder's weights with the run's. A batch too
large for the machine's memory, a normalisation with the wrong number of channels, and a model that
cannot run on the inputs are refused with one line, before or instead of a traceback.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from papers.errors import PapersError

if TYPE_CHECKING:
    import torch

    from papers.recipe import Criterion

PROTOCOLS = ("single_crop", "center_crop", "ten_crop")
# torchvision's and timm's ImageNet weights expect inputs normalised with these.
IMAGENET = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".bin")


class WeightsError(PapersError):
    """Weights that cannot be read or do not fit the model."""


def image_shape(flat: Any, task: str) -> tuple[int, int, int]:
    """The model's input as (channels, height, width); ``task`` (training, evaluation) takes images."""
    if len(flat.inputs) != 1:  # Fast R-CNN's and SPP-net's graphs also take the image's RoIs
        names = ", ".join(flat.inputs)
        raise PapersError(f"{task} takes images alone; the model's inputs are {names}")
    shape = next(iter(flat.inputs.values()))
    if len(shape) != 3:
        raise PapersError(f"{task} takes images (C, H, W); the model's input is {list(shape)}")
    return int(shape[0]), int(shape[1]), int(shape[2])


def count_correct(logits: torch.Tensor, labels: torch.Tensor, k: int = 5) -> tuple[int, int]:
    """How many of ``labels`` are the top-1 and within the top-``k`` of ``logits``."""
    top = logits.topk(min(k, logits.shape[-1]), dim=-1).indices
    hits = top == labels.unsqueeze(-1)
    return int(hits[:, 0].sum()), int(hits.any(-1).sum())


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` or a torchvision / timm checkpoint (``weights_only``)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise WeightsError("no such weights file", file=str(path))
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        elif path.suffix in CHECKPOINT_SUFFIXES:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        else:
            raise WeightsError("weights are .safetensors, or .pth / .pt / .bin checkpoints", file=str(path))
    except WeightsError:
        raise
    except Exception as exc:  # a damaged or pickled-object file raises many kinds of error
        raise WeightsError(
            f"cannot read weights: {type(exc).__name__}: {exc}"[:300], file=str(path)
        ) from None
    for key in ("state_dict", "model", "state_dict_ema", "model_ema"):  # timm and training-script wrappers
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError("the file holds no state dict of tensors", file=str(path))
    return {k.removeprefix("module."): v for k, v in state.items()}


def fit_weights(model: torch.nn.Module, state: Mapping[str, torch.Tensor], *, file: str) -> None:
    """Load ``state`` into ``model`` strictly, naming every missing, unexpected or mis-shaped tensor."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = [
        f"{name} {tuple(state[name].shape)} vs {tuple(own[name].shape)}"
        for name in own
        if name in state and state[name].shape != own[name].shape
    ]
    problems = []
    for label, names in (("shape mismatch", mismatched), ("missing", missing), ("unexpected", unexpected)):
        if names:
            shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
            problems.append(f"{label}: {shown}")
    if problems:
        raise WeightsError("weights do not fit the model: " + "; ".join(problems), file=file)
    model.load_state_dict(dict(state), strict=True)


# Inputs of at most this many pixels a side (CIFAR's 32×32) are tested on the original view: the
# papers that train on them test "the single original 32×32 view", and a crop of 87.5% loses an eighth.
ORIGINAL_VIEW_MAX = 64


def default_resize(size: tuple[int, int]) -> int:
    """The shorter side test images are resized to before the crop: size / 0.875 (the usual single
    crop) for ImageNet-sized inputs; the size itself, the original view, up to 64 px (CIFAR)."""
    if max(size) <= ORIGINAL_VIEW_MAX:
        return min(size)
    return round(min(size) / 0.875)


def protocol_transform(protocol: str, size: tuple[int, int], resize: int | None = None) -> Any:
    """The test-time transform of ``protocol`` on float images: resize (``resize``, else
    :func:`default_resize`), then one crop or ten. Training's per-epoch held-out split reads its
    images through the ``single_crop`` one."""
    from torchvision.transforms import v2

    shorter = resize or default_resize(size)
    if protocol == "ten_crop":
        return v2.Compose([v2.Resize(shorter, antialias=True), v2.TenCrop(list(size)), _stack])
    return v2.Compose([v2.Resize(shorter, antialias=True), v2.CenterCrop(list(size))])


def _stack(crops: Sequence[torch.Tensor]) -> torch.Tensor:
    import torch

    return torch.stack([torch.as_tensor(crop) for crop in crops])


def evaluate(
    variant: str,
    weights: str | Path,
    data: str,
    *,
    protocol: str = "single_crop",
    resize: int | None = None,
    batch_size: int = 64,
    workers: int = 0,
    threads: int | None = None,
    options: Mapping[str, Any] | None = None,
    normalize: Mapping[str, Sequence[float]] | str | None = "auto",
    split: str | None = None,
) -> dict[str, Any]:
    """Top-1 and top-5 accuracy (percent) of ``variant`` with ``weights`` on ``data``; a detector's
    mAP (:func:`papers.detect.evaluate_detector`) on ``data``'s ``split`` (none: its default).

    ``normalize`` is the per-channel ``mean`` and ``std`` inputs are normalised with; ``"auto"``
    takes ImageNet's for a torchvision / timm checkpoint and the run's for weights in a run folder.
    ``threads`` sets torch's intra-op threads for the evaluation (none: torch's default).
    """
    from papers.train import intra_op_threads

    with intra_op_threads(threads):
        measured = _evaluate(
            variant, weights, data, protocol, resize, batch_size, workers, options, normalize, split
        )
    import torch

    return measured | {"threads": threads or torch.get_num_threads()}


def _evaluate(
    variant: str,
    weights: str | Path,
    data: str,
    protocol: str,
    resize: int | None,
    batch_size: int,
    workers: int,
    options: Mapping[str, Any] | None,
    normalize: Mapping[str, Sequence[float]] | str | None,
    split: str | None,
) -> dict[str, Any]:
    import torch

    from papers.api import build_model, expand_variant, get_spec
    from papers.data import IN_MEMORY, check_source, image_folder, in_memory, readable, split_folder

    if protocol not in PROTOCOLS:
        raise PapersError(f"unknown protocol {protocol!r}; known: {', '.join(PROTOCOLS)}", field="--protocol")
    from papers.detect import class_detector, evaluate_detector, is_detector

    # mAP on VOC / COCO / builtin:shapes (papers.detect), of a task layer's detector or a plugin's (YOLO)
    if is_detector(variant) or class_detector(variant) is not None:
        return evaluate_detector(
            variant, weights, data, batch_size=batch_size, workers=workers, options=options, split=split
        )
    check_source(data)
    from papers.pretrained import is_library_weights, library_state_dict

    library = is_library_weights(weights)  # torchvision:resnet18: the library's pretrained weights
    state = library_state_dict(str(weights)) if library else load_weights(weights)
    spec = get_spec(variant)
    record = None if library else _run_record(Path(weights), tasks=False)
    criterion = _criterion(spec, record, Path(weights))
    built = {**(record.options if record is not None else {}), **(options or {})}
    auto = normalize == "auto"
    if data in IN_MEMORY:
        built.setdefault("num_classes", 10)
    else:
        folder = split_folder(data, "val", "test") or Path(data)
        built.setdefault("num_classes", _count_classes(folder))
    shape = image_shape(expand_variant(variant, **built), "evaluation")
    if auto:
        if library or Path(weights).suffix in CHECKPOINT_SUFFIXES:  # ImageNet's statistics: RGB inputs
            normalize = IMAGENET if shape[0] == len(IMAGENET["mean"]) else None
        else:
            normalize = record.normalize if record is not None else None
    assert not isinstance(normalize, str)
    _check_normalize(
        normalize, shape[0], _record_file(Path(weights)) if auto and record is not None else None
    )
    crops = 10 if protocol == "ten_crop" and data not in IN_MEMORY else 1
    _check_memory(batch_size * crops, shape, data, resize)
    if data in IN_MEMORY:
        classes = [str(i) for i in range(10)]
        _, _, images, labels = in_memory(data, shape)
        if normalize is not None:
            mean = torch.tensor(normalize["mean"]).view(1, -1, 1, 1)
            images = (images - mean) / torch.tensor(normalize["std"]).view(1, -1, 1, 1)
        dataset: Any = torch.utils.data.TensorDataset(images, labels)
        protocol = "single_crop"
    else:
        transform = protocol_transform(protocol, (shape[1], shape[2]), resize)
        if normalize is not None:
            from torchvision.transforms import v2

            transform = v2.Compose([transform, v2.Normalize(list(normalize["mean"]), list(normalize["std"]))])
        dataset = image_folder(folder, shape[0], transform)
        classes = dataset.classes
    model = build_model(variant, **built)
    fit_weights(model, state, file=str(weights))
    model.eval()
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers)
    top1 = top5 = seen = 0
    start = time.perf_counter()
    with torch.inference_mode(), readable(data):
        for images, labels in loader:
            with _runnable(variant, weights, images.shape):
                if images.dim() == 5:  # ten crops: average the softmax over the crops of each image
                    n, crops = images.shape[:2]
                    scores = criterion.scores(_logits_first(model(images.flatten(0, 1))))
                    scores = scores.softmax(-1).view(n, crops, -1).mean(1)
                else:
                    scores = criterion.scores(_logits_first(model(images)))
            one, five = count_correct(scores, labels)
            top1, top5, seen = top1 + one, top5 + five, seen + len(labels)
    if seen == 0:
        raise PapersError("no images to evaluate", file=data)
    return {
        "variant": variant,
        "weights": str(weights),
        "data": data,
        "protocol": protocol,
        "images": seen,
        "classes": len(classes),
        "top1_accuracy": 100.0 * top1 / seen,
        "top5_accuracy": 100.0 * top5 / seen,
        "seconds": round(time.perf_counter() - start, 3),
    }


def _logits_first(output: Any) -> Any:
    """A model built with auxiliary classifiers (a run trained with ``aux_weight``) gives its logits first."""
    return output[0] if isinstance(output, tuple) else output


@contextlib.contextmanager
def _runnable(variant: str, weights: str | Path, shape: Any) -> Iterator[None]:
    """A model that fails on the inputs (a shape it cannot take, too little memory): one line."""
    try:
        yield
    except RuntimeError as exc:
        reason = " ".join(str(exc).split("\n")[0].split())[:300]
        raise WeightsError(
            f"{variant} cannot evaluate inputs of shape {list(shape)}: {reason}", file=str(weights)
        ) from None


def _check_normalize(
    normalize: Mapping[str, Sequence[float]] | None, channels: int, file: str | None
) -> None:
    if normalize is None:
        return
    mean, std = list(normalize.get("mean", [])), list(normalize.get("std", []))
    if len(mean) != channels or len(std) != channels:
        raise PapersError(
            f"normalisation has {len(mean)} means and {len(std)} standard deviations; "
            f"the model takes {channels} channels",
            file=file,
            field="normalize",
        )
    if any(not s > 0 for s in std):
        raise PapersError(
            "normalisation's standard deviations must be positive", file=file, field="normalize"
        )


def _check_memory(batch: int, shape: tuple[int, int, int], data: str, resize: int | None) -> None:
    """Refuse, before allocating them, a batch or resized images too large for the machine."""
    from papers.data import IN_MEMORY, check_memory, in_memory_bytes

    channels, height, width = shape
    size = f"{channels}×{height}×{width}"
    check_memory(
        f"a batch of {batch} images of {size}", batch * channels * height * width * 4, field="--batch-size"
    )
    if data in IN_MEMORY:
        check_memory(f"{data} at {size}", in_memory_bytes(data, shape), field="-o image_size")
    elif resize is not None:
        check_memory(
            f"an image resized to {resize}×{resize}", channels * resize * resize * 4, field="--resize"
        )


def _run_record(weights: Path, *, tasks: bool = True) -> Any:
    """The run record of weights written by ``papers train`` (in the run folder or its checkpoints): a
    classification run's, else (``tasks``) a segmenter's or detector's (its build options and classes)."""
    from papers.train import RunRecord

    path = _record_file(weights)
    if path is None:
        return None
    try:
        return RunRecord.model_validate_json(Path(path).read_bytes())
    except (OSError, ValueError):
        pass
    from papers.task_runs import task_record

    return task_record(Path(path)) if tasks else None


def _record_file(weights: Path) -> str | None:
    from papers.train import RECIPE

    for folder in (weights.parent, weights.parent.parent):
        if (folder / RECIPE).is_file():
            return str(folder / RECIPE)
    return None


def _count_classes(folder: Path) -> int:
    if not folder.is_dir():
        raise PapersError("no such data folder", file=str(folder))
    return sum(1 for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _criterion(spec: Any, record: Any, weights: Path) -> Criterion:
    """How the model's outputs are read: by the criterion of the run that wrote the weights, else by
    the one of the paper's recipe."""
    from papers.recipe import RecipeError, criterion_of, get_criterion

    if record is None:
        return criterion_of(spec)
    try:
        return get_criterion(record.recipe.criterion)
    except RecipeError as error:
        raise error.located(file=_record_file(weights), field="recipe") from None
