"""Quantization Mimic (Wei et al. 2018): a quantized student detector trained to match a full-precision
teacher's feature maps, both maps quantized.

The method ``quantization_mimic`` takes a two-stage detector of the registry as its base (the student)
and names the teacher, another, in its settings; both must detect the same classes. Where the maps the
RPNs read differ in channels, a 1×1 convolution from the student's to the teacher's (trained with the
student, dropped after) stands between them in the loss. The rewrite makes the student's backbone
convolutions but the first ``quant_conv2d`` (:mod:`papers_plugins.compression.quantizers`: DoReFa's
k-bit weights and inputs, straight-through estimators), so the student's feature maps are quantized as
it trains and runs. Training adds to the detector's own losses ``mimic_weight`` times
:func:`mimic_loss`: the mean squared difference between the two maps, both quantized at
``feature_bits`` (DoReFa's activation quantizer: clipped to [0, 1], 2^k - 1 even steps), RoI-aligned
over the student's proposals (the regions the mimic of Li et al. 2017 compares), the teacher's side
without gradient.

Hand-written, and why: the loss is ``roi_align`` and ``mse_loss`` from torchvision and torch; the
loop is the registry's detector recipe (:mod:`papers.train_detection`'s optimizer and schedule), run
here because the student's step needs the teacher's map on the same transformed batch, which
``train_detector`` does not expose.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import Field

from papers.errors import PapersError, SpecError
from papers.graph import FlatGraph
from papers.methods import Method, MethodContext, Settings

if TYPE_CHECKING:
    import torch
    from torch import nn

FULL = 32


class MimicSettings(Settings):
    """The settings of ``quantization_mimic``."""

    teacher: str = Field(
        min_length=1, description="The full-precision teacher: a two-stage detector variant."
    )
    teacher_weights: str | None = Field(
        None, description="The teacher's trained weights; none: it is first trained on the data."
    )
    weight_bits: int = Field(ge=1, le=32, description="Bits of the student's quantized convolution weights.")
    feature_bits: int = Field(
        ge=1,
        le=32,
        description="Bits of the feature maps: the quantized layers' inputs and both mimicked maps.",
    )
    mimic_weight: float = Field(1.0, ge=0, description="λ, the mimic loss's weight beside the detector's.")
    epochs: int = Field(
        10, ge=1, le=1000, description="Epochs of the student (and of a teacher trained here)."
    )
    lr: float = Field(
        0.1, gt=0, description="The registry's detector recipe's peak rate (SGD, warm-up, poly)."
    )


# -- the loss ---------------------------------------------------------------------------------------


def quantized_map(x: torch.Tensor, bits: int) -> torch.Tensor:
    """A feature map at ``bits`` bits (DoReFa's activation quantizer, straight-through); 32: as it is."""
    from papers_plugins.compression.quantizers import dorefa_activation

    return x if bits >= FULL else dorefa_activation(x, bits)


def mimic_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    boxes: Sequence[torch.Tensor] | None = None,
    spatial_scale: float = 1.0,
    output_size: int = 7,
) -> torch.Tensor:
    """The mean squared difference between the student's and the teacher's maps ([N, C, H, W] each),
    over the regions ``boxes`` (per image, [R, 4] in input pixels, mapped to the maps by
    ``spatial_scale``, each RoI-aligned to ``output_size`` squared) or, without boxes, over the whole
    maps. The teacher's map is detached: the gradient goes to the student only."""
    import torch.nn.functional as F
    from torchvision.ops import roi_align

    if student.shape != teacher.shape:
        raise ValueError(
            f"the student's map is {list(student.shape)} and the teacher's {list(teacher.shape)}"
        )
    teacher = teacher.detach()
    if boxes is None:
        return F.mse_loss(student, teacher)
    regions = [b.detach().to(student.dtype) for b in boxes]
    if sum(len(b) for b in regions) == 0:
        return student.sum() * 0.0
    size = (output_size, output_size)
    return F.mse_loss(
        roi_align(student, regions, size, spatial_scale, aligned=True),
        roi_align(teacher, regions, size, spatial_scale, aligned=True),
    )


# -- the rewrite: the student's backbone quantized --------------------------------------------------


def rpn_channels(flat: FlatGraph, label: str, field: str) -> int:
    """The channels of the map ``flat``'s RPN reads; refused naming ``field`` unless ``flat`` is a
    two-stage detector."""
    from papers.measure import measure_graph
    from papers.registry import get_registry
    from papers.spec import RegionDetection

    if not isinstance(flat.task, RegionDetection):
        raise SpecError(
            f"{field}: {label!r} is not a two-stage detector (Faster R-CNN's kind); Quantization Mimic "
            "mimics the map its RPN reads"
        )
    shapes = measure_graph(label, flat, get_registry().catalogue).node_shapes
    return int(shapes[flat.outputs[flat.task.levels[0]]][1])


def check_settings(flat: FlatGraph, settings: MimicSettings) -> None:
    """Student and teacher two-stage detectors (raises :class:`SpecError` naming the setting)."""
    import papers

    rpn_channels(flat, "the student", "base")
    try:
        teacher_flat = papers.expand_variant(settings.teacher)
    except PapersError as error:
        raise SpecError(f"settings.teacher: {error.message}") from None
    rpn_channels(teacher_flat, settings.teacher, "settings.teacher")


def check_pair(student: nn.Module, teacher: nn.Module, teacher_name: str) -> None:
    """Built student and teacher detect the same classes (raises :class:`PapersError` otherwise)."""
    count = [
        net.get_submodule("roi_heads.box_predictor.cls_score").out_features for net in (student, teacher)
    ]
    if count[0] != count[1]:
        raise PapersError(
            f"the teacher {teacher_name!r} has {count[1]} classes and the student {count[0]}; the teacher "
            "must detect the student's classes",
            field="settings.teacher",
        )


def mimic_rewrite(flat: FlatGraph, settings: MimicSettings) -> FlatGraph:
    """The student's backbone convolutions but the first as ``quant_conv2d`` at the settings' bits."""
    from papers_plugins.compression.low_bit import _swap

    check_settings(flat, settings)
    convs = [node for node in flat.nodes if node.op == "conv2d" and node.name.startswith("backbone.")]
    extra = {"weight_bits": settings.weight_bits, "input_bits": settings.feature_bits, "quantizer": "dorefa"}
    return _swap(flat, convs[1:], {"conv2d": "quant_conv2d"}, extra, None)


# -- training: the detector's losses, plus λ times the mimic loss -----------------------------------


class _Seen:
    """Records, on a two-stage detector's forward, the transformed batch, the graph's outputs and the
    proposals (its ``head_outputs`` and ``propose`` wrapped on the instance; :meth:`close` restores)."""

    def __init__(self, model: Any):
        self.model, self.batch, self.outputs, self.proposals = model, None, None, None
        head, propose = model.head_outputs, model.propose

        def head_outputs(batch: Any) -> Any:
            self.batch, self.outputs = batch, head(batch)
            return self.outputs

        def proposing(batch: Any, outputs: Any, targets: Any = None) -> Any:
            boxes, losses = propose(batch, outputs, targets)
            self.proposals = boxes
            return boxes, losses

        object.__setattr__(model, "head_outputs", head_outputs)
        object.__setattr__(model, "propose", proposing)

    def close(self) -> None:
        for name in ("head_outputs", "propose"):
            self.model.__dict__.pop(name, None)


def mimic_term(seen: _Seen, teacher: nn.Module, adapter: nn.Module | None, bits: int) -> torch.Tensor:
    """The mimic loss of the student's last step (``seen``) against ``teacher`` on the same batch."""
    import torch

    level = seen.model.task.levels[0]
    student_map = seen.outputs[level]
    with torch.no_grad():
        teacher_map = teacher.head_outputs(seen.batch)[teacher.task.levels[0]]
    if adapter is not None:
        student_map = adapter(student_map)
    scale = student_map.shape[-1] / seen.batch.tensors.shape[-1]
    return mimic_loss(
        quantized_map(student_map, bits), quantized_map(teacher_map, bits), seen.proposals, scale
    )


def train_detector_model(
    model: nn.Module,
    data: str,
    *,
    epochs: int,
    lr: float,
    teacher: nn.Module | None = None,
    settings: MimicSettings | None = None,
    log: Callable[[str], None] | None = None,
    seed: int = 0,
) -> list[dict[str, float]]:
    """Train a two-stage detector on ``data``'s train split with the registry's detector recipe (SGD,
    momentum 0.9, weight decay 5e-4, batch 2, warm-up and poly decay, horizontal flips); with
    ``teacher``, ``settings.mimic_weight`` times the mimic loss is added. VOC07 mAP (percent) on the
    val split after each epoch, one row per epoch."""
    import torch

    from papers.data import readable
    from papers.detection_data import detection_split
    from papers.train_detection import DEFAULTS, _flipped, _optimization

    with readable(data):
        train_set = detection_split(data, "train")
    adapter = None
    if teacher is not None:
        assert settings is not None
        teacher.eval()
        for parameter in teacher.parameters():
            parameter.requires_grad_(False)
        channels = [
            net.get_submodule("rpn.conv").in_channels
            for net in (model, teacher)  # type: ignore[union-attr]
        ]
        if channels[0] != channels[1]:
            adapter = torch.nn.Conv2d(channels[0], channels[1], 1)
    torch.manual_seed(seed)
    batch = int(DEFAULTS["batch_size"])
    per_epoch = -(-len(train_set.dataset) // batch)
    config = {"recipe": "registry", "lr": lr, "epochs": epochs, "weight_decay": DEFAULTS["weight_decay"]}
    trained = torch.nn.ModuleList([model] if adapter is None else [model, adapter])
    optimizer, schedule, _ = _optimization(config, trained, per_epoch)
    generator = torch.Generator().manual_seed(seed)
    seen = _Seen(model) if teacher is not None else None
    rows: list[dict[str, float]] = []
    try:
        for epoch in range(1, epochs + 1):
            model.train()
            started, total, mimicked, steps = time.perf_counter(), 0.0, 0.0, 0
            order = torch.randperm(len(train_set.dataset), generator=generator).tolist()
            for begin in range(0, len(order), batch):
                images, targets = [], []
                with readable(data):
                    for index in order[begin : begin + batch]:
                        image, target = train_set.dataset[index]
                        target = {"boxes": target["boxes"], "labels": target["labels"]}
                        if bool(torch.rand(1, generator=generator) < 0.5):
                            image, target = _flipped(image, target)
                        images.append(image)
                        targets.append(target)
                loss = sum(model(images, targets).values())
                if seen is not None:
                    term = mimic_term(seen, teacher, adapter, settings.feature_bits)  # type: ignore[arg-type,union-attr]
                    loss = loss + settings.mimic_weight * term  # type: ignore[union-attr]
                    mimicked += term.item()
                if not torch.isfinite(loss):
                    raise PapersError(
                        f"the loss is {float(loss)} at epoch {epoch}; lower the rate", field="lr"
                    )
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
                total, steps = total + loss.item(), steps + 1
            row = {
                "epoch": epoch,
                "train_loss": total / max(steps, 1),
                "mimic_loss": mimicked / max(steps, 1),
                "val_voc07_map": voc07_map(model, data),
                "seconds": time.perf_counter() - started,
            }
            rows.append(row)
            if log is not None:
                log(
                    f"epoch {epoch}/{epochs}: loss {row['train_loss']:.4f} (mimic {row['mimic_loss']:.4f})  "
                    f"VOC07 mAP {row['val_voc07_map']:.2f}%"
                )
    finally:
        if seen is not None:
            seen.close()
        model.eval()
    return rows


def voc07_map(model: nn.Module, data: str, split: str = "val") -> float:
    """``model``'s VOC 2007 11-point mAP at IoU 0.5 on ``data``'s ``split``, percent."""
    import torch

    from papers.data import readable
    from papers.detection_data import detection_split
    from papers.detection_metrics import voc_map

    model.eval()
    detections, truths = [], []
    with torch.inference_mode(), readable(data):
        scored = detection_split(data, split)
        for index in range(len(scored.dataset)):
            image, target = scored.dataset[index]
            detections.append({k: v.cpu() for k, v in model([image])[0].items()})
            truths.append(target)
    return 100.0 * voc_map(detections, truths, use_07_metric=True)[0]


def data_classes(data: str) -> int:
    """The classes of ``data`` with the background (what a two-stage detector is built for)."""
    from papers.data import readable
    from papers.detection_data import detection_split, is_detection_source

    if not is_detection_source(data):
        raise PapersError(
            "a detector trains on builtin:shapes, a PASCAL VOC folder or a COCO folder", file=data
        )
    with readable(data):
        return detection_split(data, "train").num_classes


def teacher_model(
    settings: MimicSettings, data: str, options: Mapping[str, Any], log: Any = None
) -> nn.Module:
    """The teacher built for ``data``'s classes with ``options``: its weights read from
    ``settings.teacher_weights`` or trained here (``settings.epochs``, the registry's recipe)."""
    import papers
    from papers import task_runs

    teacher = papers.build_model(settings.teacher, **{**options, "num_classes": data_classes(data)})
    if settings.teacher_weights is not None:
        task_runs.start_weights(teacher, settings.teacher_weights, settings.teacher)
    else:
        train_detector_model(teacher, data, epochs=settings.epochs, lr=settings.lr, log=log)
    return teacher.eval()


def mimic_apply(model: Any, settings: MimicSettings, context: MethodContext) -> Any:
    """``quantization_mimic``'s apply step: the teacher trained (or read), then the quantized student
    trained on ``--data`` with the mimic loss, then its quantized weights written."""
    from papers_plugins.compression.low_bit import freeze

    if context.data is None:
        raise PapersError(
            "quantization_mimic trains the student beside its teacher: give --data (builtin:shapes, a "
            "PASCAL VOC folder or a COCO folder)",
            field="--data",
        )
    teacher = teacher_model(settings, context.data, {})
    check_pair(model, teacher, settings.teacher)
    train_detector_model(
        model, context.data, epochs=settings.epochs, lr=settings.lr, teacher=teacher, settings=settings
    )
    freeze(model)
    return model.eval()


QUANTIZATION_MIMIC = Method(
    name="quantization_mimic",
    settings=MimicSettings,
    description="Quantization Mimic (Wei et al. 2018): the student detector's backbone convolutions at "
    "k-bit weights and inputs (DoReFa's quantizers, straight-through), trained with its detection losses "
    "plus λ times the mean squared difference between its RPN map and a full-precision teacher's, both "
    "quantized, over its proposals.",
    rewrite=mimic_rewrite,
    apply=mimic_apply,
)
