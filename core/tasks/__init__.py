"""Task layers: what wraps a built graph into the contract users of torchvision expect.

A graph with a ``detection`` section becomes a detector (``model(images, targets)``), one with a
``segmentation`` section a segmenter (``model(images) -> {"out", "aux"}``); a graph without one is
returned as it is (images → logits). Build options named as torchvision's builders name them
(``score_thresh``, ``nms_thresh``, ``min_size``, ``aux_loss``, ...) configure the task layer; the
others are the graph's parameters.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from papers.errors import GraphError
from papers.spec import DenseDetection, RegionDetection, Segmentation, SingleShotDetection

Task = DenseDetection | SingleShotDetection | RegionDetection | Segmentation


def task_options(task: Task | None) -> tuple[str, ...]:
    """The build options that configure ``task`` rather than the graph."""
    if isinstance(task, SingleShotDetection):
        from papers.tasks.detection import SSD_OPTIONS, SSD_TRANSFORM_OPTIONS

        return SSD_OPTIONS + SSD_TRANSFORM_OPTIONS
    if isinstance(task, DenseDetection):
        from papers.tasks.detection import OPTIONS, TRANSFORM_OPTIONS

        return OPTIONS + TRANSFORM_OPTIONS
    if isinstance(task, RegionDetection):
        from papers.tasks.detection import TRANSFORM_OPTIONS
        from papers.tasks.region import OPTIONS as REGION_OPTIONS

        return REGION_OPTIONS + TRANSFORM_OPTIONS
    if isinstance(task, Segmentation):
        return ("aux_loss",)
    return ()


def check_outputs(task: Task, outputs: Any, where: str) -> None:
    """Refuse a task section that names an output the graph does not give."""
    if isinstance(task, DenseDetection):
        named = {"levels": task.levels, "scores": [task.scores], "boxes": [task.boxes]}
    elif isinstance(task, RegionDetection):
        named = {
            "levels": task.levels,
            "objectness": task.objectness,
            "rpn_deltas": task.rpn_deltas,
            "roi_pool.levels": task.roi_pool.levels,
        }
    else:
        named = {"out": [task.out], "aux": [task.aux] if task.aux else []}
    section = "segmentation" if isinstance(task, Segmentation) else "detection"
    for key, names in named.items():
        for name in names:
            if name not in outputs:
                known = ", ".join(outputs)
                raise GraphError(
                    f"{section}.{key} names {name!r}, which is not an output of the graph (outputs: {known})",
                    field=f"{where}.{section}.{key}",
                )


def wrap(
    network: Any,
    task: Task,
    options: dict[str, Any],
    build_graph: Callable[[str, dict[str, Any]], tuple[Any, Any]] | None = None,
) -> Any:
    """The task model around a built ``network`` (whose outputs are named), with ``options`` applied.

    ``build_graph(name, args)`` builds and expands another graph of the same spec (a two-stage
    detector's box head, whose input shape gives the pooled size).
    """
    if isinstance(task, SingleShotDetection):
        from papers.tasks.detection import SSD_TRANSFORM_OPTIONS, SingleShotDetector

        return SingleShotDetector(network, _with_options(task, options, SSD_TRANSFORM_OPTIONS))
    if isinstance(task, DenseDetection | RegionDetection):
        from papers.tasks.detection import TRANSFORM_OPTIONS, DenseDetector

        validated = _with_options(task, options, TRANSFORM_OPTIONS)
        if isinstance(validated, DenseDetection):
            return DenseDetector(network, validated)
        from papers.tasks.region import RegionDetector

        if build_graph is None:
            raise GraphError(
                "a two-stage detector needs its box head graph built", field="detection.box_head"
            )
        box_head, expanded = build_graph(validated.box_head.graph, dict(validated.box_head.args))
        inputs = list(expanded.inputs.values())
        if len(inputs) != 1 or len(inputs[0]) != 3 or inputs[0][1] != inputs[0][2]:
            raise GraphError(
                f"the box head graph {validated.box_head.graph!r} takes one input [C, s, s] "
                f"(the pooled RoIs), not {inputs}",
                field="detection.box_head.graph",
            )
        return RegionDetector(network, box_head, validated, pooled_size=inputs[0][1])
    from papers.tasks.segmentation import Segmenter

    return Segmenter(network, task, aux_loss=options.get("aux_loss"))


def _with_options(task: Any, options: dict[str, Any], transform_options: tuple[str, ...]) -> Any:
    """``task`` with the build ``options`` applied (those in ``transform_options`` to its image
    transform), validated again; only the fields the spec set are carried over, so a task section that
    refuses fields it does not read (`kind: ssd`) is not given every default."""
    transform = {k: v for k, v in options.items() if k in transform_options}
    rest = {k: v for k, v in options.items() if k not in transform_options}
    data = task.model_dump(exclude_unset=True)
    data.update(rest)
    data["transform"] = {**task.transform.model_dump(), **transform}
    try:
        return type(task).model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise GraphError(f"build option {where}: {first['msg']}", field="detection") from None
