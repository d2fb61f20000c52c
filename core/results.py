"""Results files: accuracies ``papers eval`` measured, read by ``papers check --results`` and the site.

A results file is JSON, validated by :class:`ResultsFile`::

    {"schema_version": 1,
     "results": [{"variant": "resnet50", "metric": "top1_accuracy", "value": 76.13, "unit": "percent",
                  "dataset": "ImageNet (ILSVRC-2012)", "split": "val", "protocol": "single_crop",
                  "images": 50000, "weights": "resnet50.pth"}]}

A measured result answers a reported one when the variant, the metric's kind (top-1 or top-5;
accuracy and error convert), the dataset, the split and the protocol agree, and the reported
result's conditions are ones a single model's evaluation meets (``crops`` equal to the protocol's,
``models: 1``) or are repeated in the measured result's ``conditions``. A detection metric
(``voc07_map``, ``coco_ap``, ...: :data:`papers.detection_metrics.DETECTION_METRICS`) or segmentation
metric (``miou``, ``pixel_acc``, ``mean_acc``, ``fwiou``) is answered by the same metric only.

Values are range-checked: accuracies and errors in percent lie in [0, 100], changes of an error in
[-100, 100], and ``images`` is at least 1. Several processes may add to one file at once: each takes
an exclusive lock (``fcntl.flock`` on ``.NAME.lock`` beside the file), merges its results with what is
on the disk at that moment and renames a complete file into place, so no process's results are lost.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from papers.detection_metrics import DETECTION_METRICS
from papers.errors import PapersError
from papers.files import write_atomic
from papers.segmentation_metrics import SEGMENTATION_METRICS
from papers.spec import Metric, Protocol, Result, Value, field_path

_CROPS = {"single_crop": 1, "center_crop": 1, "ten_crop": 10}
# The metrics a results file holds (all in percent), and the range of their values.
PERCENT_METRICS = frozenset(
    {"top1_error", "top5_error", "top1_accuracy", "top5_accuracy", "error", "accuracy"}
    | {"map", "map50"}
    | set(DETECTION_METRICS)
    | set(SEGMENTATION_METRICS)
)
CHANGE_METRICS = frozenset({"top1_error_change", "top5_error_change"})


class Measured(BaseModel):
    """One number we measured, labelled like the reported result it answers."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    variant: str = Field(min_length=1)
    metric: Metric
    value: float
    unit: Literal["percent"] = "percent"
    dataset: str | None = Field(None, min_length=1)
    split: Literal["train", "val", "test", "test-dev"] | None = None
    protocol: Protocol | None = None
    conditions: dict[str, Value] = {}
    images: int | None = Field(None, ge=1)
    classes: int | None = Field(None, ge=1, description="The classes of the data evaluated.")
    weights: str | None = Field(None, min_length=1, description="The weights file evaluated, as given.")

    @field_validator("metric")
    @classmethod
    def _a_percentage(cls, metric: str) -> str:
        if metric not in PERCENT_METRICS | CHANGE_METRICS:
            known = ", ".join(sorted(PERCENT_METRICS | CHANGE_METRICS))
            raise ValueError(f"{metric!r} is not measured in percent; a results file holds {known}")
        return metric

    @field_validator("value")
    @classmethod
    def _in_range(cls, value: float, info: ValidationInfo) -> float:
        metric = info.data.get("metric")
        low = -100.0 if metric in CHANGE_METRICS else 0.0
        if not low <= value <= 100.0:
            raise ValueError(f"{metric or 'a percentage'} must lie in [{low:g}, 100], not {value:g}")
        return value


# The images and classes of the splits results are reported on, by (dataset, split) as specs spell them.
KNOWN_SIZES: dict[tuple[str, str], tuple[int, int]] = {
    ("CIFAR-10", "test"): (10_000, 10),
    ("CIFAR-100", "test"): (10_000, 100),
    ("PASCAL VOC 2007", "test"): (4_952, 20),
    ("ImageNet (ILSVRC-2012)", "val"): (50_000, 1_000),
    ("MNIST", "test"): (10_000, 10),
}


def size_warning(dataset: str | None, split: str | None, images: int, classes: int) -> str | None:
    """One line where the data evaluated is not the size of the named dataset's split, else ``None``."""
    known = KNOWN_SIZES.get((dataset or "", split or ""))
    if known is None or known == (images, classes):
        return None
    return (
        f"{dataset} {split} has {known[0]:,} images of {known[1]:,} classes; "
        f"this data has {images:,} of {classes:,}"
    )


class ResultsFile(BaseModel):
    """A file of measured results (``papers eval --out results.json``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    schema_version: Literal[1] = 1
    results: list[Measured] = []


def read_results(path: str | Path) -> ResultsFile:
    """Read and validate a results file, raising :class:`PapersError` naming the file and field."""
    path = Path(path)
    try:
        text = path.read_bytes()
    except OSError as error:
        raise PapersError(f"cannot read results: {error.strerror or error}", file=str(path)) from None
    try:
        return ResultsFile.model_validate_json(text)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        message = "unknown field" if first["type"] == "extra_forbidden" else first["msg"]
        message = message.removeprefix("Value error, ")
        raise PapersError(message, file=str(path), field=field_path(first["loc"]) or None) from None


def check_results_target(path: str | Path) -> None:
    """Refuse a results file ``write_results`` could not add to (an invalid file, a missing folder),
    before the measurement it is to hold is made."""
    path = Path(path)
    if path.is_dir():
        raise PapersError("is a folder; name a results file (.json)", file=str(path))
    folder = path.parent
    if not folder.is_dir():
        raise PapersError(f"no such folder {str(folder)!r} for the results file", file=str(path))
    if path.exists():
        read_results(path)
    elif not os.access(folder, os.W_OK | os.X_OK):
        raise PapersError(f"cannot write in {str(folder)!r}", file=str(path))


def write_results(path: str | Path, measured: list[Measured]) -> ResultsFile:
    """Add ``measured`` to the results file at ``path`` (replacing results with the same labels).

    Safe with several writers at once: the file is read, merged and replaced under an exclusive lock
    on ``.NAME.lock`` beside it, so every writer's results end up in the file.
    """
    path = Path(path)
    measured = [Measured.model_validate(m.model_dump()) for m in measured]  # even a model_construct one
    check_results_target(path)  # an invalid file is refused before the lock file is made
    keys = {_key(m) for m in measured}
    try:
        with _locked(path):
            from papers.train import remove_stale_temporaries

            remove_stale_temporaries(path.parent, prefix=f".{path.name}.tmp-")
            earlier = read_results(path).results if path.exists() else []
            document = ResultsFile(results=[m for m in earlier if _key(m) not in keys] + list(measured))
            text = json.dumps(document.model_dump(mode="json", exclude_none=True), indent=2) + "\n"
            write_atomic(path, text.encode())
    except OSError as error:
        raise PapersError(f"cannot write results: {error.strerror or error}", file=str(path)) from None
    return document


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``.NAME.lock`` beside ``path`` (kept: removing it would let two
    writers lock different files)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: one writer at a time is up to the user
        yield
        return
    with open(path.with_name(f".{path.name}.lock"), "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _key(m: Measured) -> tuple:
    return (m.variant, m.metric, m.dataset, m.split, m.protocol, json.dumps(m.conditions, sort_keys=True))


def _kind(metric: str) -> str | None:
    if metric.startswith("top5_"):
        return "top5"
    if metric in ("top1_error", "top1_accuracy", "error", "accuracy"):
        return "top1"
    return None


def answer(result: Result, measured: list[Measured]) -> float | None:
    """The measured value (in the reported metric) that answers ``result``, if one does."""
    if result.metric in DETECTION_METRICS or result.metric in SEGMENTATION_METRICS:
        return _same_metric_answer(result, measured)
    kind = _kind(result.metric)
    if kind is None:
        return None
    for m in measured:
        if m.variant != result.variant or _kind(m.metric) != kind:
            continue
        if result.dataset is not None and m.dataset != result.dataset:
            continue
        if result.split is not None and m.split is not None and m.split != result.split:
            continue
        crops = _CROPS.get(m.protocol or "", -2)
        if result.protocol is not None and _CROPS.get(result.protocol, -1) != crops:
            continue
        if not _conditions_met(result, m):
            continue
        accuracy = m.value if m.metric.endswith("accuracy") else 100.0 - m.value
        return accuracy if result.metric.endswith("accuracy") else round(100.0 - accuracy, 6)
    return None


def _same_metric_answer(result: Result, measured: list[Measured]) -> float | None:
    """A detection or segmentation metric is answered by the same metric (``voc07_map`` by
    ``voc07_map``, ``miou`` by ``miou``) on the same dataset and split, under the same conditions
    and, where both name one, the same protocol."""
    for m in measured:
        if m.variant != result.variant or m.metric != result.metric:
            continue
        if result.dataset is not None and m.dataset != result.dataset:
            continue
        if result.split is not None and m.split is not None and m.split != result.split:
            continue
        if result.protocol is not None and m.protocol is not None and m.protocol != result.protocol:
            continue
        if _conditions_met(result, m):
            return m.value
    return None


def _conditions_met(result: Result, m: Measured) -> bool:
    for key, value in result.conditions.items():
        if key == "crops" and value == _CROPS.get(m.protocol or ""):
            continue
        if key == "models" and value == 1:
            continue
        if m.conditions.get(key) != value:
            return False
    return True
