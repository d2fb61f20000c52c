"""Results files: accuracies ``papers eval`` measured, read by ``papers check --results`` and the site.

A results file is JSON, validated by :class:`ResultsFile`::

    {"schema_version": 1,
     "results": [{"variant": "resnet50", "metric": "top1_accuracy", "value": 76.13, "unit": "percent",
                  "dataset": "ImageNet (ILSVRC-2012)", "split": "val", "protocol": "single_crop",
                  "images": 50000, "weights": "resnet50.pth"}]}

A measured result answers a reported one when the variant, the metric's kind (top-1 or top-5;
accuracy and error convert), the dataset, the split and the protocol agree, and the reported
result's conditions are ones a single model's evaluation meets (``crops`` equal to the protocol's,
``models: 1``) or are repeated in the measured result's ``conditions``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from papers.errors import PapersError
from papers.files import write_atomic
from papers.spec import Metric, Protocol, Result, Value, field_path

_CROPS = {"single_crop": 1, "center_crop": 1, "ten_crop": 10}


class Measured(BaseModel):
    """One number we measured, labelled like the reported result it answers."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    variant: str
    metric: Metric
    value: float
    unit: Literal["percent"] = "percent"
    dataset: str | None = None
    split: Literal["train", "val", "test", "test-dev"] | None = None
    protocol: Protocol | None = None
    conditions: dict[str, Value] = {}
    images: int | None = Field(None, ge=0)
    weights: str | None = Field(None, description="The weights file evaluated.")


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
        raise PapersError(message, file=str(path), field=field_path(first["loc"]) or None) from None


def write_results(path: str | Path, measured: list[Measured]) -> ResultsFile:
    """Add ``measured`` to the results file at ``path`` (replacing results with the same labels)."""
    path = Path(path)
    earlier = read_results(path).results if path.exists() else []
    keys = {_key(m) for m in measured}
    document = ResultsFile(results=[m for m in earlier if _key(m) not in keys] + list(measured))
    text = json.dumps(document.model_dump(mode="json", exclude_none=True), indent=2) + "\n"
    try:
        write_atomic(path, text.encode())
    except OSError as error:
        raise PapersError(f"cannot write results: {error.strerror or error}", file=str(path)) from None
    return document


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


def _conditions_met(result: Result, m: Measured) -> bool:
    for key, value in result.conditions.items():
        if key == "crops" and value == _CROPS.get(m.protocol or ""):
            continue
        if key == "models" and value == 1:
            continue
        if m.conditions.get(key) != value:
            return False
    return True
