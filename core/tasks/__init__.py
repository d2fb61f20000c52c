"""Task layers: what wraps a built graph into the contract users of torchvision expect.

A graph with a ``detection`` section becomes a detector (``model(images, targets)``), one with a
``segmentation`` section a segmenter (``model(images) -> {"out", "aux"}``); a graph without one is
returned as it is (images → logits). Build options named as torchvision's builders name them
(``score_thresh``, ``nms_thresh``, ``min_size``, ``aux_loss``, ...) configure the task layer; the
others are the graph's parameters.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from papers.errors import GraphError
from papers.spec import DenseDetection, Segmentation

Task = DenseDetection | Segmentation


def task_options(task: Task | None) -> tuple[str, ...]:
    """The build options that configure ``task`` rather than the graph."""
    if isinstance(task, DenseDetection):
        from papers.tasks.detection import OPTIONS, TRANSFORM_OPTIONS

        return OPTIONS + TRANSFORM_OPTIONS
    if isinstance(task, Segmentation):
        return ("aux_loss",)
    return ()


def check_outputs(task: Task, outputs: Any, where: str) -> None:
    """Refuse a task section that names an output the graph does not give."""
    named = (
        {"levels": task.levels, "scores": [task.scores], "boxes": [task.boxes]}
        if isinstance(task, DenseDetection)
        else {"out": [task.out], "aux": [task.aux] if task.aux else []}
    )
    section = "detection" if isinstance(task, DenseDetection) else "segmentation"
    for key, names in named.items():
        for name in names:
            if name not in outputs:
                known = ", ".join(outputs)
                raise GraphError(
                    f"{section}.{key} names {name!r}, which is not an output of the graph (outputs: {known})",
                    field=f"{where}.{section}.{key}",
                )


def wrap(network: Any, task: Task, options: dict[str, Any]) -> Any:
    """The task model around a built ``network`` (whose outputs are named), with ``options`` applied."""
    if isinstance(task, DenseDetection):
        from papers.tasks.detection import TRANSFORM_OPTIONS, DenseDetector

        transform = {k: v for k, v in options.items() if k in TRANSFORM_OPTIONS}
        rest = {k: v for k, v in options.items() if k not in TRANSFORM_OPTIONS}
        data = task.model_dump()
        data.update(rest)
        data["transform"].update(transform)
        try:
            validated = DenseDetection.model_validate(data)
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise GraphError(f"build option {where}: {first['msg']}", field="detection") from None
        return DenseDetector(network, validated)
    from papers.tasks.segmentation import Segmenter

    return Segmenter(network, task, aux_loss=options.get("aux_loss"))
