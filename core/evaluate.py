"""Evaluation: top-1 / top-5 under a paper's test protocol, and loading weights to evaluate.

Weights are ours (``.safetensors``) or a torchvision / timm checkpoint (``.pth``, ``.pt``, ``.bin``),
which is read only with ``torch.load(weights_only=True)``: nothing pickled is executed. Protocols:
``single_crop`` (resize the shorter side to size / 0.875, take the central crop; ``center_crop`` is
the same) and ``ten_crop`` (the four corners and the centre, and their mirror images, softmax
averaged). ``builtin:digits`` is evaluated on its held-out split at the model's size.
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

PROTOCOLS = ("single_crop", "center_crop", "ten_crop")
# torchvision's and timm's ImageNet weights expect inputs normalised with these.
IMAGENET = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".bin")


class WeightsError(PapersError):
    """Weights that cannot be read or do not fit the model."""


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


def protocol_transform(protocol: str, size: tuple[int, int], resize: int | None = None) -> Any:
    """The test-time transform of ``protocol`` on float images: resize, then one crop or ten."""
    from torchvision.transforms import v2

    shorter = resize or round(min(size) / 0.875)
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
    options: Mapping[str, Any] | None = None,
    normalize: Mapping[str, Sequence[float]] | str | None = "auto",
) -> dict[str, Any]:
    """Top-1 and top-5 accuracy (percent) of ``variant`` with ``weights`` on ``data``.

    ``normalize`` is the per-channel ``mean`` and ``std`` inputs are normalised with; ``"auto"``
    takes ImageNet's for a torchvision / timm checkpoint and the run's for weights in a run folder.
    """
    import torch

    from papers.api import build_model, expand_variant, get_spec
    from papers.data import check_source, digits, image_folder, split_folder

    if protocol not in PROTOCOLS:
        raise PapersError(f"unknown protocol {protocol!r}; known: {', '.join(PROTOCOLS)}", field="--protocol")
    check_source(data)
    state = load_weights(weights)
    spec = get_spec(variant)
    penalty = spec.hyperparameters is not None and spec.hyperparameters.criterion == "rbf_penalty"
    record = _run_record(Path(weights))
    built = {**(record.options if record is not None else {}), **(options or {})}
    if normalize == "auto":
        if Path(weights).suffix in CHECKPOINT_SUFFIXES:
            normalize = IMAGENET
        else:
            normalize = record.normalize if record is not None else None
    assert not isinstance(normalize, str)
    if data == "builtin:digits":
        classes = [str(i) for i in range(10)]
        built.setdefault("num_classes", 10)
        shape = _input_shape(expand_variant(variant, **built))
        _, _, images, labels = digits(shape)
        if normalize is not None:
            mean = torch.tensor(normalize["mean"]).view(1, -1, 1, 1)
            images = (images - mean) / torch.tensor(normalize["std"]).view(1, -1, 1, 1)
        dataset: Any = torch.utils.data.TensorDataset(images, labels)
        protocol = "single_crop"
    else:
        folder = split_folder(data, "val", "test") or Path(data)
        built.setdefault("num_classes", _count_classes(folder))
        shape = _input_shape(expand_variant(variant, **built))
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
    with torch.inference_mode(), _readable(data):
        for images, labels in loader:
            if images.dim() == 5:  # ten crops: average the softmax over the crops of each image
                n, crops = images.shape[:2]
                out = model(images.flatten(0, 1))
                out = -out if penalty else out
                scores = out.softmax(-1).view(n, crops, -1).mean(1)
            else:
                out = model(images)
                scores = -out if penalty else out
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


@contextlib.contextmanager
def _readable(data: str) -> Iterator[None]:
    try:
        yield
    except OSError as exc:  # an image that cannot be read or decoded
        raise PapersError(f"cannot read the data: {exc}", file=data) from None


def _run_record(weights: Path) -> Any:
    """The run record of weights written by ``papers train`` (in the run folder or its checkpoints)."""
    from papers.train import RECIPE, RunRecord

    for folder in (weights.parent, weights.parent.parent):
        if (folder / RECIPE).is_file():
            try:
                return RunRecord.model_validate_json((folder / RECIPE).read_bytes())
            except ValueError:
                return None
    return None


def _count_classes(folder: Path) -> int:
    if not folder.is_dir():
        raise PapersError("no such data folder", file=str(folder))
    return sum(1 for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _input_shape(flat: Any) -> tuple[int, int, int]:
    shape = next(iter(flat.inputs.values()))
    if len(shape) != 3:
        raise PapersError(f"evaluation takes images (C, H, W); the model's input is {list(shape)}")
    return int(shape[0]), int(shape[1]), int(shape[2])
