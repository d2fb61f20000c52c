"""Quantization Mimic (Wei et al. 2018): the mimic loss, the method's refusals and a seconds-long smoke
run of the proxy on ten builtin:shapes scenes (the proxy itself runs in ``papers check
quantization_mimic --run``)."""

from __future__ import annotations

import pytest
import torch
import yaml

import papers
import papers.registry
from papers.errors import PapersError
from papers.methods import MethodContext, variant_steps
from papers.registry import Registry
from papers.shapes import ShapesConfig, write
from papers_plugins.compression import mimic, quantization_mimic
from papers_plugins.compression.quantizers import QuantConv2d
from tests.conftest import REPO
from tests.test_han2015 import registry_with

SPEC = REPO / "specs" / "compression" / "quantization_mimic.yaml"
VARIANT = quantization_mimic.PROXY_VARIANT


# -- the loss ---------------------------------------------------------------------------------------


def test_the_mimic_loss_is_zero_for_equal_maps_with_or_without_regions():
    torch.manual_seed(0)
    teacher = torch.rand(2, 8, 10, 12)
    boxes = [torch.tensor([[0.0, 0.0, 64.0, 48.0]]), torch.tensor([[16.0, 8.0, 96.0, 80.0]])]
    assert mimic.mimic_loss(teacher.clone(), teacher) == 0
    assert mimic.mimic_loss(teacher.clone(), teacher, boxes, 1 / 8) == 0
    assert mimic.mimic_loss(teacher + 0.5, teacher) == pytest.approx(0.25)


def test_the_gradient_goes_into_the_student_only():
    torch.manual_seed(0)
    student = torch.rand(1, 4, 8, 8, requires_grad=True)
    teacher = torch.rand(1, 4, 8, 8, requires_grad=True)
    mimic.mimic_loss(student, teacher, [torch.tensor([[0.0, 0.0, 32.0, 32.0]])], 1 / 4).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None


def test_only_the_regions_are_compared():
    teacher = torch.zeros(1, 2, 16, 16)
    student = teacher.clone()
    student[..., 12:, 12:] = 1.0  # outside the region below
    assert mimic.mimic_loss(student, teacher, [torch.tensor([[0.0, 0.0, 32.0, 32.0]])], 1 / 4) == 0
    assert mimic.mimic_loss(student, teacher) > 0


def test_both_maps_are_quantized_at_the_feature_bits():
    x = torch.linspace(-1, 2, 50)
    at_two = mimic.quantized_map(x, 2)
    levels = at_two.unique() * 3
    assert torch.allclose(levels, torch.tensor([0.0, 1.0, 2.0, 3.0]))
    assert torch.equal(mimic.quantized_map(x, 32), x)


# -- the method ------------------------------------------------------------------------------------


def test_the_student_backbone_is_quantized_but_its_first_layer():
    flat = papers.expand_variant(VARIANT, **quantization_mimic.STUDENT_OPTIONS)
    convs = [n for n in flat.nodes if n.name.startswith("backbone.") and n.op in ("conv2d", "quant_conv2d")]
    assert [n.op for n in convs] == ["conv2d"] + ["quant_conv2d"] * (len(convs) - 1)
    (step,) = variant_steps(VARIANT)
    assert all(n.args["weight_bits"] == step.settings.weight_bits for n in convs[1:])
    assert all(n.args["input_bits"] == step.settings.feature_bits for n in convs[1:])


def test_a_teacher_of_other_classes_is_refused():
    student = papers.build_model(VARIANT, device="meta", **quantization_mimic.STUDENT_OPTIONS, num_classes=5)
    teacher = papers.build_model("faster_rcnn_vgg16", device="meta", num_classes=21)
    with pytest.raises(PapersError, match="the teacher 'faster_rcnn_vgg16' has 21 classes and the student 5"):
        mimic.check_pair(student, teacher, "faster_rcnn_vgg16")


def spec_with(tmp_path, **settings) -> object:
    spec = yaml.safe_load(SPEC.read_text())
    spec["id"] = "mimicked"
    spec["variants"] = [{**spec["variants"][0], "id": "mimicked-faster_rcnn_vgg16"}]
    spec["variants"][0]["methods"][0]["settings"].update(settings)
    path = tmp_path / "mimicked.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"weight_bits": 0}, "greater than or equal to 1"),
        ({"feature_bits": 33}, "less than or equal to 32"),
        ({"teacher": "lenet5_caffe"}, "settings.teacher: 'lenet5_caffe' is not a two-stage detector"),
        ({"teacher": "no_such_net"}, "settings.teacher: no variant 'no_such_net'"),
    ],
)
def test_bad_settings_are_one_line_and_exit_2(settings, message, tmp_path, monkeypatch, run):
    path = spec_with(tmp_path, **settings)
    monkeypatch.setattr(Registry, "discover", classmethod(lambda cls: registry_with(path)))
    monkeypatch.setattr(papers.registry, "_current", None)
    result = run("build", "mimicked-faster_rcnn_vgg16")
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and str(path) in result.stderr
    assert "variants[0].methods[0]" in result.stderr and message in result.stderr


# -- the proxy --------------------------------------------------------------------------------------


def test_the_proxy_is_registered_on_shapes_comparing_the_students():
    (check,) = papers.registry.get_registry().training_checks("quantization_mimic")
    assert (check.name, check.variant, check.data) == (
        quantization_mimic.PROXY_NAME,
        VARIANT,
        "builtin:shapes",
    )
    assert check.metric == "voc07_map" and check.runner is not None and "builtin:shapes" in check.proxy


def test_a_smoke_run_of_the_proxy_trains_the_three_on_ten_scenes(tmp_path, monkeypatch):
    data = str(write(tmp_path / "shapes", ShapesConfig(images=10)))
    monkeypatch.setattr(quantization_mimic, "PROXY_DATA", data)
    monkeypatch.setattr(quantization_mimic, "PROXY_RECIPE", {**quantization_mimic.PROXY_RECIPE, "epochs": 1})
    from papers_plugins.detection import faster_rcnn

    monkeypatch.setattr(
        faster_rcnn, "PROXY_RECIPE", {**faster_rcnn.PROXY_RECIPE, "epochs": 1}
    )  # the teacher's
    calls = []
    real = mimic.mimic_term

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(mimic, "mimic_term", counted)
    measured = quantization_mimic.proxy_run(False)
    assert set(measured) == {"teacher", "student_alone", "student_mimic"}
    assert all(0.0 <= value <= 100.0 for value in measured.values())
    assert calls  # only the mimicking student's steps add the loss
    students = [m for m in papers.build_model(VARIANT, **quantization_mimic.STUDENT_OPTIONS).modules()]
    assert any(isinstance(m, QuantConv2d) for m in students)


def test_apply_without_data_is_refused_naming_the_option():
    (step,) = variant_steps(VARIANT)
    context = MethodContext(flat=papers.expand_variant(VARIANT))
    with pytest.raises(PapersError, match="give --data") as refused:
        mimic.mimic_apply(None, step.settings, context)
    assert refused.value.field == "--data"
