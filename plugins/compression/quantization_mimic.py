"""Wei, Pan, Qin, Ouyang and Yan, "Quantization Mimic: Towards Very Tiny CNN for Object Detection" (ECCV
2018, arXiv 1805.02152): a quantized student detector trained to match a full-precision teacher's
quantized feature maps.

The paper's plugin: its spec (VGG-16 Faster R-CNN quantized, mimicking the full-precision one), its method
(``quantization_mimic``) and its proxy check on builtin:shapes. The code is in
:mod:`papers_plugins.compression.mimic`, imported only when the registry asks for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib.resources import files
from typing import Any

from papers.hookspecs import hookimpl

PROXY_NAME = "quantization_mimic-shapes"
PROXY_VARIANT = "quantization_mimic-faster_rcnn_vgg16"
PROXY_DATA = "builtin:shapes"
TEACHER_OPTIONS: Mapping[str, Any] = {
    "widths": [8, 16, 32, 64, 64],
    "batch_norm": True,
    "channels": 64,
    "representation_size": 256,
    "dropout": 0.0,
    "min_size": 320,
    "max_size": 500,
    "rpn_pre_nms_top_n_train": 600,
    "rpn_post_nms_top_n_train": 300,
    "rpn_pre_nms_top_n_test": 300,
    "rpn_post_nms_top_n_test": 100,
    "box_batch_size_per_image": 128,
    "box_positive_fraction": 0.5,
}
"""The Faster R-CNN proxy's network (``faster_rcnn.PROXY_OPTIONS``: VGG-16 at 1/8, batch-normalised)."""
STUDENT_OPTIONS: Mapping[str, Any] = {**TEACHER_OPTIONS, "widths": [4, 8, 16, 32, 32], "channels": 32}
"""The student at half the teacher's widths (VGG-16 at 1/16: "very tiny" in the paper's sense)."""
PROXY_RECIPE: Mapping[str, Any] = {"epochs": 6, "lr": 0.1, "weight_bits": 4, "feature_bits": 4}
"""The students' trainings' length and peak rate (the registry's detector recipe), the bits. The teacher
trains as the Faster R-CNN proxy does (``faster_rcnn.PROXY_RECIPE``: 14 epochs at 0.1): after 6 it was
at 21.6% VOC07 mAP, too weak a teacher to say anything of mimicking it."""


@hookimpl
def papers_specs() -> list:
    return [files("papers_specs") / "compression" / "quantization_mimic.yaml"]


@hookimpl
def papers_methods() -> list:
    from papers_plugins.compression.mimic import QUANTIZATION_MIMIC

    return [QUANTIZATION_MIMIC]


def proxy_run(progress: bool) -> dict[str, float]:
    """The teacher (as the Faster R-CNN proxy trains), the quantized student alone and the quantized
    student with the mimic loss (each ``PROXY_RECIPE['epochs']`` epochs, the same seed), trained on
    ``PROXY_DATA``; their VOC07 mAP on the val split, percent."""
    import papers
    from papers.methods import validate_settings
    from papers_plugins.compression.mimic import QUANTIZATION_MIMIC, data_classes, train_detector_model

    settings = validate_settings(
        QUANTIZATION_MIMIC,
        {"teacher": "faster_rcnn_vgg16", **PROXY_RECIPE, "mimic_weight": 1.0},
        field="proxy",
    )
    classes = data_classes(PROXY_DATA)
    say = (
        (lambda what: lambda line: print(f"{PROXY_NAME} {what}: {line}", flush=True))
        if progress
        else (lambda what: None)
    )
    from papers_plugins.detection.faster_rcnn import PROXY_RECIPE as TEACHER_RECIPE

    epochs, lr = PROXY_RECIPE["epochs"], PROXY_RECIPE["lr"]
    teacher = papers.build_model(settings.teacher, **TEACHER_OPTIONS, num_classes=classes)
    rows = train_detector_model(
        teacher, PROXY_DATA, epochs=TEACHER_RECIPE["epochs"], lr=TEACHER_RECIPE["lr"], log=say("teacher")
    )
    measured = {"teacher": rows[-1]["val_voc07_map"]}
    for name, mimic in (("student_alone", None), ("student_mimic", teacher)):
        student = papers.build_model(PROXY_VARIANT, **STUDENT_OPTIONS, num_classes=classes)
        rows = train_detector_model(
            student, PROXY_DATA, epochs=epochs, lr=lr, teacher=mimic, settings=settings, log=say(name)
        )
        measured[name] = rows[-1]["val_voc07_map"]
    if progress:
        print(f"{PROXY_NAME}: {measured}", flush=True)
    return measured


def _run(progress: bool) -> tuple[float, float]:
    measured = proxy_run(progress)
    return measured["student_mimic"], measured["student_alone"]


@hookimpl
def papers_checks() -> list:
    from papers.checks import TrainingCheck
    from papers_plugins.detection.faster_rcnn import PROXY_RECIPE as TEACHER_RECIPE

    return [
        TrainingCheck(
            name=PROXY_NAME,
            variant=PROXY_VARIANT,
            data=PROXY_DATA,
            min_accuracy=0.0,
            proxy=(
                "builtin:shapes (180 synthetic scenes of four shape classes, scored on its 60 val "
                "scenes), not PASCAL VOC: the teacher is the Faster R-CNN proxy's VGG-16 at 1/8 of "
                "its widths (batch-normalised, full precision), the student VGG-16 at 1/16 with its "
                f"backbone convolutions but the first at {PROXY_RECIPE['weight_bits']}-bit weights and "
                f"{PROXY_RECIPE['feature_bits']}-bit inputs (DoReFa), a 1×1 convolution adapting its "
                "RPN map to the teacher's; the teacher trained as the Faster R-CNN proxy is "
                f"({TEACHER_RECIPE['epochs']} epochs), each student {PROXY_RECIPE['epochs']} epochs "
                "from scratch with the registry's detector recipe, alone and with the mimic loss "
                "(λ = 1, both maps at 4 bits, over its proposals) from the same seed; VOC07 mAP@0.5, "
                "passes when the mimicking student reaches the student alone"
            ),
            overrides=dict(PROXY_RECIPE),
            compares_with={"metric": "voc07_map"},
            max_seconds=900.0,
            metric="voc07_map",
            runner=_run,
        )
    ]
